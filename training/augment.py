"""What training may add to the plain step: augmented batches and an exponential moving average of the
weights. Both are off by default (TrainConfig.augment = "none", TrainConfig.ema = 0) and measured in
results/autoencoder before any recipe uses them.

Augmentation runs on the device, outside the (possibly graph-captured) step, with a generator seeded by
(seed, epoch), so a resumed run sees the same augmented batches it would have seen.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel

from training.config import AUGMENTATIONS

SHIFT = 2  # pixels: the largest translation of flip-shift, with the border reflected in


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """x (B, C, H, W) -> the same batch with each image flipped left-right with probability 1/2 ("flip"),
    and also moved by up to SHIFT pixels in each direction, its border reflected ("flip-shift"). The
    target of an autoencoder is its (augmented) input, so nothing else changes."""
    if kind == "none":
        return x
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {kind!r}")
    b, _, h, w = x.shape
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    if kind == "flip-shift":
        padded = torch.nn.functional.pad(x, (SHIFT,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, b, 1), device=x.device, generator=generator)
        rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, x.shape[1], h, w + 2 * SHIFT)
        padded = padded.gather(2, rows)
        cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, x.shape[1], h, w)
        x = padded.gather(3, cols)
    return x


class WeightAverage:
    """An exponential moving average of `model`'s weights and buffers: torch's AveragedModel, with the decay
    warmed up as min(decay, (1 + n) / (10 + n)) after n averaging updates (as timm's ModelEmaV3 does: a
    fixed 0.999 from the first step still holds mostly the initial weights after a few hundred steps).
    Integer buffers (BatchNorm's count of batches seen) are the model's own. A resumed run passes the
    average's `weights` and the `updates` made so far, and continues exactly where it stopped."""

    def __init__(self, model: torch.nn.Module, decay: float, weights: dict | None = None, updates: int = 0):
        self.decay, self.updates, self._weight = decay, updates, 1.0
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)
        if weights is not None:
            self.averaged.module.load_state_dict(weights)
            self.averaged.n_averaged.fill_(max(1, updates))  # started: the next update averages instead of copying

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self, model: torch.nn.Module) -> None:
        n = max(0, self.updates - 1)  # averaging updates so far: every update but the first, which copies
        self._weight = 1 - min(self.decay, (1 + n) / (10 + n))
        self.averaged.update_parameters(model)
        self.updates += 1

    @torch.no_grad()
    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        # AveragedModel calls this once per (device, dtype) group of tensors.
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, self._weight)
        else:
            torch._foreach_copy_(averaged, current)
