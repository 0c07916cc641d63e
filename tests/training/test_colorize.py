import numpy as np
import pytest
import torch

from tests.conftest import random_images
from training.color import ENCODINGS
from training.colorize import ABBins, ColorizationTask, ColorizerConfig, UNet, colour_indices, grayscale_baseline
from training.data import split_indices
from training.train import CHECKPOINT, TrainConfig, load_checkpoint, model_from_checkpoint, train

QUICK = TrainConfig(data="fake:160", epochs=1, batch_size=32, precision="fp32")


def test_unet_keeps_the_size():
    net = UNet(1, 5, width=8)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 5, 32, 32)
    assert net(torch.rand(1, 1, 48, 64)).shape == (1, 5, 48, 64)


@pytest.mark.parametrize("global_context", [False, True])
def test_only_global_context_reaches_across_a_large_image(global_context):
    torch.manual_seed(0)
    net = UNet(1, 3, width=4, global_context=global_context).eval()
    x = torch.rand(1, 1, 96, 96)
    y = x.clone()
    y[..., :32, :32] = 0  # a quadrant, farther from the opposite corner than any receptive field
    with torch.no_grad():
        far_x, far_y = net(x)[..., -4:, -4:], net(y)[..., -4:, -4:]
    # Exactly equal without: the corner's outputs are computed from identical pixels. (At random
    # initialisation the global path's effect is small, so it is not measured against a tolerance.)
    assert (not torch.equal(far_x, far_y)) == global_context


def test_global_context_is_named_and_old_configs_load_without_it():
    assert ColorizerConfig(global_context=True).name == "color_lab_unet32g_classification"
    assert ColorizerConfig(**{"encoding": "lab", "width": 32}).global_context is False  # a config.json of before


def test_bins_rebalance_towards_rare_colours_and_decode():
    rng = torch.Generator().manual_seed(0)
    common = torch.randn(9000, 2, generator=rng) * 3  # near-gray
    rare = torch.randn(1000, 2, generator=rng) * 3 + torch.tensor([60.0, 40.0])  # saturated
    bins = ABBins.fit(torch.cat([common, rare]), bin_size=10, rebalance=0.5, temperature=0.38)
    near_gray = bins.nearest(torch.zeros(1, 2, 1, 1)).item()
    saturated = bins.nearest(torch.tensor([60.0, 40.0]).view(1, 2, 1, 1)).item()
    assert bins.weights[saturated] > bins.weights[near_gray]
    assert torch.equal(bins.centres[saturated], torch.tensor([60.0, 40.0]))
    # A confident logit on one bin decodes to that bin's centre.
    logits = torch.full((1, bins.count, 1, 1), -20.0)
    logits[0, saturated] = 20
    assert torch.allclose(bins.annealed_mean(logits)[0, :, 0, 0], torch.tensor([60.0, 40.0]), atol=1e-3)


def test_annealed_mean_sits_between_mean_and_mode():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    logits = torch.log(torch.tensor([0.6, 0.4])).view(1, 2, 1, 1)
    mean = ABBins(centres, torch.ones(2), temperature=1.0, bin_size=10).annealed_mean(logits)[0, 0].item()
    annealed = ABBins(centres, torch.ones(2), temperature=0.38, bin_size=10).annealed_mean(logits)[0, 0].item()
    assert mean == pytest.approx(20.0, abs=1e-4)
    assert 0 < annealed < mean  # pulled towards the mode (bin 0)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_smoke_run_per_encoding(tmp_path, encoding):
    config = ColorizerConfig(encoding=encoding, arch="cae", loss="l2", cae="cae_l3_ch1_k3_s2")
    result = train(config, QUICK, out=tmp_path, progress=False)
    assert set(result["test"]) == {"loss", "mse", "psnr", "ssim", "colourfulness", "colourfulness_ratio"}
    assert all(np.isfinite(v) for v in result["test"].values())
    model = model_from_checkpoint(load_checkpoint(tmp_path / CHECKPOINT))
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("loss", ["classification", "l2"])
def test_unet_runs_resume_and_rebuild_from_the_checkpoint(tmp_path, loss):
    config = ColorizerConfig(width=8, loss=loss)
    train(config, QUICK, out=tmp_path, progress=False)
    result = train(config, TrainConfig(**{**QUICK.__dict__, "epochs": 2}), out=tmp_path, progress=False)
    assert result["epochs"] == 2 and (result["bins"] > 10) == (loss == "classification")
    model = model_from_checkpoint(load_checkpoint(tmp_path / CHECKPOINT))
    rgb = model(torch.rand(3, 1, 32, 32))
    assert rgb.shape == (3, 3, 32, 32) and 0 <= rgb.min() and rgb.max() <= 1


def test_grayscale_images_are_left_out_of_training_and_scoring():
    images = random_images(100)
    images[:10] = images[:10, :1]  # ten gray images
    split = ColorizationTask(ColorizerConfig()).select(images, split_indices(100))
    kept = np.concatenate([split.train, split.val, split.test])
    assert len(kept) == 90 and not (kept < 10).any()
    assert np.array_equal(colour_indices(images, np.arange(20)), np.arange(10, 20))


def test_grayscale_baseline_is_colourless():
    images = random_images(8)
    base = grayscale_baseline(images, np.arange(8))
    assert base["colourfulness_ratio"] == pytest.approx(0, abs=1e-4)
    assert 0 < base["psnr"] < 40


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoding="ycbcr", loss="classification"), "use encoding lab"),
    (dict(arch="vit"), "arch"), (dict(loss="l1"), "loss"), (dict(encoding="hsv"), "encoding"),
    (dict(arch="cae", cae="nope"), "not a model name"),
])
def test_invalid_colorizer_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColorizerConfig(**kwargs)


def test_decoding_rule():
    from training.color_report import choose_decoding

    scan = [{"temperature": 0.2, "prior_correction": 0, "saturation": 1.0, "psnr": 22.0, "colourfulness_ratio": 1.1},
            {"temperature": 0.5, "prior_correction": 0.5, "saturation": 1.5, "psnr": 23.0, "colourfulness_ratio": 0.7},
            {"temperature": 1.0, "prior_correction": 1, "saturation": 1.0, "psnr": 24.0, "colourfulness_ratio": 0.69}]
    # The best PSNR keeping 70% of the colour.
    assert choose_decoding(scan) == {"temperature": 0.5, "prior_correction": 0.5, "saturation": 1.5}
    # ... or of another share (`cae color-report --min-colourfulness`).
    assert choose_decoding(scan, 0.8)["temperature"] == 0.2 and choose_decoding(scan, 0.6)["temperature"] == 1.0
    dull = [{**s, "colourfulness_ratio": 0.1 * i} for i, s in enumerate(scan)]
    assert choose_decoding(dull) == {"temperature": 1.0, "prior_correction": 1, "saturation": 1.0}
    before = [{k: v for k, v in s.items() if k != "saturation"} for s in scan]  # a results.json of before saturation
    assert choose_decoding(before)["saturation"] == 1.0


def test_saturation_scales_the_spread_about_the_image_mean_colour():
    centres = torch.tensor([[0.0, 0.0], [40.0, -20.0]])
    logits = torch.randn(2, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    bins = ABBins(centres, torch.ones(2), temperature=1.0, bin_size=10)
    plain = bins.decode(logits)
    assert torch.equal(plain, bins.annealed_mean(logits))  # saturation 1: the annealed mean, untouched
    bins.set_decoding(saturation=1.5)
    assert bins.decoding == {"temperature": 1.0, "prior_correction": 0.0, "saturation": 1.5}
    vivid = bins.decode(logits)
    mean = plain.mean((2, 3), keepdim=True)
    assert torch.allclose(vivid.mean((2, 3), keepdim=True), mean, atol=1e-4)  # each image keeps its mean colour
    assert torch.allclose(vivid - mean, 1.5 * (plain - mean), atol=1e-4)
    # The mean is per image: a second image changes nothing in the first one's colours.
    assert torch.allclose(bins.decode(logits[:1]), vivid[:1], atol=1e-5)


def test_the_scan_decodes_cached_logits_like_the_model():
    from training.color_report import SATURATIONS, choose_decoding, decoding_scan, score

    config = ColorizerConfig(width=4)
    images = random_images(12)
    model = ColorizationTask(config).build(images, np.arange(12)).eval()
    indices = np.arange(12)
    for as_served in (True, False):
        model.bins.set_decoding(config.temperature, 0.0, 1.0)
        scan = decoding_scan(model, images, indices, batch_size=5, as_served=as_served)
        assert len(scan) > len(SATURATIONS) and {s["saturation"] for s in scan} == set(SATURATIONS)
        assert model.bins.decoding == {"temperature": config.temperature, "prior_correction": 0.0, "saturation": 1.0}  # restored
        chosen = choose_decoding(scan)
        model.bins.set_decoding(**chosen)
        direct = score(model, images, indices, as_served=as_served)
        entry = next(s for s in scan if all(s[k] == v for k, v in chosen.items()))
        assert direct["psnr"] == pytest.approx(entry["psnr"], abs=1e-4)
        assert direct["colourfulness_ratio"] == pytest.approx(entry["colourfulness_ratio"], abs=1e-4)


def test_as_served_scoring_feeds_what_the_exported_graph_computes_from_luma():
    from export.graphs import ColorizerGraph
    from training.color import luma, with_luma
    from training.color_report import network_gray

    model = ColorizationTask(ColorizerConfig(width=4)).build(random_images(4), np.arange(4)).eval()
    x = torch.from_numpy(random_images(4)).float() / 255
    with torch.no_grad():
        served = ColorizerGraph(model)(luma(x))
        assert torch.equal(model.colorize_luma(luma(x)), served)
        assert torch.allclose(with_luma(model(network_gray(model, x, as_served=True)), luma(x)), served)
        # The input's luma comes back out wherever no channel was clamped.
        inside = ((served > 0) & (served < 1)).all(1, keepdim=True)
        assert inside.float().mean() > 0.5 and torch.allclose(luma(served)[inside], luma(x)[inside], atol=1e-5)
        # Lab L of the gray image R = G = B = Y is not the colour image's L: the two feeds differ.
        assert not torch.allclose(network_gray(model, x, as_served=True), network_gray(model, x, as_served=False))


def test_prior_correction_pulls_towards_common_colours():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    weights = torch.tensor([0.5, 4.0])  # the saturated bin was up-weighted in training
    logits = torch.zeros(1, 2, 1, 1)
    plain = ABBins(centres, weights, 1.0, 10).annealed_mean(logits)[0, 0].item()
    corrected = ABBins(centres, weights, 1.0, 10, prior_correction=1.0).annealed_mean(logits)[0, 0].item()
    # Corrected logits -log w = (log 2, log 0.25): probabilities (2, 0.25) / 2.25.
    assert plain == pytest.approx(25.0) and corrected == pytest.approx(50 * 0.25 / 2.25, rel=1e-4)


def test_served_loss_is_minus_the_mean_psnr_of_the_served_output_plus_a_colour_hinge():
    from training.color import colourfulness, luma
    from training.colorize import COLOUR_HINGE_DB, served_loss
    from training.metrics import per_image_psnr

    model = ColorizationTask(ColorizerConfig(width=4)).build(random_images(8), np.arange(8)).eval()
    x = torch.from_numpy(random_images(8)).float() / 255
    plain = served_loss(model, x, torch.float32)
    served = model.colorize_luma(luma(x))
    assert plain.item() == pytest.approx(-per_image_psnr(served, x).mean().item(), abs=1e-3)
    ratio = (colourfulness(served).sum() / colourfulness(x).sum()).item()
    assert served_loss(model, x, torch.float32, min_colourfulness=ratio / 2).item() == pytest.approx(plain.item(), abs=1e-5)
    hinged = served_loss(model, x, torch.float32, min_colourfulness=ratio + 0.1)
    assert hinged.item() == pytest.approx(plain.item() + COLOUR_HINGE_DB * 0.1, abs=1e-3)
    hinged.backward()  # through the decoding and the luma step to the network
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.head.parameters())


@pytest.mark.parametrize("kwargs, message", [(dict(loss="mse"), "bce .* or psnr"), (dict(loss="bce", min_colourfulness=0.8), "psnr")])
def test_invalid_colorizer_objectives(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColorizationTask(ColorizerConfig(), **kwargs)


def test_a_colorizer_fine_tuned_on_its_served_output(tmp_path):
    from dataclasses import replace

    from training.color_report import score
    from training.data import load_images
    from training.run import Run

    config = ColorizerConfig(width=4)
    train(config, QUICK, out=tmp_path / "base", progress=False)
    # The decoding it is trained through is the config's: the one it will be exported with unless a report chooses another.
    decoding = dict(temperature=1.0, prior_correction=0.85, saturation=1.5)
    tuned_config = replace(config, **decoding)
    tuning = TrainConfig(**{**QUICK.__dict__, "init": str(tmp_path / "base"), "loss": "psnr", "min_colourfulness": 0.5})
    result = train(tuned_config, tuning, out=tmp_path / "tuned", progress=False)
    assert result["init"]["name"] == config.name and result["model"]["saturation"] == 1.5
    run = Run.load(tmp_path / "tuned")
    model = run.model()
    assert model.bins.decoding == decoding
    # Its metrics are those of the output as served: what color-report scores and the graph exports.
    data = load_images(QUICK.data)
    test = colour_indices(data.images, run.split(data).test)
    served = score(model, data.images, test, as_served=True)
    assert result["test"]["psnr"] == pytest.approx(served["psnr"], abs=1e-3)
    assert result["test"]["loss"] == pytest.approx(-served["psnr"], abs=1e-2)
