"""Training throughput of the study's first model: the project's training step against a plain PyTorch loop.

    python benchmarks/train_throughput.py [--images 20000] [--rounds 3]

The plain loop is what most notebooks write: the model as an nn.Sequential in the study's layer order,
a DataLoader over a float tensor dataset, batch 64, eager fp32, Adam, BCE on the sigmoid output. The
project's step is `training.train.train_step` fed by `training.train.batches`, exactly as `cae train`
runs it (uint8 images on the device, batch 256, channels-last, bf16 autocast where the CPU has it, fused
Adam, and training.model.ConvAutoencoder, which computes the same function with cheaper layers: pooling
before the activation, upsampling + convolution as one sub-pixel convolution). Both run in this
process, alternating, so the printed ratio compares them under the same machine load; absolute images/s
on a shared machine are noisy, the ratio much less so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from training.data import SHARED_CIFAR_JPEG, load_images
from training.model import FIRST_MODEL, ConvAutoencoder
from training.train import ReconstructionTask, batches, images_on_device, make_optimizer, resolve_precision, train_step

# Multiply-adds of the first model per 32x32 image, forward: sum over convs of H*W*k*k*cin*cout.
FORWARD_MACS = 32 * 32 * 9 * 3 * 8 + 16 * 16 * 9 * 8 * 12 + 8 * 8 * 9 * 12 * 16 + 16 * 16 * 9 * 16 * 12 + 32 * 32 * 9 * 12 * 3
TRAIN_FLOP = 3 * 2 * FORWARD_MACS  # forward + backward (about twice the forward)


def notebook_model() -> torch.nn.Module:
    """The first model as a notebook writes it, in the study's layer order (conv, ReLU, pool)."""
    def conv(cin, cout):
        return torch.nn.Conv2d(cin, cout, 3, padding=1)
    return torch.nn.Sequential(
        conv(3, 8), torch.nn.ReLU(), torch.nn.MaxPool2d(2), conv(8, 12), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        conv(12, 16), torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2), conv(16, 12), torch.nn.ReLU(),
        torch.nn.Upsample(scale_factor=2), conv(12, 3), torch.nn.Sigmoid())


def plain_loop(images_u8: np.ndarray, count: int) -> float:
    torch.manual_seed(0)
    model = notebook_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    dataset = TensorDataset(torch.from_numpy(images_u8[:count]).float() / 255)
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    start = time.perf_counter()
    for (x,) in loader:
        loss = F.binary_cross_entropy(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return count / (time.perf_counter() - start)


def project_loop(images_u8: np.ndarray, count: int, batch_size: int, precision: str) -> float:
    torch.manual_seed(0)
    device = torch.device("cpu")
    dtype = resolve_precision(precision, device)
    model = ConvAutoencoder(FIRST_MODEL).to(memory_format=torch.channels_last)
    optimizer = make_optimizer("adam", model, 2e-3)
    images = images_on_device(images_u8, device)
    order = np.random.default_rng(0).permutation(count)
    task = ReconstructionTask(FIRST_MODEL, "bce")
    for x in batches(images, order[: 2 * batch_size], batch_size, device):  # warm-up: kernel selection
        train_step(task, model, optimizer, x, dtype)
    start = time.perf_counter()
    for x in batches(images, order, batch_size, device):
        train_step(task, model, optimizer, x, dtype)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="images per measurement (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    args = parser.parse_args()
    data = load_images(SHARED_CIFAR_JPEG if SHARED_CIFAR_JPEG.exists() else f"fake:{args.images}")
    count = min(args.images, len(data))
    print(f"data: {data.source} ({count} images per measurement), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision auto -> {resolve_precision('auto', torch.device('cpu'))}")
    variants = {
        "plain loop (DataLoader, batch 64, fp32)": lambda: plain_loop(data.images, count),
        "project step, batch 256, fp32": lambda: project_loop(data.images, count, 256, "fp32"),
        "project step, batch 256, auto precision (cae train)": lambda: project_loop(data.images, count, 256, "auto"),
    }
    measured = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            measured[name].append(run())
    base = statistics.median(measured["plain loop (DataLoader, batch 64, fp32)"])
    for name, values in measured.items():
        rate = statistics.median(values)
        print(f"{name:55s} {rate:9.0f} images/s  {rate / base:5.2f}x  ({rate * TRAIN_FLOP / 1e9:5.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
