import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from training import train as train_module
from training.data import load_images, split_indices
from training.model import FIRST_MODEL, AutoencoderConfig
from training.train import CHECKPOINT, ReconstructionTask, TrainConfig, evaluate, images_on_device, load_checkpoint, model_from_checkpoint, train

SMALL = TrainConfig(data="fake:200", epochs=2, batch_size=32, precision="fp32")
TINY_MODEL = AutoencoderConfig(channel_factor=1, compression=4, fewer_layers=True)


def test_a_run_folder_describes_itself(tmp_path):
    result = train(FIRST_MODEL, SMALL, out=tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", CHECKPOINT, "metrics.csv", "steps.csv", "loss_curve.png", "result.json"}
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for metric in ("bce", "mse", "psnr", "ssim"):
        assert float(rows[-1][f"train_{metric}"]) > 0 and float(rows[-1][f"val_{metric}"]) > 0
    assert result["test"]["psnr"] > 5 and 0 < result["test"]["ssim"] < 1
    assert json.loads((tmp_path / "result.json").read_text())["test"] == result["test"]
    # Export needs only the folder: rebuild the model from the checkpoint and get the recorded test metrics back.
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["name"] == FIRST_MODEL.name and ckpt["data"]["split_seed"] == 0 and ckpt["data"]["sizes"]["test"] == 20
    model = model_from_checkpoint(ckpt)
    data = load_images("fake:200")
    test = evaluate(ReconstructionTask(FIRST_MODEL, "bce"), model, images_on_device(data.images, torch.device("cpu")), split_indices(200).test, 1000, torch.device("cpu"))
    assert test == pytest.approx(ckpt["state"]["test"], rel=1e-5)


def test_training_reduces_the_loss(tmp_path):
    result = train(TINY_MODEL, TrainConfig(data="fake:400", epochs=4, batch_size=16, lr=3e-3, precision="fp32"), out=tmp_path, progress=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_mse"]) < float(rows[0]["val_mse"])
    assert result["epochs"] == 4


def test_steps_csv_keeps_every_log_every_th_loss_and_each_epochs_last(tmp_path):
    # The losses stay on the device during an epoch and are read back at its end: the same values either way.
    every = train(TINY_MODEL, TrainConfig(data="fake:200", epochs=2, batch_size=16, precision="fp32"), out=tmp_path / "a", progress=False)
    sparse = train(TINY_MODEL, TrainConfig(data="fake:200", epochs=2, batch_size=16, precision="fp32", log_every=4), out=tmp_path / "b", progress=True)
    assert every["test"] == sparse["test"]
    read = lambda run: [float(r["loss"]) for r in csv.DictReader(open(tmp_path / run / "steps.csv"))]  # noqa: E731
    all_steps, logged = read("a"), read("b")
    per_epoch = len(all_steps) // 2
    assert per_epoch == 10  # 160 training images, batch 16
    expected = [all_steps[e * per_epoch + i] for e in range(2) for i in range(per_epoch) if i % 4 == 0 or i == per_epoch - 1]
    assert logged == pytest.approx(expected) and all(v > 0 for v in logged)


class Killed(Exception):
    pass


def crash_after_epoch(n, monkeypatch):
    """Make the next train() raise right after epoch n's checkpoint and outputs are written."""
    real_write = train_module._write_outputs

    def crash(out, state, task, plot):
        real_write(out, state, task, plot)
        if state.epoch == n:
            monkeypatch.setattr(train_module, "_write_outputs", real_write)
            raise Killed

    monkeypatch.setattr(train_module, "_write_outputs", crash)


def straight_and_resumed(model, config, tmp_path, monkeypatch, crash_after=1):
    """Results of the same run trained straight through (tmp_path/straight) and killed after epoch
    `crash_after`, then resumed (tmp_path/crashed)."""
    straight = train(model, config, out=tmp_path / "straight", progress=False)
    crash_after_epoch(crash_after, monkeypatch)
    with pytest.raises(Killed):
        train(model, config, out=tmp_path / "crashed", progress=False)
    monkeypatch.undo()
    return straight, train(model, config, out=tmp_path / "crashed", progress=False)


def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    straight = train(FIRST_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 3}), out=tmp_path / "straight", progress=False)
    crash_after_epoch(2, monkeypatch)
    with pytest.raises(Killed):
        train(FIRST_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 3}), out=tmp_path / "crashed", progress=False)
    assert load_checkpoint(tmp_path / "crashed" / CHECKPOINT)["state"]["epoch"] == 2
    resumed = train(FIRST_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 3}), out=tmp_path / "crashed", progress=False)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "crashed" / CHECKPOINT)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_more_epochs_continue_a_finished_run(tmp_path):
    train(TINY_MODEL, SMALL, out=tmp_path, progress=False)
    result = train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 3}), out=tmp_path, progress=False)
    assert result["epochs"] == 3
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 3
    # What trained it is recorded once per change of hardware, not once per resume.
    assert len(result["hardware"]) == 1 and "threads (torch " in result["hardware"][0]
    assert load_checkpoint(tmp_path / CHECKPOINT)["state"]["hardware"] == result["hardware"]


def test_a_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    first = train(TINY_MODEL, SMALL, out=tmp_path, progress=False)
    monkeypatch.setattr(train_module, "batches", lambda *a: pytest.fail("trained again"))
    assert train(TINY_MODEL, SMALL, out=tmp_path, progress=False)["test"] == first["test"]


def test_resume_refuses_other_settings(tmp_path):
    train(TINY_MODEL, SMALL, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.002 -> 0.1\)"):
        train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "lr": 0.1}), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different model"):
        train(FIRST_MODEL, SMALL, out=tmp_path, progress=False)


@pytest.mark.parametrize("loss, optimizer", [("mse", "sgd"), ("bce", "rmsprop"), ("mse", "adamw"), ("psnr", "adam")])
def test_losses_and_optimizers(tmp_path, loss, optimizer):
    config = TrainConfig(data="fake:100", epochs=1, loss=loss, optimizer=optimizer, precision="fp32")
    result = train(TINY_MODEL, config, out=tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in result["test"].values())


def test_psnr_loss_is_the_mean_of_each_images_log_mse():
    from training.train import reconstruction_loss

    target = torch.rand(3, 3, 4, 4)
    logits = torch.randn(3, 3, 4, 4)
    per_image = [((torch.sigmoid(logits[i]) - target[i]) ** 2).mean() for i in range(3)]
    assert reconstruction_loss(logits, target, "psnr") == pytest.approx(float(torch.stack(per_image).log().mean()), rel=1e-5)
    # A perfect reconstruction stays finite.
    assert torch.isfinite(reconstruction_loss(torch.logit(target.clamp(0.01, 0.99)), target.clamp(0.01, 0.99), "psnr"))


def test_bf16_autocast_trains_like_fp32(tmp_path):
    base = dict(data="fake:400", epochs=3, batch_size=32, lr=3e-3)
    fp32 = train(FIRST_MODEL, TrainConfig(**base, precision="fp32"), out=tmp_path / "fp32", progress=False)
    bf16 = train(FIRST_MODEL, TrainConfig(**base, precision="bf16"), out=tmp_path / "bf16", progress=False)
    assert bf16["test"]["mse"] == pytest.approx(fp32["test"]["mse"], rel=0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="l1"), "loss"), (dict(optimizer="lbfgs"), "optimizer"), (dict(precision="fp8"), "precision"), (dict(epochs=0), "positive"),
])
def test_invalid_training_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_finished_epoch(tmp_path):
    """A real kill (SIGKILL, no cleanup) of `cae train`, then the same command resumes and finishes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cae", "train", "--data", "fake:3000", "--epochs", "4", "--batch-size", "16",
           "--precision", "fp32", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(out / CHECKPOINT)["state"]["epoch"]
    assert 1 <= done < 4, "the kill should land after the first epoch and before the last"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    state = load_checkpoint(out / CHECKPOINT)["state"]
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4] and state["test"] is not None


def test_fewer_epochs_than_trained_is_refused_and_exactly_as_many_finishes(tmp_path, monkeypatch):
    crash_after_epoch(2, monkeypatch)
    with pytest.raises(Killed):
        train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 4}), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="already trained 2 epochs, more than the 1"):
        train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), out=tmp_path, progress=False)
    result = train(TINY_MODEL, SMALL, out=tmp_path, progress=False)  # SMALL has 2 epochs: test it now
    assert result["epochs"] == 2 and result["test"] is not None and (tmp_path / "result.json").exists()


def test_residual_autoencoder_trains_with_cosine_schedule_and_resumes(tmp_path, monkeypatch):
    from training.model import ResidualAutoencoderConfig

    model, config = ResidualAutoencoderConfig(width=4, downsamplings=2, latent_channels=2), TrainConfig(**{**SMALL.__dict__, "epochs": 3, "schedule": "cosine", "loss": "mse"})
    straight, resumed = straight_and_resumed(model, config, tmp_path, monkeypatch)
    # The schedule depends on the position in the run only, so a resumed run follows the same curve.
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
    ckpt = load_checkpoint(tmp_path / "crashed" / CHECKPOINT)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] < config.lr * 0.1  # decayed towards 0 at the end
    assert model_from_checkpoint(ckpt).config == model
    assert straight["latent_size"] == model.latent_size() == 2 * 8 * 8


def test_checkpoints_written_before_the_schedule_option_still_resume(tmp_path):
    train(TINY_MODEL, SMALL, out=tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    del ckpt["train_config"]["schedule"]
    torch.save(ckpt, tmp_path / CHECKPOINT)
    result = train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "epochs": 3}), out=tmp_path, progress=False)
    assert result["epochs"] == 3


def _parameters(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_init_starts_from_a_finished_runs_weights_and_remembers_it(tmp_path):
    base = tmp_path / "base"
    train(TINY_MODEL, SMALL, out=base, progress=False)
    start = _parameters(model_from_checkpoint(load_checkpoint(base / CHECKPOINT)))
    # A learning rate too small to move a weight: the fine-tuned run's weights are the ones it started from.
    tuned = tmp_path / "tuned"
    config = TrainConfig(**{**SMALL.__dict__, "epochs": 1, "lr": 1e-12, "init": str(base)})
    result = train(TINY_MODEL, config, out=tuned, progress=False)
    after = _parameters(model_from_checkpoint(load_checkpoint(tuned / CHECKPOINT)))
    assert all(torch.allclose(after[k], start[k], atol=1e-8) for k in start)
    assert result["init"]["run"] == str(base) and result["init"]["epochs"] == 2 and result["init"]["train"]["lr"] == SMALL.lr
    # The facts travel in the checkpoint: the run resumes, and still says where it came from, with its source gone.
    for p in base.iterdir():
        p.unlink()
    base.rmdir()
    resumed = train(TINY_MODEL, TrainConfig(**{**config.__dict__, "epochs": 2}), out=tuned, progress=False)
    assert resumed["epochs"] == 2 and resumed["init"] == result["init"]


def test_init_refuses_another_network_or_an_unfinished_run(tmp_path):
    train(TINY_MODEL, SMALL, out=tmp_path / "base", progress=False)
    other = AutoencoderConfig(channel_factor=2, compression=4, fewer_layers=True)
    with pytest.raises(ValueError, match="same network"):
        train(other, TrainConfig(**{**SMALL.__dict__, "init": str(tmp_path / "base")}), out=tmp_path / "other", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "init": str(tmp_path / "nowhere")}), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "other" / CHECKPOINT).exists()


def test_a_pca_autoencoder_with_an_encoder_cnn_starts_from_a_run_without_one(tmp_path):
    from training.model import PCAAutoencoderConfig

    base_config = PCAAutoencoderConfig(components=8, width=4, levels=2, tile=16)
    small = TrainConfig(**{**SMALL.__dict__, "loss": "mse"})
    train(base_config, small, out=tmp_path / "base", progress=False)
    base = model_from_checkpoint(load_checkpoint(tmp_path / "base" / CHECKPOINT)).eval()
    grown_config = PCAAutoencoderConfig(components=8, width=4, levels=2, tile=16, encoder_width=2)
    config = TrainConfig(**{**small.__dict__, "epochs": 1, "lr": 1e-12, "init": str(tmp_path / "base")})
    result = train(grown_config, config, out=tmp_path / "grown", progress=False)
    grown = model_from_checkpoint(load_checkpoint(tmp_path / "grown" / CHECKPOINT)).eval()
    assert result["init"]["name"] == base_config.name and result["model"]["encoder_width"] == 2
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():  # nothing moved at this learning rate, and the CNN started as zero: the same model
        torch.testing.assert_close(grown(x), base(x), atol=1e-5, rtol=1e-5)
    # Only from the same network without the CNN: not from another refiner width.
    other = PCAAutoencoderConfig(components=8, width=8, levels=2, tile=16, encoder_width=2)
    with pytest.raises(ValueError, match="same network"):
        train(other, config, out=tmp_path / "other", progress=False)


def test_min_colourfulness_is_a_colorizer_setting(tmp_path):
    with pytest.raises(ValueError, match="in \\[0, 2\\]"):
        TrainConfig(min_colourfulness=-0.1)
    with pytest.raises(ValueError, match="for colorizers"):
        train(TINY_MODEL, TrainConfig(**{**SMALL.__dict__, "min_colourfulness": 0.8}), out=tmp_path, progress=False)


def test_a_pca_autoencoder_trains_from_pca_and_resumes(tmp_path, monkeypatch):
    from training.model import PCAAutoencoderConfig

    model = PCAAutoencoderConfig(components=16, width=4, levels=2, tile=16)
    config = TrainConfig(data="fake:400", epochs=3, batch_size=16, lr=3e-3, precision="fp32", schedule="cosine", loss="psnr")
    start = train(model, TrainConfig(**{**config.__dict__, "epochs": 1, "lr": 1e-12}), out=tmp_path / "pca", progress=False)
    straight, resumed = straight_and_resumed(model, config, tmp_path, monkeypatch)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
    # The fake images are 8x8-pixel blocks plus noise: PCA at 16 components keeps all the signal of a 16x16 tile,
    # so training has little to win here (results/autoencoder has what it wins on photos); it must not lose it.
    assert straight["test"]["psnr"] > start["test"]["psnr"] - 0.05
    trained = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["model"]
    assert trained["decoder.refiner.last.weight"].abs().max() > 0 and trained["encoder.change"].abs().max() > 0
    # A resumed run is built from its checkpoint's weights: PCA is not fitted again only to be replaced.
    from training.model import PCAAutoencoder

    monkeypatch.setattr(PCAAutoencoder, "fit_pca", lambda self, images: pytest.fail("PCA fitted again on resume"))
    longer = train(model, TrainConfig(**{**config.__dict__, "epochs": 4}), out=tmp_path / "crashed", progress=False)
    assert longer["epochs"] == 4
    with pytest.raises(ValueError, match="outputs pixels, not logits"):
        train(model, TrainConfig(data="fake:400", epochs=1, loss="bce"), out=tmp_path / "bce", progress=False)


def test_a_refining_step_also_trains_the_decoder_on_refined_latents_and_leaves_the_encoder_to_the_plain_loss():
    from training.headroom import refine_latents
    from training.model import ResidualAutoencoder, ResidualAutoencoderConfig

    torch.manual_seed(0)
    model = ResidualAutoencoder(ResidualAutoencoderConfig(width=4, downsamplings=1, latent_channels=1, blocks=1))
    x = torch.rand(4, 3, 8, 8)
    plain, refining = ReconstructionTask(model.config, "mse"), ReconstructionTask(model.config, "mse", refine_steps=3, refine_lr=0.05)
    z = model.encode(x)
    refined = refine_latents(model, x, z, 3, 0.05)
    expected = plain.loss(model, x, torch.float32) + torch.nn.functional.mse_loss(model.decode(refined), x)
    loss = refining.loss(model, x, torch.float32)
    torch.testing.assert_close(loss, expected)
    # Three steps downhill: the refined latents reconstruct better than the encoder's.
    assert torch.nn.functional.mse_loss(model.decode(refined), x) < plain.loss(model, x, torch.float32)

    def grads(task):
        model.zero_grad()
        task.loss(model, x, torch.float32).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    g_plain, g_refining = grads(plain), grads(refining)
    # The refined latents are constants: the encoder learns from its own latents only, the decoder from both.
    assert all(torch.allclose(g_refining[k], g_plain[k]) for k in g_plain if k.startswith("encoder."))
    assert any(not torch.allclose(g_refining[k], g_plain[k]) for k in g_plain if k.startswith("decoder."))


def test_refine_steps_is_an_autoencoder_setting_recorded_with_the_run(tmp_path):
    from training.colorize import ColorizerConfig

    with pytest.raises(ValueError, match="refine_steps"):
        TrainConfig(refine_steps=-1)
    with pytest.raises(ValueError, match="refine_lr"):
        TrainConfig(refine_lr=0)
    with pytest.raises(ValueError, match="for autoencoders"):
        train(ColorizerConfig(width=4), TrainConfig(**{**SMALL.__dict__, "refine_steps": 2}), out=tmp_path / "c", progress=False)
    config = TrainConfig(**{**SMALL.__dict__, "epochs": 1, "loss": "mse", "refine_steps": 2})
    result = train(TINY_MODEL, config, out=tmp_path / "r", progress=False)
    assert result["train"]["refine_steps"] == 2 and result["train"]["refine_lr"] == 0.04
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["refine_steps"] == 2
