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


def ema_of(model: torch.nn.Module, decay: float, weights: dict | None = None, updates: int = 0) -> AveragedModel:
    """torch's AveragedModel as an exponential moving average of `model` (buffers included), started from
    `weights` after `updates` steps when a run resumes (else from the model's weights at its first update).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as timm's ModelEmaV3 does): a
    fixed 0.999 from the first step would still hold mostly the initial weights after a few hundred steps.
    """
    done = [max(0, updates - 1)]  # averaging updates so far: every update but the first, which copies

    @torch.no_grad()
    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        n = done[0]
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))
        done[0] = n + 1

    ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    if weights is not None:
        ema.module.load_state_dict(weights)
        ema.n_averaged.fill_(max(1, updates))  # started: the next update averages instead of copying
    return ema
