"""The published contract: what goes in and out of each ONNX file, as PyTorch modules to export.

    encoder.onnx    image  float32 [N, 3, H, W] RGB in [0, 1]     -> latent float32 [N, C, H/s, W/s]
    decoder.onnx    latent float32 [N, C, h, w]                   -> image  float32 [N, 3, h*s, w*s] in [0, 1]
    colorizer.onnx  gray   float32 [N, 1, H, W] luma Y in [0, 1]  -> image  float32 [N, 3, H, W] RGB in [0, 1]

Y = 0.299 R + 0.587 G + 0.114 B (BT.601). A colorizer may have been trained on another gray channel
(Lab's L, the channel mean): the graph computes it from Y, as the gray channel of the gray image whose
R = G = B = Y, so a caller never needs to know how the model was trained. N, H and W are dynamic; H and
W must be multiples of the model's stride s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.colorize import Colorizer, UNet
from training.model import config_from_name


@dataclass(frozen=True)
class GraphSpec:
    """One file of the contract: its role, tensor names and symbolic shapes."""

    role: str  # encoder | decoder | colorizer
    input: str
    output: str
    input_shape: tuple  # symbolic dims are strings
    output_shape: tuple


def encoder_spec(latent_channels: int) -> GraphSpec:
    return GraphSpec("encoder", "image", "latent", ("N", 3, "H", "W"), ("N", latent_channels, "H/s", "W/s"))


def decoder_spec(latent_channels: int) -> GraphSpec:
    return GraphSpec("decoder", "latent", "image", ("N", latent_channels, "h", "w"), ("N", 3, "h*s", "w*s"))


COLORIZER_SPEC = GraphSpec("colorizer", "gray", "image", ("N", 1, "H", "W"), ("N", 3, "H", "W"))


class EncoderGraph(nn.Module):
    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(image)


class DecoderGraph(nn.Module):
    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latent)


class ColorizerGraph(nn.Module):
    """Luma Y in, RGB out: the model's own gray channel, network and decoding all inside."""

    def __init__(self, colorizer: Colorizer):
        super().__init__()
        self.colorizer = colorizer

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        own_gray, _ = self.colorizer.encoding.encode(gray.expand(-1, 3, -1, -1))
        return self.colorizer(own_gray).clamp(0, 1)


def colorizer_stride(colorizer: Colorizer) -> int:
    if isinstance(colorizer.net, UNet):
        return 4  # two poolings
    return config_from_name(colorizer.config.cae).stride
