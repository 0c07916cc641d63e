"""Refining a latent against the decoder, without torch: Adam steps on the gradient graph that
export.gradient writes (latent, image -> gradient of sum of log MSE, each image's MSE).

The encoder's latent is where it starts, so zero steps is plain encoding and every step can only be
judged by the decoder it was refined for. Each image's loss is its own log-MSE, so a batch refines
each image as it would alone (Adam is per coordinate), and tiles can be batched freely.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Adam's defaults as torch.optim.Adam has them; lr measured on the pae family (training.headroom).
LEARNING_RATE = 0.01
BETAS = (0.9, 0.999)
EPS = 1e-8

Gradient = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def onnx_gradient(session) -> Gradient:
    """The gradient function of an onnxruntime session of a gradient graph."""
    def gradient(latent: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grad, mse = session.run(None, {"latent": latent, "image": image})
        return grad, mse
    return gradient


def adam_steps(gradient: Gradient, latent: np.ndarray, image: np.ndarray, steps: int, lr: float = LEARNING_RATE):
    """Yield (t, latent) after each of `steps` Adam steps from `latent` (float32, N x k x h x w) towards the
    latent whose decoding is closest to `image` (float32 in [0, 1]); `latent` itself is left as it was, and
    each yielded array is updated in place by the next step."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    z = np.array(latent, dtype=np.float32, copy=True)
    image = np.ascontiguousarray(image, dtype=np.float32)
    m, v = np.zeros_like(z), np.zeros_like(z)
    b1, b2 = BETAS
    for t in range(1, steps + 1):
        g, _ = gradient(z, image)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = lr / (1 - b1**t)
        z -= step * m / (np.sqrt(v / (1 - b2**t)) + EPS)
        yield t, z


def refine_latents(gradient: Gradient, latent: np.ndarray, image: np.ndarray, steps: int,
                   lr: float = LEARNING_RATE) -> np.ndarray:
    """The latent after `steps` Adam steps (adam_steps); a new array, `latent` is left as it was."""
    z = np.array(latent, dtype=np.float32, copy=True)
    for _, z in adam_steps(gradient, latent, image, steps, lr):
        pass
    return z
