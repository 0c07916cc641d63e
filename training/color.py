"""Colour encodings for colorization: a gray input channel and colour targets, each invertible.

Every encoding maps RGB in [0, 1] to (gray (B, 1, H, W), target (B, K, H, W)) with both in [0, 1], so a
sigmoid output can reach every target value, and back: `decode(gray, target)` gives RGB.

- ycbcr:      input Y (ITU-R BT.601 luma, full range), target CbCr centred on 0.5 (JFIF);
- ratio:      input the channel mean, target each channel divided by it (1/3 scale; neutral at black);
- difference: input the channel mean, target each channel minus it (mapped from [-1, 1] to [0, 1]);
- rgb:        input Y, target all three channels (the original assignment's setting);
- lab:        input L/100 (CIE Lab, D65), target ab mapped from [-128, 128] to [0, 1].

`ycbcr_centred` reproduces the likely range error behind the study's odd YCbCr colours: Cb and Cr are
centred on 0 (in [-0.5, 0.5]), but the network ends in a sigmoid, so no negative chroma (no blue, no
green) can ever be predicted. It is kept only to show that failure.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab, rgb_to_ycbcr, ycbcr_to_rgb

from cae.images import LUMA  # BT.601: the same weights as the service's colorizer input


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): Y = 0.299 R + 0.587 G + 0.114 B."""
    w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def with_luma(rgb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) with its luma replaced by y (B, 1, H, W) and its chroma kept, clamped to [0, 1]:
    adding Y - luma(rgb) to R, G and B changes BT.601 Y by exactly that and leaves Cb and Cr as they are."""
    return (rgb + (y - luma(rgb))).clamp(0, 1)


def channel_mean(rgb: torch.Tensor) -> torch.Tensor:
    """The study's "grayscale layer" for ratio and difference: the plain mean of R, G, B."""
    return rgb.mean(1, keepdim=True)


class Encoding:
    name: str
    target_channels: int

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, gray: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class YCbCr(Encoding):
    name, target_channels = "ycbcr", 2

    def encode(self, rgb):
        ycc = rgb_to_ycbcr(rgb)  # Cb, Cr already offset by 0.5 (full-range JFIF)
        return ycc[:, :1], ycc[:, 1:]

    def decode(self, gray, target):
        return ycbcr_to_rgb(torch.cat([gray, target], 1)).clamp(0, 1)


class YCbCrCentred(YCbCr):
    """The inconsistent variant: chroma in [-0.5, 0.5] while the model's sigmoid only gives [0, 1]."""

    name = "ycbcr_centred"

    def encode(self, rgb):
        y, cbcr = super().encode(rgb)
        return y, cbcr - 0.5

    def decode(self, gray, target):
        return super().decode(gray, target + 0.5)


class Ratio(Encoding):
    name, target_channels = "ratio", 3
    eps = 1e-3  # below this mean (black) the pixel has no colour to speak of: ratio 1 (neutral)

    def encode(self, rgb):
        m = channel_mean(rgb)
        safe = m.clamp_min(self.eps)
        ratio = torch.where(m > self.eps, rgb / safe, torch.ones_like(rgb))
        return m, ratio / 3  # channel / mean is at most 3

    def decode(self, gray, target):
        return (target * 3 * gray).clamp(0, 1)


class Difference(Encoding):
    name, target_channels = "difference", 3

    def encode(self, rgb):
        m = channel_mean(rgb)
        return m, (rgb - m + 1) / 2

    def decode(self, gray, target):
        return (target * 2 - 1 + gray).clamp(0, 1)


class RGB(Encoding):
    name, target_channels = "rgb", 3

    def encode(self, rgb):
        return luma(rgb), rgb

    def decode(self, gray, target):
        return target.clamp(0, 1)


class Lab(Encoding):
    name, target_channels = "lab", 2

    def encode(self, rgb):
        lab = rgb_to_lab(rgb)
        return lab[:, :1] / 100, (lab[:, 1:] + 128) / 256

    def decode(self, gray, target):
        return lab_to_rgb(torch.cat([gray * 100, target * 256 - 128], 1), clip=True)


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (YCbCr(), YCbCrCentred(), Ratio(), Difference(), RGB(), Lab())}


def get_encoding(name: str) -> Encoding:
    if name not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {name!r}")
    return ENCODINGS[name]


def is_grayscale(images_u8, tolerance: int = 2):
    """(N, 3, H, W) uint8 -> (N,) bool: all three channels equal within `tolerance`/255 at every pixel.

    About 1.2% of CIFAR-10 is such images; colorizers are trained and scored without them.
    """
    import numpy as np

    x = images_u8.astype(np.int16)
    spread = np.maximum(np.abs(x[:, 0] - x[:, 1]), np.maximum(np.abs(x[:, 1] - x[:, 2]), np.abs(x[:, 0] - x[:, 2])))
    return spread.reshape(len(x), -1).max(1) <= tolerance


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) Hasler & Süsstrunk (2003) colourfulness, on the 0-255 scale."""
    r, g, b = (rgb * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return std + 0.3 * mean
