"""The convolutional autoencoder family of Pomerenke & Zeng (2020).

The study's first model (the assignment's):

    conv 3x3, 8ch -> maxpool 2 -> conv 12ch -> maxpool 2 -> conv 16ch   (latent 8x8x16 = 1024)
    -> upsample 2 -> conv 12ch -> upsample 2 -> conv 3ch, sigmoid

and the four axes its sweep varies (2 x 3 x 2 x 3 = 36 models):

- fewer_layers:   drop the two medium convolutions (12ch), leaving 3 convolutions instead of 5;
                  the pooling/upsampling stays, so the latent size does not depend on this axis;
- channel_factor: channels are (8, 12, 16) halved, times 1, 2 or 4 (2 is the first model);
- kernel_size:    3 or 5, padded so a convolution keeps the spatial size;
- compression:    the pooling/upsampling factor, 1 (none), 2 (the first model) or 4.

Latent size = (H / compression**2) * (W / compression**2) * 8 * channel_factor.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass

import torch
from torch import nn

# The first model's channels, which the channel factor scales after halving them.
BASE_CHANNELS = (8, 12, 16)
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class AutoencoderConfig:
    fewer_layers: bool = False
    channel_factor: int = 2
    kernel_size: int = 3
    compression: int = 2
    activation: str = "relu"  # inside the network; the output is always a sigmoid
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self):
        if self.channel_factor not in (1, 2, 4):
            raise ValueError(f"channel_factor must be 1, 2 or 4, got {self.channel_factor}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding keeps sizes), got {self.kernel_size}")
        if self.compression < 1:
            raise ValueError(f"compression must be >= 1, got {self.compression}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def channels(self) -> tuple[int, int, int]:
        return tuple(c // 2 * self.channel_factor for c in BASE_CHANNELS)

    @property
    def num_convs(self) -> int:
        return 3 if self.fewer_layers else 5

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (two pooling steps)."""
        return self.compression**2

    @property
    def name(self) -> str:
        """A name that tells the configuration, e.g. cae_l5_ch2_k3_s2 for the first model."""
        parts = [f"cae_l{self.num_convs}_ch{self.channel_factor}_k{self.kernel_size}_s{self.compression}"]
        if self.activation != "relu":
            parts.append(self.activation)
        if (self.in_channels, self.out_channels) != (3, 3):
            parts.append(f"io{self.in_channels}{self.out_channels}")
        return "_".join(parts)

    def latent_shape(self, height: int = 32, width: int = 32) -> tuple[int, int, int]:
        if height % self.stride or width % self.stride:
            raise ValueError(f"{height}x{width} is not a multiple of the model's stride {self.stride}")
        return (self.channels[2], height // self.stride, width // self.stride)

    def latent_size(self, height: int = 32, width: int = 32) -> int:
        c, h, w = self.latent_shape(height, width)
        return c * h * w

    def to_dict(self) -> dict:
        return asdict(self)


FIRST_MODEL = AutoencoderConfig()

# The study's sweep, as plain data: every combination of its four axes.
SWEEP_AXES = {
    "fewer_layers": (False, True),
    "channel_factor": (1, 2, 4),
    "kernel_size": (3, 5),
    "compression": (1, 2, 4),
}


def sweep_configs(**overrides) -> list[AutoencoderConfig]:
    """The 36 configurations of the study's sweep (overrides, e.g. activation, apply to all)."""
    keys = list(SWEEP_AXES)
    return [AutoencoderConfig(**dict(zip(keys, values)), **overrides) for values in itertools.product(*SWEEP_AXES.values())]


def config_from_name(name: str) -> AutoencoderConfig:
    """Inverse of AutoencoderConfig.name, so the CLI can take `--model cae_l3_ch4_k5_s1`."""
    fields = name.split("_")
    if len(fields) < 5 or fields[0] != "cae":
        raise ValueError(f"not a model name: {name!r} (expected e.g. {FIRST_MODEL.name})")
    try:
        kwargs = dict(
            fewer_layers={"l5": False, "l3": True}[fields[1]],
            channel_factor=int(fields[2].removeprefix("ch")),
            kernel_size=int(fields[3].removeprefix("k")),
            compression=int(fields[4].removeprefix("s")),
        )
        for extra in fields[5:]:
            if extra in ACTIVATIONS:
                kwargs["activation"] = extra
            elif extra.startswith("io") and len(extra) == 4:
                kwargs["in_channels"], kwargs["out_channels"] = int(extra[2]), int(extra[3])
            else:
                raise KeyError(extra)
    except (KeyError, ValueError):
        raise ValueError(f"not a model name: {name!r} (expected e.g. {FIRST_MODEL.name})") from None
    return AutoencoderConfig(**kwargs)


def upsample_conv(z: torch.Tensor, conv: nn.Conv2d, factor: int) -> torch.Tensor:
    """conv(nearest_upsample(z, factor)), computed without upsampling: the same function, about twice as fast.

    Each output pixel of a convolution over a nearest-upsampled map sees the low-resolution map through
    a smaller kernel that depends only on the pixel's phase (its position within its factor x factor
    block). So one convolution over the low-resolution map with factor^2 x out_channels kernels (the
    conv's own taps summed per phase), followed by a pixel shuffle, gives the same outputs and, since
    the kernels are computed from the conv's weights, the same gradients (up to float rounding). It
    never builds the upsampled map, and its wider output suits the CPU's vector units: the first
    model's decoder trains about 2x faster this way. For stride-1 convolutions with a square kernel and
    the same padding on every side (every convolution after an upsampling in this file).
    """
    taps_list, low_pad = _phase_taps(factor, conv.kernel_size[0], conv.padding[0])
    taps = torch.tensor(taps_list, dtype=conv.weight.dtype, device=conv.weight.device)
    # (out, in, k, k) -> (out, phase_y, phase_x, in, K, K) -> (out * factor^2, in, K, K), pixel_shuffle's order.
    w = torch.einsum("pod,qef,cidf->cpqioe", taps, taps, conv.weight)
    w = w.reshape(conv.out_channels * factor * factor, conv.in_channels, *w.shape[-2:])
    bias = conv.bias.repeat_interleave(factor * factor) if conv.bias is not None else None
    return nn.functional.pixel_shuffle(nn.functional.conv2d(z, w, bias, padding=low_pad), factor)


@functools.lru_cache(maxsize=None)
def _phase_taps(factor: int, k: int, pad: int) -> tuple[list, int]:
    """taps[p][o][d] = 1 where tap d of a k-tap kernel, at output phase p, reads low-resolution offset o."""
    # Tap d at upsampled row factor*i + p reads upsampled row factor*i + p + d - pad, low-resolution row
    # i + floor((p + d - pad) / factor): an offset from i that depends only on p and d.
    offsets = [[(p + d - pad) // factor for d in range(k)] for p in range(factor)]
    lowest = min(min(row) for row in offsets)
    size = max(max(row) for row in offsets) - lowest + 1
    taps = [[[int(row[d] - lowest == o) for d in range(k)] for o in range(size)] for row in offsets]
    # Zero padding of the upsampled map is zero padding of the low-resolution map: pad by -lowest.
    return taps, -lowest


def _resample(factor: int, down: bool) -> nn.Module:
    if factor == 1:
        return nn.Identity()
    # Keras' MaxPooling2D and UpSampling2D (nearest), as in the study.
    return nn.MaxPool2d(factor) if down else nn.Upsample(scale_factor=factor, mode="nearest")


class ConvAutoencoder(nn.Module):
    # Upsampling + convolution as one sub-pixel convolution (faster on the CPU); training.step turns it off
    # on CUDA, where the plain layers are fewer launches. The same function either way.
    subpixel_decoder = True

    def __init__(self, config: AutoencoderConfig = FIRST_MODEL):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        k, s, act = config.kernel_size, config.compression, ACTIVATIONS[config.activation]

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=k // 2)

        # (B, in, H, W) -> (B, c3, H/s^2, W/s^2); the latent passes the activation too, as in the study.
        # The study's order is conv, activation, pool. Max pooling commutes with a non-decreasing activation
        # (ReLU, sigmoid): pooling first gives the same outputs and gradients while the activation and its
        # backward touch a quarter of the values (about 5% of a training step of the first model).
        enc = [conv(config.in_channels, c1), _resample(s, down=True)]
        enc += [] if config.fewer_layers else [act(), conv(c1, c2)]
        enc += [_resample(s, down=True), act(), conv(c1 if config.fewer_layers else c2, c3), act()]
        # (B, c3, H/s^2, W/s^2) -> (B, out, H, W) logits; decode() applies the sigmoid.
        dec = [_resample(s, down=False)]
        dec += [] if config.fewer_layers else [conv(c3, c2), act()]
        dec += [_resample(s, down=False), conv(c3 if config.fewer_layers else c2, config.out_channels)]
        self.encoder = nn.Sequential(*[m for m in enc if not isinstance(m, nn.Identity)])
        self.decoder = nn.Sequential(*[m for m in dec if not isinstance(m, nn.Identity)])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) in [0, 1] -> latent (B, C, H/stride, W/stride)."""
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output: training uses it for a numerically stable BCE."""
        # The decoder's layers, except that nearest upsamplings (consecutive ones multiply) and the
        # convolution after them run as one cheaper sub-pixel convolution (upsample_conv: the same function).
        layers, i = list(self.decoder), 0
        while i < len(layers):
            factor = 1
            while i < len(layers) and isinstance(layers[i], nn.Upsample):
                factor, i = factor * int(layers[i].scale_factor), i + 1
            if (factor > 1 and self.subpixel_decoder and i < len(layers) and isinstance(layers[i], nn.Conv2d)
                    and layers[i].stride == (1, 1)):
                z, i = upsample_conv(z, layers[i], factor), i + 1
            elif factor > 1:
                z = nn.functional.interpolate(z, scale_factor=factor, mode="nearest")
            else:
                z, i = layers[i](z), i + 1
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent -> (B, out, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------------
# Beyond the study: the autoencoder the project ships.
#
# The study's family loses to PCA at every latent size (results/sweep). The levers that close the gap:
# strided convolutions instead of max pooling (the network learns what to keep), a linear latent (a ReLU
# on the latent throws away half of each value's range), residual blocks (depth without a harder
# optimisation), more channels where the maps are small, MSE loss and a cosine-decayed learning rate.


@dataclass(frozen=True)
class ResidualAutoencoderConfig:
    width: int = 32  # channels at full resolution; doubled after each downsampling, up to 4x width
    downsamplings: int = 3  # stride 2 each: 32x32 -> 4x4 latent maps for 3
    latent_channels: int = 8  # 4x4x8 = 128 latent values for a 32x32 image
    blocks: int = 1  # residual blocks per resolution, in the encoder and the decoder
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self):
        if min(self.width, self.downsamplings, self.latent_channels, self.blocks + 1) < 1:
            raise ValueError("width, downsamplings and latent_channels must be >= 1, blocks >= 0")

    @property
    def stride(self) -> int:
        return 2**self.downsamplings

    @property
    def channels(self) -> list[int]:
        """Channels at each resolution, full resolution first."""
        return [self.width * min(2**i, 4) for i in range(self.downsamplings + 1)]

    @property
    def name(self) -> str:
        parts = [f"rae_w{self.width}_d{self.downsamplings}_z{self.latent_channels}_b{self.blocks}"]
        if (self.in_channels, self.out_channels) != (3, 3):
            parts.append(f"io{self.in_channels}{self.out_channels}")
        return "_".join(parts)

    def latent_shape(self, height: int = 32, width: int = 32) -> tuple[int, int, int]:
        if height % self.stride or width % self.stride:
            raise ValueError(f"{height}x{width} is not a multiple of the model's stride {self.stride}")
        return (self.latent_channels, height // self.stride, width // self.stride)

    def latent_size(self, height: int = 32, width: int = 32) -> int:
        c, h, w = self.latent_shape(height, width)
        return c * h * w

    def to_dict(self) -> dict:
        return asdict(self)


def residual_config_from_name(name: str) -> ResidualAutoencoderConfig:
    fields = name.split("_")
    try:
        if fields[0] != "rae" or len(fields) not in (5, 6):
            raise KeyError(name)
        kwargs = {key: int(f.removeprefix(prefix)) for key, prefix, f in
                  zip(("width", "downsamplings", "latent_channels", "blocks"), ("w", "d", "z", "b"), fields[1:5])}
        if len(fields) == 6:
            if not (fields[5].startswith("io") and len(fields[5]) == 4):
                raise KeyError(name)
            kwargs["in_channels"], kwargs["out_channels"] = int(fields[5][2]), int(fields[5][3])
    except (KeyError, ValueError):
        raise ValueError(f"not a model name: {name!r} (expected e.g. {ResidualAutoencoderConfig().name})") from None
    return ResidualAutoencoderConfig(**kwargs)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
        # The block starts as the identity, so stacking them does not make the first steps harder.
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualAutoencoder(nn.Module):
    """Strided-conv encoder and upsample+conv decoder with residual blocks and a linear latent."""

    def __init__(self, config: ResidualAutoencoderConfig = ResidualAutoencoderConfig()):
        super().__init__()
        self.config = config
        ch = config.channels

        def blocks(c: int) -> list[nn.Module]:
            return [ResidualBlock(c) for _ in range(config.blocks)]

        enc: list[nn.Module] = [nn.Conv2d(config.in_channels, ch[0], 3, padding=1)]
        for i in range(config.downsamplings):
            enc += [*blocks(ch[i]), nn.ReLU(), nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1)]
        enc += [*blocks(ch[-1]), nn.ReLU(), nn.Conv2d(ch[-1], config.latent_channels, 1)]  # linear latent
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[-1], 3, padding=1), *blocks(ch[-1])]
        for i in reversed(range(config.downsamplings)):
            # Nearest upsampling then a convolution: no checkerboard artefacts of transposed convolutions.
            dec += [nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1), *blocks(ch[i])]
        dec += [nn.ReLU(), nn.Conv2d(ch[0], config.out_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    encode = ConvAutoencoder.encode
    decode_logits = ConvAutoencoder.decode_logits
    subpixel_decoder = True
    decode = ConvAutoencoder.decode
    forward = ConvAutoencoder.forward
    num_parameters = ConvAutoencoder.num_parameters


MODEL_CONFIGS = (AutoencoderConfig, ResidualAutoencoderConfig)


def any_config_from_name(name: str):
    """A study (cae_...) or residual (rae_...) autoencoder configuration from its name."""
    return residual_config_from_name(name) if name.startswith("rae") else config_from_name(name)


def build_autoencoder(config) -> nn.Module:
    return ResidualAutoencoder(config) if isinstance(config, ResidualAutoencoderConfig) else ConvAutoencoder(config)


@functools.lru_cache(maxsize=None)
def multiply_adds_per_pixel(name: str) -> float:
    """Multiply-adds per input pixel of encoder and decoder together, as the network runs them: torch's
    FlopCounterMode at 64x64 less at 32x32, over the pixels added, so that work done once per call (the
    sub-pixel decoder's kernels, computed from the weights) is not counted; convolutions scale with the pixels."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_autoencoder(any_config_from_name(name)).eval()

    def multiply_adds(side: int) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, model.config.in_channels, side, side))
        return counter.get_total_flops() // 2

    return (multiply_adds(64) - multiply_adds(32)) / (64 * 64 - 32 * 32)


def autoencoder_config_from_dict(values: dict):
    """A model config from its fields, for checkpoints that did not record its type (training.run.Run reads
    the type when it is there): residual configs are told apart by their `width` field."""
    return ResidualAutoencoderConfig(**values) if "width" in values else AutoencoderConfig(**values)
