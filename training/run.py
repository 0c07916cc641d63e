"""A run folder's checkpoint as one typed object: what training hands to reports, figures and export.

    run = Run.load("runs/rae_w16_d3_z8_b1")   # a folder or its checkpoint.pt
    run.kind                  # "reconstruction" | "colorization", written by training, never guessed
    run.model_config          # AutoencoderConfig | ResidualAutoencoderConfig | ColorizerConfig
    run.train_config          # TrainConfig
    run.state.test            # test metrics once finished (None before)
    data = run.images()       # the run's own images (or pass an override)
    split = run.split(data)   # its train/validation/test split: derived here and only here
    model = run.model()       # the trained network, in eval mode

The file on disk stays a plain dict saved by torch (training.train writes it), readable without this class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from training.config import TrainConfig
from training.data import ImageArray, Split, load_images, split_indices

CHECKPOINT = "checkpoint.pt"
KINDS = ("reconstruction", "colorization")


@dataclass
class RunState:
    epoch: int = 0  # finished epochs
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    steps: list[float] = field(default_factory=list)  # training loss per logged step
    test: dict | None = None  # test metrics once finished
    train_seconds: float = 0.0
    hardware: list[str] = field(default_factory=list)  # what trained it, one entry per change (a run may resume elsewhere)
    init: dict | None = None  # the run it started from (TrainConfig.init): its facts, kept should that folder go
    recovered: dict | None = None  # rebuilt from exported files (export.recover): which ones, and the lost checkpoint's facts


@dataclass(frozen=True)
class DataFacts:
    """Which images a run used and how it split them."""

    source: str
    checksum: str
    split_seed: int
    fraction: float
    sizes: dict

    def split(self, count: int) -> Split:
        return split_indices(count, seed=self.split_seed, fraction=self.fraction)


def _model_config(kind: str, model_type: str | None, values: dict):
    from training.model import MODEL_CONFIGS, autoencoder_config_from_dict

    if kind == "colorization":
        from training.colorize import ColorizerConfig

        return ColorizerConfig(**values)
    if model_type is None:  # written before the type was recorded
        return autoencoder_config_from_dict(values)
    return {c.__name__: c for c in MODEL_CONFIGS}[model_type](**values)


def known_fields(cls, values: dict) -> dict:
    # A field added since the checkpoint was written takes its default; one removed since is dropped.
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


@dataclass
class Run:
    path: Path  # the checkpoint file
    kind: str
    name: str
    model_config: object
    train_config: TrainConfig
    state: RunState
    data: DataFacts
    weights: dict = field(repr=False)  # what the run ships: the moving average's weights when it kept one
    optimizer: dict | None = field(default=None, repr=False)
    train_weights: dict | None = field(default=None, repr=False)  # the optimizer's own weights, when they differ

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def finished(self) -> bool:
        return self.state.test is not None

    @classmethod
    def load(cls, where: str | Path, map_location="cpu") -> Run:
        path = Path(where)
        path = path / CHECKPOINT if path.is_dir() or path.suffix != ".pt" else path
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent}: no {CHECKPOINT} (a run folder of `cae train` or `cae train-colorizer`)")
        return cls.from_dict(torch.load(path, map_location=map_location, weights_only=False), path)

    @classmethod
    def from_dict(cls, ckpt: dict, path: str | Path = CHECKPOINT) -> Run:
        kind = ckpt.get("task", "reconstruction")
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown run kind {kind!r}")
        return cls(path=Path(path), kind=kind, name=ckpt["name"],
                   model_config=_model_config(kind, ckpt.get("model_type"), ckpt["model_config"]),
                   train_config=TrainConfig(**known_fields(TrainConfig, ckpt["train_config"])),
                   state=RunState(**known_fields(RunState, ckpt["state"])), data=DataFacts(**ckpt["data"]),
                   weights=ckpt["model"], optimizer=ckpt.get("optimizer"), train_weights=ckpt.get("train_model"))

    def to_dict(self) -> dict:
        return {"task": self.kind, "model_type": type(self.model_config).__name__, "model": self.weights,
                "optimizer": self.optimizer, "model_config": asdict(self.model_config),
                "train_config": asdict(self.train_config), "name": self.name, "state": asdict(self.state),
                "data": asdict(self.data), "torch_version": torch.__version__,
                **({"train_model": self.train_weights} if self.train_weights is not None else {})}

    def images(self, override: ImageArray | None = None) -> ImageArray:
        """The images the run was trained on (decoded from its data source), or `override`."""
        return override if override is not None else load_images(self.data.source)

    def split(self, data: ImageArray) -> Split:
        """The run's train/validation/test split of `data` (its fraction included)."""
        return self.data.split(len(data))

    def model(self) -> torch.nn.Module:
        """The trained network, on the CPU, in eval mode."""
        if self.kind == "colorization":
            from training.colorize import colorizer_from_weights

            return colorizer_from_weights(self.model_config, self.weights)
        from training.model import build_autoencoder

        model = build_autoencoder(self.model_config)
        model.load_state_dict(self.weights)
        return model.eval()
