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

import copy
import functools
import itertools
import re
from dataclasses import asdict, dataclass, replace

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
    output_is_logits = True  # decode_logits then a sigmoid; PCAAutoencoder outputs pixels

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


def _lettered_fields(fields: list[str], keys: dict[str, str]) -> dict[str, int]:
    """Name fields such as w16 as {"width": 16}, by the letters in `keys`, in order; ValueError for
    a field without its letter or number (w, 16, w+16)."""
    values = {}
    for field, (letter, key) in zip(fields, keys.items()):
        number = field.removeprefix(letter)
        if number == field or not number.isdigit():
            raise ValueError(field)
        values[key] = int(number)
    return values


def residual_config_from_name(name: str) -> ResidualAutoencoderConfig:
    fields = name.split("_")
    try:
        if fields[0] != "rae" or len(fields) not in (5, 6):
            raise KeyError(name)
        kwargs = _lettered_fields(fields[1:5], {"w": "width", "d": "downsamplings", "z": "latent_channels", "b": "blocks"})
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
    output_is_logits = True
    decode = ConvAutoencoder.decode
    forward = ConvAutoencoder.forward
    num_parameters = ConvAutoencoder.num_parameters


# ---------------------------------------------------------------------------------------------------
# An autoencoder that starts as PCA. Each 32x32 tile is projected on k axes (a convolution with the
# tile as kernel and stride), projected back, and a U-Net refines the image it gets. The axes start as
# the training split's principal components and the refiner's last layer at zero, so the untrained
# model is PCA at k components and training moves on from there: the learned family at 128 values
# started far below PCA and took 100 epochs to pass it by 0.8 dB.


@dataclass(frozen=True)
class PCAAutoencoderConfig:
    components: int = 128  # latent values per tile: the principal components it starts from
    width: int = 16  # refiner channels at full resolution, doubled at each level
    levels: int = 3  # the refiner's resolutions: 32, 16 and 8 pixels a side for 3
    tile: int = 32
    encoder_width: int = 0  # 0: the encoder is the projection alone; else a CNN of this width adds to it
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self):
        if self.encoder_width < 0 or (self.encoder_width and self.tile % 8):
            raise ValueError("encoder_width must be >= 0, and an encoder CNN needs a tile divisible by 8")
        if not 1 <= self.components <= self.in_channels * self.tile**2:
            raise ValueError(f"components must be in [1, {self.in_channels * self.tile**2}], got {self.components}")
        if min(self.width, self.levels) < 1 or self.tile % 2 ** (self.levels - 1):
            raise ValueError("width and levels must be >= 1, and the tile divisible by 2**(levels - 1)")
        if (self.in_channels, self.out_channels) != (3, 3):
            raise ValueError("a PCA autoencoder reconstructs RGB images: in and out channels are 3")

    @property
    def stride(self) -> int:
        return self.tile

    @property
    def name(self) -> str:
        return (f"pae_k{self.components}_w{self.width}_l{self.levels}" + ("" if self.tile == 32 else f"_t{self.tile}")
                + (f"_e{self.encoder_width}" if self.encoder_width else ""))

    @property
    def grows_from(self) -> str:
        """The network a run of this one may start from besides itself (--init): the same without its encoder CNN."""
        return replace(self, encoder_width=0).name

    def latent_shape(self, height: int = 32, width: int = 32) -> tuple[int, int, int]:
        if height % self.tile or width % self.tile:
            raise ValueError(f"{height}x{width} is not a multiple of the model's stride {self.tile}")
        return (self.components, height // self.tile, width // self.tile)

    latent_size = ResidualAutoencoderConfig.latent_size
    to_dict = ResidualAutoencoderConfig.to_dict


def pca_config_from_name(name: str) -> PCAAutoencoderConfig:
    fields = name.split("_")
    try:
        if fields[0] != "pae" or not 4 <= len(fields) <= 6:
            raise KeyError(name)
        kwargs = _lettered_fields(fields[1:4], {"k": "components", "w": "width", "l": "levels"})
        rest = fields[4:]
        for letter, key in (("t", "tile"), ("e", "encoder_width")):  # optional, in this order, each at most once
            if rest and rest[0].startswith(letter):
                kwargs.update(_lettered_fields([rest.pop(0)], {letter: key}))
        if rest:
            raise KeyError(rest[0])
    except (KeyError, ValueError):
        raise ValueError(f"not a model name: {name!r} (expected e.g. {PCAAutoencoderConfig().name})") from None
    return PCAAutoencoderConfig(**kwargs)


class TileProjection(nn.Module):
    """A tile's projection on k axes (or, transposed, back from them), in float32 even under autocast:
    rounding 3,072 products to bf16 would cost more than the refiner wins. The weights are the starting
    axes plus a learned change scaled by STEP, so one learning rate that suits the refiner moves the
    axes 20 times more slowly (at the refiner's rate Adam would wreck the components in a few steps)."""

    STEP = 0.05

    def __init__(self, components: int, channels: int, tile: int, transposed: bool):
        super().__init__()
        self.tile, self.transposed = tile, transposed
        shape = (components, channels, tile, tile)
        self.register_buffer("axes", torch.zeros(shape))  # PCAAutoencoder.fit_pca sets them; buffers: saved with the weights
        self.register_buffer("mean", torch.full((channels,), 0.5))  # per channel: stays convolutional
        self.change = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.axes if self.change is None else self.axes + self.STEP * self.change
        mean = self.mean.view(1, -1, 1, 1)
        with torch.autocast(x.device.type, enabled=False):
            if self.transposed:
                return nn.functional.conv_transpose2d(x.float(), weight, stride=self.tile) + mean
            return nn.functional.conv2d(x.float() - mean, weight, stride=self.tile)

    @torch.no_grad()
    def fold(self) -> None:
        """Add the learned change into the axes, for inference: an exported file then holds one weight tensor, not two."""
        self.axes.add_(self.STEP * self.change)
        self.change = None


def for_inference(model: nn.Module) -> nn.Module:
    """A copy of `model` to export: every tile projection's change folded into its axes, which halves a
    PCA-started autoencoder's ONNX files; other models come back as copies of themselves."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, TileProjection):
            module.fold()
    return model


class Refiner(nn.Module):
    """A residual U-Net that adds a correction to the projected-back image; it starts as zero."""

    def __init__(self, width: int, levels: int, channels: int = 3):
        super().__init__()
        ch = [width * 2**i for i in range(levels)]
        self.first = nn.Conv2d(channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(ResidualBlock(c) for c in ch[:-1])
        self.pool = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1) for i in range(levels - 1))
        self.middle = nn.Sequential(ResidualBlock(ch[-1]), ResidualBlock(ch[-1]))
        self.up = nn.ModuleList(nn.Conv2d(ch[i + 1], ch[i], 3, padding=1) for i in range(levels - 1))
        self.up_blocks = nn.ModuleList(ResidualBlock(c) for c in ch[:-1])
        self.last = nn.Conv2d(ch[0], channels, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, skips = self.first(image), []
        for block, pool in zip(self.down, self.pool):
            h = block(h)
            skips.append(h)
            h = pool(torch.relu(h))
        h = self.middle(h)
        for i in reversed(range(len(self.up))):
            h = self.up_blocks[i](self.up[i](nn.functional.interpolate(torch.relu(h), scale_factor=2, mode="nearest")) + skips[i])
        return self.last(torch.relu(h))


class PCAEncoder(nn.Module):
    """The tile projection plus a CNN's correction to it, zero at the start, so the untrained encoder is
    still PCA's: three stride-2 levels (width, 2x, 4x, 8x channels) down to an eighth of the tile, then one
    convolution per tile onto the k latent values. With a linear encoder the latent can only hold what
    a projection keeps; this lets it spend its values on what the refiner cannot guess."""

    def __init__(self, config: PCAAutoencoderConfig):
        super().__init__()
        self.projection = TileProjection(config.components, config.in_channels, config.tile, transposed=False)
        ch = [config.encoder_width * 2**i for i in range(4)]
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, ch[0], 3, padding=1)]
        for i in range(3):
            layers += [ResidualBlock(ch[i]), nn.ReLU(), nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1)]
        last = nn.Conv2d(ch[-1], config.components, config.tile // 8, stride=config.tile // 8)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.correction = nn.Sequential(*layers, ResidualBlock(ch[-1]), nn.ReLU(), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The CNN sees pixels centred as the projection does, so its input is the same whatever the mean.
        return self.projection(x) + self.correction(x - self.projection.mean.view(1, -1, 1, 1))


class PCADecoder(nn.Module):
    def __init__(self, config: PCAAutoencoderConfig):
        super().__init__()
        self.project_back = TileProjection(config.components, config.out_channels, config.tile, transposed=True)
        self.refiner = Refiner(config.width, config.levels, config.out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = self.project_back(z)
        return image + self.refiner(image)


class PCAAutoencoder(nn.Module):
    """Outputs pixels, not logits: `decode` clamps them to [0, 1] in eval mode only, since in training
    a clamp would stop the gradient of every pixel outside the range."""

    output_is_logits = False

    def __init__(self, config: PCAAutoencoderConfig = PCAAutoencoderConfig()):
        super().__init__()
        self.config = config
        # Without an encoder CNN, the projection itself (its weights' names as in the runs trained before the CNN).
        self.encoder = (PCAEncoder(config) if config.encoder_width
                        else TileProjection(config.components, config.in_channels, config.tile, transposed=False))
        self.decoder = PCADecoder(config)

    @torch.no_grad()
    def fit_pca(self, images) -> None:
        """Start from PCA of uint8 (N, 3, H, W) training images, cut into tiles (centred per channel)."""
        t, k = self.config.tile, self.config.components
        x = torch.as_tensor(images)
        tiles = x.unfold(2, t, t).unfold(3, t, t).permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], t, t)
        if len(tiles) <= k:
            raise ValueError(f"{len(tiles)} training tiles are too few for the model's {k} components")
        # The covariance's eigenvectors, summed a chunk at a time: (3072 x 3072) memory whatever the data.
        mean = tiles.double().mean((0, 2, 3)) / 255
        cov = torch.zeros(tiles[0].numel(), tiles[0].numel(), dtype=torch.float64)
        for chunk in tiles.split(4096):
            centred = (chunk.double() / 255 - mean.view(1, -1, 1, 1)).flatten(1)
            cov += centred.T @ centred
        _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues: the last columns are the strongest axes
        axes = vectors[:, -k:].flip(1).T.reshape(k, *tiles.shape[1:])
        for projection in (m for m in self.modules() if isinstance(m, TileProjection)):  # encoder's and decoder's
            projection.axes.copy_(axes)
            projection.mean.copy_(mean)
            projection.change.zero_()

    def load_weights(self, weights: dict) -> None:
        """This network's weights, or those of `config.grows_from`: then the projection moves under the encoder CNN
        and the CNN keeps its zero-started correction, so the model starts as exactly the one it grew from
        (a trained decoder's best latents are ~0.6 dB above its projection's: the CNN is there to find them)."""
        if self.config.encoder_width and "encoder.axes" in weights:
            weights = {re.sub(r"^encoder\.", "encoder.projection.", k): v for k, v in weights.items()}
            weights.update((k, v) for k, v in self.state_dict().items() if k.startswith("encoder.correction."))
        self.load_state_dict(weights)

    encode = ConvAutoencoder.encode

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        image = self.decoder(z)
        return image if self.training else image.clamp(0, 1)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the clamped output, for the BCE the metrics report (training uses pixels: never BCE)."""
        return torch.logit(self.decoder(z).float().clamp(0, 1), eps=1e-6)

    forward = ConvAutoencoder.forward
    num_parameters = ConvAutoencoder.num_parameters


MODEL_CONFIGS = (AutoencoderConfig, ResidualAutoencoderConfig, PCAAutoencoderConfig)
_NAME_PARSERS = {"rae": residual_config_from_name, "pae": pca_config_from_name}
_MODELS = {AutoencoderConfig: ConvAutoencoder, ResidualAutoencoderConfig: ResidualAutoencoder, PCAAutoencoderConfig: PCAAutoencoder}


def any_config_from_name(name: str):
    """A study (cae_...), residual (rae_...) or PCA-started (pae_...) autoencoder configuration from its name."""
    return _NAME_PARSERS.get(name.split("_")[0], config_from_name)(name)


def build_autoencoder(config) -> nn.Module:
    return _MODELS[type(config)](config)


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
