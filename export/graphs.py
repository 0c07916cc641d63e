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


DECODER_FORMS = ("layers", "sub-pixel")


class DecoderGraph(nn.Module):
    """The decoder as one of two graphs of the same function: "layers" (the decoder's layers as they are,
    upsampling then convolution) or "sub-pixel" (training.model.upsample_conv: a convolution at low
    resolution, then DepthToSpace). Which runs faster in onnxruntime depends on the model (measured on
    this CPU: sub-pixel 1.9x faster for the study's first model, 0.9x for the shipped residual one)."""

    def __init__(self, autoencoder: nn.Module, form: str = "layers"):
        super().__init__()
        if form not in DECODER_FORMS:
            raise ValueError(f"decoder form must be one of {DECODER_FORMS}, got {form!r}")
        self.autoencoder, self.form = autoencoder, form

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.form == "sub-pixel" or not self.autoencoder.output_is_logits:
            return self.autoencoder.decode(latent)
        return torch.sigmoid(self.autoencoder.decoder(latent))


class ColorizerGraph(nn.Module):
    """Luma Y in, RGB out: the model's own gray channel, network, decoding and the input's luma put back, all inside."""

    def __init__(self, colorizer: Colorizer):
        super().__init__()
        self.colorizer = colorizer

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.colorizer.colorize_luma(gray)


def colorizer_stride(colorizer: Colorizer) -> int:
    if isinstance(colorizer.net, UNet):
        return 4  # two poolings
    return config_from_name(colorizer.config.cae).stride
