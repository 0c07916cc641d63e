"""Training throughput on any device, the GPU training issue's table in one run, and the sweep's wall time.

    python benchmarks/gpu_train.py --device cuda --out results/training/gpu_train.json
    python benchmarks/gpu_train.py --device cuda --sweep --workers 6    # also the 36-model sweep, full split
    python benchmarks/gpu_train.py --device cuda --sweep --workers 6 --sweep-out results/sweep_full  # kept, with figures

The study's first model on real images (the shared CIFAR-10 copy, else synthetic), every variant in this
process, alternating over --rounds, medians reported:
- notebook loop: a DataLoader over float CPU tensors, batch 64, fp32, each batch copied to the device;
- plain loop, data on the device, batch 256 and 1024, fp32, the study's layer order (nn.Sequential);
- the project's step as `cae train` runs it on the device (training.step's plan: on CUDA fp32/TF32 and a
  CUDA graph per batch shape), batch 256 and 1024, the same without the graph (eager), and with bf16 autocast.
Ratios: the project's step against the plain loop at the same batch (the issue's targets: >= 2x at 256,
>= 1.5x at 1024). --sweep then times `cae sweep --fraction 1.0` at the study's settings (batch 32, Adam
1e-3, 10 epochs) with --workers trials at once on the device, in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import write_results  # noqa: E402
from train_throughput import notebook_model  # noqa: E402

from training.data import SHARED_CIFAR_JPEG, load_images  # noqa: E402
from training.model import FIRST_MODEL, ConvAutoencoder  # noqa: E402
from training.step import GraphedStep, StepPlan  # noqa: E402
from training.train import ReconstructionTask, batches, images_on_device, make_optimizer, resolve_precision, train_step  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(model, optimizer, x: torch.Tensor) -> None:
    """One eager fp32 step as a notebook writes it: BCE against the input, backward, Adam."""
    loss = F.binary_cross_entropy(model(x), x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def notebook_loop(images_u8: np.ndarray, device: torch.device) -> float:
    torch.manual_seed(0)
    model = notebook_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(torch.from_numpy(images_u8).float() / 255), batch_size=64, shuffle=True)
    sync(device)
    start = time.perf_counter()
    for (x,) in loader:
        plain_step(model, optimizer, x.to(device))
    sync(device)
    return len(images_u8) / (time.perf_counter() - start)


def plain_loop(images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Data already on the device as float, the study's layer order, fp32, Adam."""
    torch.manual_seed(0)
    model = notebook_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(images), device=device)
    for start in range(0, 2 * batch_size, batch_size):  # warm-up: kernel selection
        x = images[order[start:start + batch_size]]
        F.binary_cross_entropy(model(x), x).backward()
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        plain_step(model, optimizer, images[order[i:i + batch_size]])
    sync(device)
    return len(images) / (time.perf_counter() - start)


def project_loop(images_u8: np.ndarray, batch_size: int, device: torch.device, graphs: bool, precision: str = "auto") -> float:
    """`cae train`'s step on this device (training.step's plan), optionally without the CUDA graph."""
    torch.manual_seed(0)
    plan = StepPlan.for_device(device, "adam", graphs=graphs)
    dtype = resolve_precision(precision, device)
    model = plan.prepare(ConvAutoencoder(FIRST_MODEL).to(device))
    optimizer = make_optimizer("adam", model, 2e-3, plan)
    task = ReconstructionTask(FIRST_MODEL, "bce")
    step = lambda x: train_step(task, model, optimizer, x, dtype)  # noqa: E731
    step = GraphedStep(step, model, optimizer) if plan.cuda_graph else step
    images = images_on_device(images_u8, device)
    order = np.random.default_rng(0).permutation(len(images_u8))
    for x in batches(images, order[: 2 * batch_size], batch_size, device, plan.channels_last):  # warm-up (and capture)
        step(x)
    sync(device)
    start = time.perf_counter()
    for x in batches(images, order, batch_size, device, plan.channels_last):
        step(x)
    sync(device)
    return len(images_u8) / (time.perf_counter() - start)


def sweep_wall_time(device: str, workers: int, data: str | None, out: str | None = None) -> dict:
    """`cae sweep` at the study's settings on the full split, timed; into `out` (kept, resumable) or a
    temporary folder. Figures are drawn after the clock stops (`cae figures --sweep OUT`)."""
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="cae-gpu-sweep-"))
    cmd = [sys.executable, "-m", "cae", "sweep", "--fraction", "1.0", "--device", device, "--workers", str(workers),
           "--out", str(out), "--quiet", "--no-figures"] + (["--data", data] if data else [])
    store = out / "results.jsonl"
    before = len(store.read_text().splitlines()) if store.exists() else 0  # a resumed sweep times only the rest
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    trials = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    return {"command": " ".join(cmd[1:]), "exit": proc.returncode, "seconds": round(seconds, 1), "trials": len(trials),
            "trials_timed": len(trials) - before,
            "folder": str(out), "stderr_tail": proc.stderr[-1000:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=40000, help="images per measurement (default 40000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=None, help="image source (default: the shared CIFAR-10 copy, else fake)")
    parser.add_argument("--sweep", action="store_true", help="also time the 36-model sweep on the full split")
    parser.add_argument("--workers", type=int, default=4, help="--sweep: trials at once (default 4)")
    parser.add_argument("--sweep-out", default=None, help="--sweep: keep the sweep in this folder, with its figures "
                        "(default: a temporary folder, no figures)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    source = args.data or (str(SHARED_CIFAR_JPEG) if SHARED_CIFAR_JPEG.exists() else f"fake:{args.images}")
    data = load_images(source)
    images_u8 = data.images[: args.images]
    on_device = torch.from_numpy(images_u8).to(device).float() / 255
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {len(images_u8)} images of {data.source}, precision auto -> "
          f"{resolve_precision('auto', device)}", flush=True)
    variants = {
        "notebook loop: DataLoader, batch 64, fp32, copied per batch": lambda: notebook_loop(images_u8, device),
        "plain loop, data on device, batch 256, fp32": lambda: plain_loop(on_device, 256, device),
        "plain loop, data on device, batch 1024, fp32": lambda: plain_loop(on_device, 1024, device),
        "project step (cae train), batch 256": lambda: project_loop(images_u8, 256, device, graphs=True),
        "project step (cae train), batch 1024": lambda: project_loop(images_u8, 1024, device, graphs=True),
        "project step without CUDA graph, batch 256": lambda: project_loop(images_u8, 256, device, graphs=False),
        # Under a graph bf16's extra casts cost no launches: whether its smaller tensors then win is measured here.
        "project step, bf16 autocast, batch 256": lambda: project_loop(images_u8, 256, device, graphs=True, precision="bf16"),
        "project step, bf16 autocast, batch 1024": lambda: project_loop(images_u8, 1024, device, graphs=True, precision="bf16"),
    }
    measured: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for key, run in variants.items():
            measured[key].append(run())
    medians = {k: statistics.median(v) for k, v in measured.items()}
    base = medians["notebook loop: DataLoader, batch 64, fp32, copied per batch"]
    for key, rate in medians.items():
        print(f"{key:62s} {rate:10.0f} images/s  {rate / base:6.2f}x notebook", flush=True)
    ratios = {"b256_project_vs_plain": medians["project step (cae train), batch 256"] / medians["plain loop, data on device, batch 256, fp32"],
              "b1024_project_vs_plain": medians["project step (cae train), batch 1024"] / medians["plain loop, data on device, batch 1024, fp32"]}
    print(json.dumps({k: round(v, 3) for k, v in ratios.items()}))
    results = {"device": name, "torch": torch.__version__, "images": len(images_u8), "data": data.source,
               "images_per_second": medians, "ratios": ratios}
    write_results(args.out, results)  # the table is kept even if the sweep is cut short
    if args.sweep:
        results["sweep"] = sweep_wall_time(args.device, args.workers, args.data, args.sweep_out)
        if args.sweep_out and results["sweep"]["exit"] == 0:
            subprocess.run([sys.executable, "-m", "cae", "figures", "--sweep", args.sweep_out], cwd=ROOT, check=False)
        print(json.dumps(results["sweep"], indent=2))
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
