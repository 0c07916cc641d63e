"""Colorization: predict colour from a gray channel, trained with the same loop as the autoencoders.

Two networks and two losses:

- arch `cae`:  the study's setting, its best autoencoder (a sweep configuration) with 1 input channel;
- arch `unet`: a small U-Net; skip connections carry the gray image's detail around the bottleneck, so
               the network only has to add colour;
- loss `l2`:   regression of the encoding's colour targets (the study's choice). It predicts the mean of
               the plausible colours, which for most objects is a gray-brown: the sepia look;
- loss `classification` (Lab only): Zhang, Isola & Efros (2016). ab is quantised into bins of 10; each
  pixel's true bin is a class; the cross-entropy is weighted against the frequency of the bins in the
  training data (rare, saturated colours weigh more) and decoded with the annealed mean (softmax at
  temperature 0.38, then the expected ab), which keeps colours vivid without the noise of the mode.
  An optional saturation then scales each pixel's ab away from the image's mean ab: to first order it is
  the colour change that raises colourfulness (a spread of chroma) at the least squared error.

`Colorizer.forward(gray) -> rgb` does everything, decoding included, so export gets one graph.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.color import colourfulness, get_encoding, is_grayscale, luma, with_luma
from training.data import Split
from training.metrics import image_means, image_sums, per_image_mse, with_colourfulness_ratio
from training.model import ConvAutoencoder, config_from_name
from training.train import autocast

AB_RANGE = 110  # |a|, |b| of sRGB colours stay within about 110 (the grid of Zhang et al.)
METRICS = ("loss", "psnr", "ssim", "colourfulness_ratio")
DECODING_PARAMETERS = ("temperature", "prior_correction", "saturation")  # ABBins' decoding, in set_decoding's order


@dataclass(frozen=True)
class ColorizerConfig:
    encoding: str = "lab"  # ycbcr | ycbcr_centred | ratio | difference | rgb | lab
    arch: str = "unet"  # unet | cae
    loss: str = "classification"  # classification (lab only) | l2
    width: int = 32  # U-Net channels at full resolution (x2, x4 below)
    global_context: bool = False  # U-Net: fuse the image's mean bottleneck features into every position (Iizuka et al.)
    cae: str = "cae_l5_ch4_k3_s1"  # for arch cae: the sweep's best configuration
    bin_size: int = 10  # ab units per quantisation bin
    temperature: float = 0.38  # annealed mean; 1 = the mean, -> 0 = the mode
    prior_correction: float = 0.0  # at decoding, remove this share (0..1) of the rebalancing's pull to rare colours
    saturation: float = 1.0  # at decoding, scale ab's spread about the image's mean ab (1 = as predicted)
    rebalance: float = 0.5  # lambda: mix of the smoothed empirical bin distribution and uniform

    def __post_init__(self):
        get_encoding(self.encoding)
        if self.arch not in ("unet", "cae"):
            raise ValueError(f"arch must be unet or cae, got {self.arch!r}")
        if self.loss not in ("l2", "classification"):
            raise ValueError(f"loss must be l2 or classification, got {self.loss!r}")
        if self.loss == "classification" and self.encoding != "lab":
            raise ValueError("the classification loss quantises Lab's ab plane: use encoding lab")
        if self.arch == "cae":
            config_from_name(self.cae)

    @property
    def name(self) -> str:
        arch = f"unet{self.width}{'g' if self.global_context else ''}" if self.arch == "unet" else self.cae
        return f"color_{self.encoding}_{arch}_{self.loss}"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class GlobalFusion(nn.Module):
    """Iizuka, Simo-Serra & Ishikawa (2016)'s fusion layer: the image's mean feature vector, through a small
    MLP, joins every position's features. The bottleneck's receptive field (about 30 pixels) does not span a
    32x32 image, let alone a photo at working resolution; colour often depends on the scene (sky, sea, grass)."""

    def __init__(self, channels: int):
        super().__init__()
        self.summary = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.summary(x.mean(dim=(2, 3)))[:, :, None, None]  # (B, C, 1, 1): any H, W
        return self.fuse(torch.cat([x, g.expand_as(x)], 1))


class UNet(nn.Module):
    """(B, cin, H, W) -> (B, cout, H, W); H and W multiples of 4."""

    def __init__(self, cin: int, cout: int, width: int = 32, global_context: bool = False):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(cin, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.context = GlobalFusion(4 * w) if global_context else nn.Identity()
        self.dec2, self.dec1 = _block(4 * w + 2 * w, 2 * w), _block(2 * w + w, w)
        self.head = nn.Conv2d(w, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)  # (B, w, H, W)
        e2 = self.enc2(F.max_pool2d(e1, 2))  # (B, 2w, H/2, W/2)
        e3 = self.context(self.enc3(F.max_pool2d(e2, 2)))  # (B, 4w, H/4, W/4)
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.head(d1)


class ABBins(nn.Module):
    """The quantised ab plane: bin centres (Q, 2) in ab units and their rebalancing weights (Q,)."""

    def __init__(self, centres: torch.Tensor, weights: torch.Tensor, temperature: float, bin_size: int, prior_correction: float = 0.0,
                 saturation: float = 1.0):
        super().__init__()
        self.register_buffer("centres", centres.float())
        self.register_buffer("weights", weights.float())
        self.temperature, self.bin_size, self.prior_correction, self.saturation = temperature, bin_size, prior_correction, saturation
        # Every cell of the ab grid -> its nearest occupied bin, so `nearest` is a lookup, not a search.
        side = 2 * AB_RANGE // bin_size + 1
        cells = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).view(-1, 2)
        self.register_buffer("cell_to_bin", torch.cdist(cells.float() * bin_size - AB_RANGE, self.centres).argmin(1), persistent=False)
        self.side = side

    @classmethod
    def fit(cls, ab: torch.Tensor, bin_size: int, rebalance: float, temperature: float, sigma: float = 5.0) -> "ABBins":
        """From ab samples (N, 2): the bins that occur, weighted (1-l) p~ + l/Q inverted, E_p[w] = 1."""
        side = 2 * AB_RANGE // bin_size + 1
        grid = ((ab.clamp(-AB_RANGE, AB_RANGE) + AB_RANGE) / bin_size).round().long()  # (N, 2) cells
        counts = torch.bincount(grid[:, 0] * side + grid[:, 1], minlength=side * side).double().view(side, side)
        p = counts / counts.sum()
        # Smooth the empirical distribution with a Gaussian (sigma in ab units), as Zhang et al. do.
        r = int(3 * sigma / bin_size) + 1
        t = torch.arange(-r, r + 1, dtype=torch.float64) * bin_size
        g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
        smooth = F.conv2d(p[None, None], (g / g.sum())[None, None], padding=r)[0, 0]
        occupied = counts > 0
        q = int(occupied.sum())
        p_used, smooth_used = p[occupied], smooth[occupied] / smooth[occupied].sum()
        weights = 1 / ((1 - rebalance) * smooth_used + rebalance / q)
        weights = weights / (p_used * weights).sum()
        cells = occupied.nonzero().double()
        centres = cells * bin_size - AB_RANGE
        return cls(centres, weights, temperature, bin_size)  # prior_correction is set by Colorizer

    @property
    def count(self) -> int:
        return self.centres.shape[0]

    def nearest(self, ab: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, H, W) index of the closest bin centre."""
        cell = ((ab.clamp(-AB_RANGE, AB_RANGE) + AB_RANGE) / self.bin_size).round().long()  # (B, 2, H, W)
        return self.cell_to_bin[cell[:, 0] * self.side + cell[:, 1]]

    def annealed_mean(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, Q, H, W) logits -> (B, 2, H, W) ab: E[ab] under softmax(logits / T).

        The weighted loss learns roughly w(q) p(q | gray) instead of p(q | gray); subtracting
        prior_correction * log w(q) from the logits (logit adjustment) takes that share of the bias back out.
        """
        logits = logits.float() - self.prior_correction * self.weights.log().view(1, -1, 1, 1)
        probs = torch.softmax(logits / self.temperature, dim=1)
        return torch.einsum("bqhw,qc->bchw", probs, self.centres)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, Q, H, W) logits -> (B, 2, H, W) ab: the annealed mean, its spread about the image's mean ab
        times `saturation`. Unlike the annealed mean, saturation != 1 makes every output depend on the whole image."""
        ab = self.annealed_mean(logits)
        if self.saturation == 1:
            return ab
        mean = ab.mean((2, 3), keepdim=True)
        return mean + self.saturation * (ab - mean)

    @property
    def decoding(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in DECODING_PARAMETERS}

    def set_decoding(self, temperature: float | None = None, prior_correction: float | None = None, saturation: float | None = None) -> None:
        """Set the decoding parameters given (None keeps the current one)."""
        for name, value in zip(DECODING_PARAMETERS, (temperature, prior_correction, saturation)):
            if value is not None:
                setattr(self, name, float(value))


class Colorizer(nn.Module):
    """gray (B, 1, H, W) in [0, 1] (the encoding's gray channel) -> RGB (B, 3, H, W) in [0, 1]."""

    def __init__(self, config: ColorizerConfig, bins: ABBins | None = None):
        super().__init__()
        self.config = config
        self.encoding = get_encoding(config.encoding)
        self.bins = bins
        if bins is not None:
            bins.set_decoding(config.temperature, config.prior_correction, config.saturation)
        outputs = bins.count if config.loss == "classification" else self.encoding.target_channels
        if config.arch == "unet":
            self.net = UNet(1, outputs, config.width, config.global_context)
        else:
            self.net = ConvAutoencoder(replace(config_from_name(config.cae), in_channels=1, out_channels=outputs))

    def raw(self, gray: torch.Tensor) -> torch.Tensor:
        """The network's output: target logits (l2) or bin logits (classification)."""
        return self.net(gray) if isinstance(self.net, UNet) else self.net.decode_logits(self.net.encode(gray))

    def target(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw output -> the encoding's colour target in [0, 1]."""
        if self.bins is None:
            return torch.sigmoid(raw.float())
        return (self.bins.decode(raw) + 128) / 256

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.encoding.decode(gray, self.target(self.raw(gray)))

    def gray_from_luma(self, y: torch.Tensor) -> torch.Tensor:
        """Luma Y (B, 1, H, W) -> the gray channel the exported graph and so the service feed the network: the
        encoding's gray of the gray image R = G = B = Y (for Lab not the colour image's L, which training sees)."""
        return self.encoding.encode(y.expand(-1, 3, -1, -1))[0]

    def colorize_luma(self, y: torch.Tensor) -> torch.Tensor:
        """Luma Y (B, 1, H, W) -> RGB as the exported graph and so the service compute it: the network fed
        `gray_from_luma(y)`, decoded, then given back the input's luma with its predicted chroma kept. The
        gray input is the one thing known exactly; the Lab decoding alone shifts it (L is not BT.601 luma),
        which costs PSNR and is what the service's photo path already undoes (lay_chroma_under_luma)."""
        return with_luma(self(self.gray_from_luma(y)), y)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _loss(model: Colorizer, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 on the encoding's targets, or the rebalanced cross-entropy over ab bins."""
    if model.bins is None:
        return F.mse_loss(torch.sigmoid(raw.float()), target)
    classes = model.bins.nearest(target * 256 - 128)
    ce = F.cross_entropy(raw.float(), classes, reduction="none")
    return (ce * model.bins.weights[classes]).mean()


# The served objective's hinge, in dB of mean per-image PSNR per unit of colourfulness ratio below the floor. Measured,
# the decodings trade about 4 dB per unit near 80% (results/colorization/cos24w64gf): the hinge must cost more than
# the PSNR that giving up colour would win, or the floor would not hold.
COLOUR_HINGE_DB = 30.0
LOG_MSE_FLOOR = 1e-6  # keeps a near-perfect image's log MSE (and its gradient) finite


def served_output(model: Colorizer, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`Colorizer.colorize_luma(luma(x))` with the network under autocast to `dtype`: the output as served."""
    y = luma(x)
    gray = model.gray_from_luma(y)
    with autocast(x.device, dtype):
        raw = model.raw(gray)
    return with_luma(model.encoding.decode(gray, model.target(raw.float())), y)


def log_mse(rgb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) each image's 10 log10 MSE: minus its PSNR, kept finite for near-perfect images."""
    return 10 * torch.log10(per_image_mse(rgb, x) + LOG_MSE_FLOOR)


def served_loss(model: Colorizer, x: torch.Tensor, dtype: torch.dtype, min_colourfulness: float = 0.0) -> torch.Tensor:
    """The metric the colorizer is judged on, as a loss: its output as served (`served_output`: fed luma Y, decoded
    at the config's decoding, given back Y) scored by each image's log MSE, averaged (minus the mean per-image PSNR),
    plus COLOUR_HINGE_DB times the shortfall of the batch's colourfulness below `min_colourfulness` of the truth's.

    Why: the classification loss learns a distribution, and the decoding then trades PSNR for colour along one
    curve (results/colorization). Fine-tuned on this, the network moves that curve (results/colorization/served80)."""
    rgb = served_output(model, x, dtype)
    loss = log_mse(rgb, x).mean()
    if min_colourfulness:
        ratio = colourfulness(rgb).sum() / colourfulness(x).sum().clamp_min(1e-6)
        loss = loss + COLOUR_HINGE_DB * torch.relu(min_colourfulness - ratio)
    return loss


def colour_indices(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`indices` without the grayscale images (nothing to learn or score there)."""
    return indices[~is_grayscale(images[indices])]


class ColorizationTask:
    """training.train's task protocol for colorizers (see ReconstructionTask)."""

    kind = "colorization"
    metric_names = METRICS

    def __init__(self, config: ColorizerConfig, loss: str = "bce", min_colourfulness: float = 0.0):
        # loss: bce = the network's own (training.config.TrainConfig.loss), psnr = served_loss.
        if loss not in ("bce", "psnr"):
            raise ValueError(f"a colorizer trains with loss bce (its network's own) or psnr (its output as served), not {loss!r}")
        if min_colourfulness and loss != "psnr":
            raise ValueError("min_colourfulness holds for loss psnr (the output as served) only")
        self.config, self.name = config, config.name
        self.served, self.min_colourfulness = loss == "psnr", min_colourfulness
        self.encoding = get_encoding(config.encoding)

    def select(self, images: np.ndarray, split: Split) -> Split:
        return Split(*(colour_indices(images, s) for s in (split.train, split.val, split.test)), seed=split.seed, fraction=split.fraction)

    def build(self, images: np.ndarray, train_indices: np.ndarray, weights: dict | None = None) -> Colorizer:
        if weights is not None:  # a fine-tuning run: the bins come with the weights it starts from
            return colorizer_from_weights(self.config, weights).train()
        bins = None
        if self.config.loss == "classification":
            # Bin statistics from (up to) 5,000 training images: plenty for a 22x22 grid.
            sample = np.sort(train_indices[:5000])
            rgb = torch.from_numpy(images[sample]).float() / 255
            ab = torch.cat([self.encoding.encode(chunk)[1] for chunk in rgb.split(1000)]) * 256 - 128
            bins = ABBins.fit(ab.permute(0, 2, 3, 1).reshape(-1, 2), self.config.bin_size, self.config.rebalance, self.config.temperature)
        return Colorizer(self.config, bins)

    def loss(self, model: Colorizer, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.served:
            return served_loss(model, x, dtype, self.min_colourfulness)
        gray, target = self.encoding.encode(x)  # fp32: colour conversions stay out of autocast
        with autocast(x.device, dtype):
            raw = model.raw(gray)
        return _loss(model, raw, target)

    def batch_sums(self, model: Colorizer, x: torch.Tensor) -> dict[str, float]:
        if self.served:  # scored as it is trained and served: fed luma Y, given it back
            rgb = served_output(model, x)
            return {"loss": log_mse(rgb, x).sum().item(), **image_sums(rgb, x, colour=True)}
        gray, target = self.encoding.encode(x)
        raw = model.raw(gray)  # one forward pass for both the loss and the colorization
        rgb = self.encoding.decode(gray, model.target(raw)).float()
        return {"loss": _loss(model, raw, target).item() * x.shape[0], **image_sums(rgb, x, colour=True)}

    def finish(self, means: dict[str, float]) -> dict[str, float]:
        return with_colourfulness_ratio(means)

    def summary(self, model: Colorizer) -> dict:
        return {"parameters": model.num_parameters(), "bins": model.bins.count if model.bins is not None else 0}


def colorizer_from_weights(config: ColorizerConfig, weights: dict) -> Colorizer:
    """A trained colorizer from its config and state dict (training.run.Run.model)."""
    bins = None
    if config.loss == "classification":
        bins = ABBins(weights["bins.centres"], weights["bins.weights"], config.temperature, config.bin_size)
    model = Colorizer(config, bins)
    model.load_state_dict(weights)
    return model.eval()


@torch.no_grad()
def grayscale_baseline(images: np.ndarray, indices: np.ndarray) -> dict:
    """The trivial colorizer: output the luma image unchanged, on the same images and metrics."""
    x = torch.from_numpy(images[indices]).float() / 255
    return image_means([(luma(x).expand(-1, 3, -1, -1), x)], colour=True)
