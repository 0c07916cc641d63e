"""training.run.Run: the typed hand-off from training to reports, figures and export."""

import json

import pytest
import torch

from cae.cli import build_parser
from training.colorize import ColorizerConfig
from training.config import SWEEP_DEFAULTS, TRAIN_DEFAULTS, TrainConfig
from training.data import load_images, split_indices
from training.model import ResidualAutoencoderConfig
from training.run import CHECKPOINT, Run


def test_a_run_says_what_it_is(tiny_runs):
    residual, colorizer = Run.load(tiny_runs["residual"]), Run.load(tiny_runs["colorizer"] / CHECKPOINT)
    assert residual.kind == "reconstruction" and isinstance(residual.model_config, ResidualAutoencoderConfig)
    assert colorizer.kind == "colorization" and isinstance(colorizer.model_config, ColorizerConfig)
    assert residual.finished and residual.train_config == TrainConfig(data="fake:160", epochs=1, batch_size=32, precision="fp32")
    result = json.loads((tiny_runs["residual"] / "result.json").read_text())
    assert residual.state.test == result["test"] and residual.data.sizes == result["data"]["sizes"]


def test_the_split_is_the_one_training_used(tiny_runs):
    run = Run.load(tiny_runs["study"])
    data = run.images()
    split = run.split(data)
    expected = split_indices(len(load_images("fake:160")), seed=run.data.split_seed, fraction=run.data.fraction)
    assert (split.test == expected.test).all() and len(split.train) == run.data.sizes["train"]


def test_the_model_rebuilds_and_old_checkpoints_still_load(tiny_runs, tmp_path):
    raw = torch.load(tiny_runs["residual"] / CHECKPOINT, weights_only=False)
    assert raw["model_type"] == "ResidualAutoencoderConfig"
    old = {k: v for k, v in raw.items() if k not in ("model_type", "task")}  # as written before both were recorded
    old["train_config"] = {k: v for k, v in raw["train_config"].items() if k != "log_every"}
    torch.save(old, tmp_path / CHECKPOINT)
    legacy, current = Run.load(tmp_path), Run.load(tiny_runs["residual"])
    assert legacy.kind == "reconstruction" and legacy.model_config == current.model_config
    assert legacy.train_config == current.train_config  # the missing field takes its default
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(legacy.model()(x), current.model()(x))
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        Run.load(tmp_path / "nowhere")


def test_commands_and_python_train_with_the_same_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices
    for command, task_defaults in (("train", TRAIN_DEFAULTS["reconstruction"]), ("train-colorizer", TRAIN_DEFAULTS["colorization"]),
                                   ("sweep", SWEEP_DEFAULTS)):
        args = sub[command].parse_args([])
        expected = TrainConfig(**task_defaults)
        for name in ("fraction", "epochs", "batch_size", "lr", "optimizer", "loss", "schedule", "seed", "precision"):
            assert getattr(args, name) == getattr(expected, name), (command, name)
    # Model flags left unset take the component's defaults.
    args = sub["train-colorizer"].parse_args([])
    assert all(getattr(args, n) is None for n in ("encoding", "arch", "color_loss", "width", "cae", "temperature"))
