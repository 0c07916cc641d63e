"""Shared fixtures: a private cache per test, and small datasets the tests make themselves."""

from __future__ import annotations

import importlib.util
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

SHARED_CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg/train.tar.gz"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache, so no test reads another's (or the user's) cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CAE_CACHE_DIR", str(cache))
    monkeypatch.delenv("CAE_DATA", raising=False)
    return cache


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def cifar_batches(per_batch: int = 4, seed: int = 0) -> dict[str, dict]:
    """Batches in the official python format (pickled dicts, data (N, 3072) uint8 in CHW order)."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                   b"labels": rng.integers(0, 10, per_batch).tolist(),
                   b"batch_label": name.encode()} for name in names}


def write_cifar_archive(path: Path, per_batch: int = 4, seed: int = 0) -> dict[str, dict]:
    """A small cifar-10-python.tar.gz in the official layout (cifar-10-batches-py/<batch>)."""
    batches = cifar_batches(per_batch, seed)
    with tarfile.open(path, "w:gz") as tf:
        for name, batch in batches.items():
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return batches


def write_image_folder(root: Path, images: np.ndarray, classes: list[str] | None = None, fmt: str = "png") -> Path:
    """Images as files: root/<class>/<i>.<fmt> (round-robin over classes), or flat when classes is None."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:04d}.{fmt}")
    return root


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra (torch); "
                                 "this environment has the serve extra only")
needs_shared_data = pytest.mark.skipif(not SHARED_CIFAR_JPEG.exists(), reason="../shared/datasets/cifar10-jpeg is absent")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Run folders of small, briefly trained models of each kind (seconds), shared by the session."""
    from training.colorize import ColorizerConfig
    from training.model import AutoencoderConfig, ResidualAutoencoderConfig
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAE_CACHE_DIR", str(root / "cache"))
        config = TrainConfig(data="fake:160", epochs=1, batch_size=32, precision="fp32")
        runs = {"residual": ResidualAutoencoderConfig(width=4, downsamplings=2, latent_channels=2),
                "study": AutoencoderConfig(channel_factor=1, compression=2, fewer_layers=True),
                "colorizer": ColorizerConfig(width=4, temperature=0.7, prior_correction=0.5)}
        for name, model in runs.items():
            train(model, config, out=root / name, progress=False)
    return {name: root / name for name in runs}


@pytest.fixture(scope="session")
def exported_models(tiny_runs, tmp_path_factory):
    """A models/ folder exported from `tiny_runs` by the real export step: (folder, manifest)."""
    from export.exporter import export_models

    out = tmp_path_factory.mktemp("export") / "models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAE_CACHE_DIR", str(out.parent / "cache"))
        manifest = export_models([tiny_runs["residual"], tiny_runs["study"]], tiny_runs["colorizer"], out)
    return out, manifest


TINY_MODELS = Path(__file__).resolve().parent / "fixtures" / "tiny_models"


@pytest.fixture(scope="session")
def model_dir():
    """What the service and client tests serve: three tiny hand-made ONNX models with the export's contract
    (tests/fixtures/tiny_models.py), so those tests run with only the `serve` extra installed."""
    return TINY_MODELS
