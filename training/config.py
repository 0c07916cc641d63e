"""How a model is trained, and each kind of model's defaults: plain data, no torch (the `cae` command
reads these defaults to build its flags, and `cae --help` must not import torch)."""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("bce", "mse", "psnr")
AUGMENTATIONS = ("none", "flip", "flip-shift")  # training.augment: no torch here


@dataclass(frozen=True)
class TrainConfig:
    data: str = "fake"  # a source for training.data.load_images; the `cae` commands default to the real data
    fraction: float = 1.0  # share of each split to use (the study's sweep: 0.1)
    split_seed: int = 0  # the train/validation/test split
    seed: int = 0  # weights and batch order
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    # bce | mse | psnr (the mean over images of each one's log MSE: the metric itself). Colorizers: bce = the network's own
    # loss (rebalanced cross-entropy or L2 on the encoding's targets), psnr = log MSE of the output as served.
    loss: str = "bce"
    schedule: str = "constant"  # constant | cosine (decays the learning rate to 0 over `epochs`)
    augment: str = "none"  # none | flip | flip-shift (training.augment)
    ema: float = 0.0  # decay of an exponential moving average of the weights, evaluated and shipped; 0: off
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda[:N]
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16
    eval_batch_size: int = 1000
    log_every: int = 1  # steps between entries of steps.csv
    init: str = ""  # a finished run folder of the same model whose weights this run starts from (fine-tuning); "": fresh weights
    # Colorizers trained with loss psnr (their output as served): keep each batch's colourfulness at least this share of
    # the truth's, a hinge on the shortfall. 0: off.
    min_colourfulness: float = 0.0
    # Autoencoders: each batch's latents also refined this many Adam steps against the decoder (at refine_lr, as the
    # service's `refine` does), and the decoder trained on them too, so that it suits the latents it is served. 0: off.
    refine_steps: int = 0
    refine_lr: float = 0.04

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_NAMES)}, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {self.augment!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch size and learning rate must be positive")
        if not 0 <= self.min_colourfulness <= 2:
            raise ValueError(f"min_colourfulness is a share of the truth's colourfulness, in [0, 2], got {self.min_colourfulness}")
        if self.refine_steps < 0 or not self.refine_lr > 0:
            raise ValueError(f"refine_steps must be >= 0 and refine_lr positive, got {self.refine_steps} and {self.refine_lr}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")


# Each task's departures from TrainConfig's defaults: `train(model)` and `cae train...` use the same.
TRAIN_DEFAULTS = {
    "reconstruction": {},
    # The setting the colorizer runs in results/colorization were trained with.
    "colorization": {"batch_size": 64, "lr": 1e-3},
}

# The study's sweep setting: 10 epochs on 10% of the data, with Keras' batch size and learning rate
# (10% of the data in batches of 256 gives only 160 steps in 10 epochs, too few for the small models).
SWEEP_DEFAULTS = {"epochs": 10, "fraction": 0.1, "batch_size": 32, "lr": 1e-3}


def default_train_config(task: str, **overrides) -> TrainConfig:
    """TrainConfig with `task`'s defaults (reconstruction | colorization), then `overrides`."""
    return TrainConfig(**{**TRAIN_DEFAULTS[task], **overrides})
