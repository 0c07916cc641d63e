"""The study's sweep: train many configurations, persist each result as it lands, resume after a kill.

    <out>/results.jsonl   one line per finished trial (the store; appended and fsynced as trials finish)
    <out>/results.csv     the same as a table, rewritten after every trial
    <out>/results.md      a Markdown table sorted by test BCE
    <out>/trials/<name>/  each trial's run folder (checkpoint, metrics.csv, ...), so an interrupted
                          trial resumes from its last epoch too

A trial counts as finished only once its line is in results.jsonl with the same training settings;
a restarted sweep skips those and resumes the rest.

Backends: `local` (the default: in this process, or `workers` spawned processes) and `ray` (one Ray task
per trial on an existing cluster, each with its own CPUs/GPU). Either way only the driver writes the
store, as each trial's result comes back, so resume works the same: a finished trial is never run again.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from training.data import load_images
from training.model import AutoencoderConfig, sweep_configs
from training.config import SWEEP_DEFAULTS, TrainConfig
from training.run import known_fields
from training.train import train

TABLE_COLUMNS = ["name", "fewer_layers", "channel_factor", "kernel_size", "compression", "latent_size", "parameters",
                 "test_bce", "test_mse", "test_psnr", "test_ssim", "train_seconds"]
# Settings that do not change a trial's results, so a store made with other values still counts.
NEUTRAL_SETTINGS = {"device", "eval_batch_size"}


def _settings_key(config: TrainConfig | dict) -> dict:
    # A stored row is read as a checkpoint's settings are (training.run.known_fields): a setting added since
    # it was written takes its default, which that trial ran with; one removed since is dropped.
    if not isinstance(config, TrainConfig):
        config = TrainConfig(**known_fields(TrainConfig, config))
    return {k: v for k, v in asdict(config).items() if k not in NEUTRAL_SETTINGS}


def read_results(out: Path) -> list[dict]:
    """Finished trials from the store; a torn last line (killed mid-write) is ignored."""
    path = Path(out) / "results.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_result(out: Path, result: dict) -> None:
    path = Path(out) / "results.jsonl"
    # After a kill mid-append the file ends in a torn line: start on a fresh line, or this result is lost too.
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(result) + "\n")
        f.flush()
        os.fsync(f.fileno())


def table_row(result: dict) -> dict:
    m = result["model"]
    row = {"name": result["name"], **{k: m[k] for k in ("fewer_layers", "channel_factor", "kernel_size", "compression")},
           "latent_size": result["latent_size"], "parameters": result["parameters"],
           **{f"test_{k}": v for k, v in result["test"].items()}, "train_seconds": result["train_seconds"]}
    return {k: row[k] for k in TABLE_COLUMNS}


def write_tables(out: Path, results: list[dict]) -> None:
    rows = sorted((table_row(r) for r in results), key=lambda r: r["test_bce"])
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    def fmt(k, v):
        if isinstance(v, float):
            return f"{v:.2f}" if k in ("test_psnr", "train_seconds") else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(fmt(k, r[k]) for k in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _run_trial(model_config: AutoencoderConfig, config: TrainConfig, trial_dir: str, threads: int) -> dict:
    """One trial in a worker process (data comes from the on-disk cache, decoded once by the parent)."""
    import torch

    torch.set_num_threads(threads)
    return train(model_config, config, out=trial_dir, progress=False)


def _run_ray(todo, config: TrainConfig, out: Path, data, landed, address: str | None, cpus_per_trial: float,
             gpus_per_trial: float) -> None:
    """Each trial a Ray task; results come back to this driver, which stores them as they land."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray backend needs Ray: pip install -e '.[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        threads = max(1, int(cpus_per_trial))
        remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=2)(_run_ray_trial)
        # The decoded images go to the object store once; workers need neither the data file nor its cache.
        data_ref = ray.put(data)
        pending = {remote.remote(c, config, str(out / "trials" / c.name), threads, data_ref): c for c in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                pending.pop(ref)
                landed(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()


def _run_ray_trial(model_config, config: TrainConfig, trial_dir: str, threads: int, data) -> dict:
    import torch

    torch.set_num_threads(threads)
    # The trial folder is on the worker's disk (shared with the driver on one machine or a shared
    # filesystem, which also lets a re-run trial resume from its last epoch).
    return train(model_config, config, out=trial_dir, data=data, progress=False)


def sweep(
    configs: list[AutoencoderConfig] | None = None,
    config: TrainConfig = TrainConfig(**SWEEP_DEFAULTS),
    out: str | os.PathLike = "results/sweep",
    workers: int = 1,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
) -> list[dict]:
    """Train every configuration not yet in `out`'s store; returns all finished results."""
    configs = configs if configs is not None else sweep_configs()
    out = Path(out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    key = _settings_key(config)
    finished = {r["name"]: r for r in read_results(out) if _settings_key(r["train"]) == key}
    todo = [c for c in configs if c.name not in finished]
    data = load_images(config.data)  # decode (and cache) once, before any worker starts
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc="sweep", unit="trial", disable=not progress)

    def landed(result: dict) -> None:
        append_result(out, result)
        finished[result["name"]] = result
        write_tables(out, list(finished.values()))
        bar.set_postfix(last=f"{result['name']} bce {result['test']['bce']:.4f}")
        bar.update()

    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be local or ray, got {backend!r}")
    if backend == "ray" and todo:
        _run_ray(todo, config, out, data, landed, address, cpus_per_trial, gpus_per_trial)
    elif workers <= 1:
        for c in todo:
            landed(train(c, config, out=out / "trials" / c.name, data=data, progress=progress))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn, not fork: forking a process that already ran torch's thread pools can hang.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_trial, c, config, str(out / "trials" / c.name), threads) for c in todo]
            for future in as_completed(futures):
                landed(future.result())
    bar.close()
    if finished:
        write_tables(out, list(finished.values()))
    names = {c.name for c in configs}
    return [r for r in finished.values() if r["name"] in names]
