"""The one place metrics are computed, for training, reports and export alike.

Image metrics compare images in [0, 1] (a model's output, PyTorch or onnxruntime, against the truth):
per-image MSE, PSNR and SSIM, and for colorizers the colourfulness of prediction and truth. BCE is on
logits, for the models trained with it. Each `*_sums` is a sum over a batch's images, so batches of any
size add up; `image_means` runs that over batches and divides.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

METRIC_NAMES = ("bce", "mse", "psnr", "ssim")


def per_image_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B,) each image's mean squared error: the one form the metrics and the PSNR losses share."""
    return (pred - target).pow(2).flatten(1).mean(1)


def per_image_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B,) PSNR in dB for data range 1; the mean of these is what papers report."""
    return 10 * torch.log10(1 / per_image_mse(pred, target).clamp_min(1e-10))


def image_sums(pred: torch.Tensor, target: torch.Tensor, colour: bool = False) -> dict[str, float]:
    """Sums over the batch of per-image MSE, PSNR and SSIM (and colourfulness of both, for colorizers)."""
    pred, target = pred.float().contiguous(), target.float()
    n = target.shape[0]
    mse = per_image_mse(pred, target)
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    sums = {"mse": mse.sum().item(), "psnr": per_image_psnr(pred, target).sum().item(),
            "ssim": ssim.sum().item() if ssim.ndim else ssim.item() * n}
    if colour:
        from training.color import colourfulness

        sums.update(colourfulness=colourfulness(pred).sum().item(), true_colourfulness=colourfulness(target).sum().item())
    return sums


def bce_sums(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").flatten(1).mean(1)
    return {"bce": bce.sum().item()}


def batch_sums(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """An autoencoder's batch: BCE on its logits and the image metrics of its output."""
    return {**bce_sums(logits, target), **image_sums(torch.sigmoid(logits.float()), target)}


def with_colourfulness_ratio(means: dict[str, float]) -> dict[str, float]:
    """Mean metrics -> the same with colourfulness as a share of the truth's (which it replaces)."""
    means = dict(means)
    means["colourfulness_ratio"] = means["colourfulness"] / max(means.pop("true_colourfulness"), 1e-9)
    return means


def image_means(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], colour: bool = False) -> dict[str, float]:
    """Means over all images of `image_sums`, from (prediction, truth) batches."""
    sums: dict[str, float] = {}
    count = 0
    for pred, target in batches:
        for k, v in image_sums(pred, target, colour).items():
            sums[k] = sums.get(k, 0.0) + v
        count += target.shape[0]
    means = {k: v / max(1, count) for k, v in sums.items()}
    return with_colourfulness_ratio(means) if colour else means
