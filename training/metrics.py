"""Reconstruction metrics, each a mean over images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

METRIC_NAMES = ("bce", "mse", "psnr", "ssim")


def per_image_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B,) PSNR in dB for data range 1; the mean of these is what papers report."""
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def batch_sums(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Sums over the batch's images of each metric's per-image value, so batches of any size add up."""
    logits, target = logits.float(), target.float()
    pred = torch.sigmoid(logits)
    n = target.shape[0]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    mse = (pred - target).pow(2).flatten(1).mean(1)
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    return {
        "bce": bce.sum().item(),
        "mse": mse.sum().item(),
        "psnr": per_image_psnr(pred, target).sum().item(),
        "ssim": ssim.sum().item() if ssim.ndim else ssim.item() * n,
    }
