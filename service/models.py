"""The models the service runs: manifest in, checked and warmed-up onnxruntime sessions out."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("cae.service")

MANIFEST = "manifest.json"
ROLES = ("encoder", "decoder", "colorizer")


class ModelLoadError(RuntimeError):
    """The model folder cannot be served: missing, tampered with, or the requested provider is unavailable."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def choose_providers(requested: str) -> list[str]:
    available = ort.get_available_providers()
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if requested == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(f"CAE_PROVIDERS=cuda but this onnxruntime has only {available} "
                                 "(install onnxruntime-gpu with its CUDA libraries)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


@dataclass
class Model:
    role: str  # encoder | decoder | colorizer: also the name clients use
    facts: dict  # the manifest entry
    session: ort.InferenceSession
    input_name: str = field(init=False)
    output_name: str = field(init=False)
    seconds_per_pixel: float = 0.0  # measured at warm-up; 0 until then

    def __post_init__(self):
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def name(self) -> str:
        return self.facts["name"]

    @property
    def version(self) -> str:
        return str(self.facts.get("version", 1))

    @property
    def stride(self) -> int:
        return int(self.facts["stride"])

    @property
    def input_channels(self) -> int:
        return int(self.facts["inputs"][0]["shape"][1])

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def describe(self) -> dict:
        keep = ("name", "version", "file", "sha256", "stride", "inputs", "outputs", "test", "parameters", "latent_channels", "decoding")
        return {"role": self.role, **{k: self.facts[k] for k in keep if k in self.facts}, "version": self.version,
                "providers": self.providers}


def load_models(model_dir: Path, providers: str = "auto", intra_op_threads: int = 0) -> dict[str, Model]:
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        raise ModelLoadError(f"{manifest_path} not found: CAE_MODEL_DIR must be a folder made by `cae export`")
    manifest = json.loads(manifest_path.read_text())
    chosen = choose_providers(providers)
    options = ort.SessionOptions()
    # On 2 cores with the shipped model at 16 concurrent requests, onnxruntime on one core (the other
    # left to the event loop's HTTP and PNG work) gave more requests/s and a lower p99 than on both.
    options.intra_op_num_threads = intra_op_threads or max(1, (os.cpu_count() or 1) - 1)
    models = {}
    for role, facts in manifest["models"].items():
        path = model_dir / facts["file"]
        if not path.is_file():
            raise ModelLoadError(f"{path}: listed in {MANIFEST} but missing")
        if _sha256(path) != facts["sha256"]:
            raise ModelLoadError(f"{path}: sha256 does not match {MANIFEST} (a modified or partly copied file)")
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        if providers == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise ModelLoadError(f"{path}: the CUDA provider failed to load (see onnxruntime's log); not falling back to CPU")
        models[role] = Model(role, facts, session)
        log.info("loaded %s (%s v%s) from %s with providers %s", role, facts["name"], facts.get("version", 1), path, session.get_providers())
    if not models:
        raise ModelLoadError(f"{manifest_path} lists no models")
    return models


def warm_up(models: dict[str, Model], runs: int = 5) -> None:
    """Run each model a few times at the training size, so the first request does not pay for allocation,
    and time it: the batcher uses the cost per output pixel to decide where a batch runs."""
    for model in models.values():
        side = 32 if model.role != "decoder" else max(1, 32 // model.stride)
        x = np.zeros((1, model.input_channels, side, side), dtype=np.float32)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            model.run(x)
            times.append(time.perf_counter() - started)
        model.seconds_per_pixel = sorted(times)[len(times) // 2] / (32 * 32)
