"""training.metrics: the one metrics path (training, color-report and export all call it)."""

import pytest
import torch

from training.metrics import batch_sums, image_means, image_sums


def test_batches_of_any_size_give_the_same_means():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(12, 3, 32, 32, generator=g)
    pred = (truth + 0.05 * torch.randn(12, 3, 32, 32, generator=g)).clamp(0, 1)
    whole = image_means([(pred, truth)], colour=True)
    pieces = image_means(((pred[i:i + 5], truth[i:i + 5]) for i in range(0, 12, 5)), colour=True)
    assert whole.keys() == {"mse", "psnr", "ssim", "colourfulness", "colourfulness_ratio"}
    for k in whole:
        assert pieces[k] == pytest.approx(whole[k], rel=1e-5)
    assert image_means([(truth, truth)])["mse"] == 0 and image_means([(truth, truth)])["ssim"] == pytest.approx(1, abs=1e-4)


def test_an_autoencoders_batch_is_bce_on_logits_plus_the_image_metrics_of_its_output():
    g = torch.Generator().manual_seed(1)
    truth, logits = torch.rand(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    sums = batch_sums(logits, truth)
    assert {k: v for k, v in sums.items() if k != "bce"} == image_sums(torch.sigmoid(logits), truth)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth) * 4
    assert sums["bce"] == pytest.approx(expected.item(), rel=1e-5)
