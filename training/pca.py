"""PCA, the linear baseline: k principal components are a latent of k values."""

from __future__ import annotations

import numpy as np
import torch

from training.metrics import per_image_psnr


class PCA:
    def __init__(self, train_images: np.ndarray):
        """Fit on uint8 (N, C, H, W) images, flattened to N x (C*H*W) vectors in [0, 1]."""
        x = torch.from_numpy(train_images).flatten(1).double() / 255
        self.mean = x.mean(0)
        # Right singular vectors of the centred data are the principal axes, strongest first.
        _, _, self.components = torch.linalg.svd(x - self.mean, full_matrices=False)  # (r, D)

    @property
    def max_components(self) -> int:
        return self.components.shape[0]

    def evaluate(self, images: np.ndarray, ks: list[int]) -> list[dict]:
        """Mean BCE, MSE and per-image PSNR of reconstructions from the first k components, for each k."""
        x = torch.from_numpy(images).flatten(1).double() / 255
        coords = (x - self.mean) @ self.components.T  # (M, r)
        rows = []
        for k in ks:
            k_eff = min(k, self.max_components)
            recon = (self.mean + coords[:, :k_eff] @ self.components[:k_eff]).clamp(0, 1)
            p = recon.clamp(1e-7, 1 - 1e-7)
            bce = -(x * p.log() + (1 - x) * (1 - p).log()).mean()
            rows.append({"k": k, "bce": bce.item(), "mse": (recon - x).pow(2).mean().item(),
                         "psnr": per_image_psnr(recon, x).mean().item()})
        return rows
