"""Image datasets: decoded once into a uint8 array, cached on disk, split reproducibly.

Sources (`load_images`):
- the official CIFAR-10 python archive `cifar-10-python.tar.gz`, or its extracted `cifar-10-batches-py/`
  folder: all six batches (50,000 + 10,000 images), since the project makes its own split as the study did;
- a folder of images, with one subfolder per class or flat;
- a `.tar`, `.tar.gz`/`.tgz` or `.zip` of such a folder (e.g. the shared JPEG copy of CIFAR-10);
- `fake` (or `fake:N`): N seeded synthetic images, so every command has a seconds-long smoke mode.

Every problem with a source is a `DatasetError` whose message names the offending file.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cae.images import rgb_array

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_FOLDER = "cifar-10-batches-py"
SHARED_CIFAR_JPEG = Path(__file__).resolve().parent.parent.parent / "shared/datasets/cifar10-jpeg/train.tar.gz"
CACHE_VERSION = 1  # bump when the decoded layout changes, so stale caches are not read


class DatasetError(ValueError):
    """A data source that cannot be used; the message says which file and why."""


@dataclass
class ImageArray:
    """Decoded images: `images` uint8 (N, 3, H, W) RGB, `labels` int64 (N,) (-1 where unknown)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    checksum: str

    def __len__(self) -> int:
        return len(self.images)


def cache_dir() -> Path:
    return Path(os.environ.get("CAE_CACHE_DIR", Path.home() / ".cache" / "cae"))


def default_source() -> str:
    """$CAE_DATA, else the shared JPEG copy of CIFAR-10 when present, else the official archive (downloaded)."""
    if os.environ.get("CAE_DATA"):
        return os.environ["CAE_DATA"]
    if SHARED_CIFAR_JPEG.exists():
        return str(SHARED_CIFAR_JPEG)
    return "cifar10"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _folder_key(path: Path) -> str:
    """A folder's cache key: names, sizes and modification times of its files (reading every byte
    of 50,000 files just to find the cache would cost as much as decoding them)."""
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            digest.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_images(source: str | os.PathLike, image_size: int = 32, use_cache: bool = True) -> ImageArray:
    """Decode `source` (see the module docstring) into an ImageArray, through the on-disk cache."""
    source = str(source)
    if source == "fake" or source.startswith("fake:"):
        count = int(source.partition(":")[2] or 512)
        return fake_images(count, image_size)
    if source == "cifar10":
        from training.download import ensure_cifar10

        source = str(ensure_cifar10())
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    key = _folder_key(path) if path.is_dir() else file_sha256(path)
    cache_file = cache_dir() / f"images-v{CACHE_VERSION}-{key[:24]}-{image_size}.npz"
    if use_cache and cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as z:
            return ImageArray(z["images"], z["labels"], list(z["classes"]), str(path), key)
    images, labels, classes = _decode(path, image_size)
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        # np.savez appends .npz unless the name ends in it; write then rename so a kill leaves no half file.
        np.savez(tmp, images=images, labels=labels, classes=np.array(classes, dtype=str))
        os.replace(tmp, cache_file)
    return ImageArray(images, labels, classes, str(path), key)


def _decode(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if path.is_dir():
        if (path / CIFAR_BATCHES[0]).exists() or (path / CIFAR_FOLDER).is_dir():
            folder = path if (path / CIFAR_BATCHES[0]).exists() else path / CIFAR_FOLDER
            return _cifar_batches({n: (folder / n).read_bytes for n in CIFAR_BATCHES if (folder / n).exists()}, folder)
        files = {str(p.relative_to(path).as_posix()): p.read_bytes for p in sorted(path.rglob("*")) if p.is_file()}
        return _image_files(files, path, image_size)
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                files = {i.filename: (lambda i=i: zf.read(i)) for i in zf.infolist() if not i.is_dir()}
                return _archive(files, path, image_size)
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(path) as tf:
                # One pass in archive order: seeking back in a gzip stream restarts decompression.
                files = {m.name: (lambda b=tf.extractfile(m).read(): b) for m in tf if m.isfile()}
            return _archive(files, path, image_size)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DatasetError(f"{path}: corrupt or unreadable archive ({e})") from None
    raise DatasetError(f"{path}: not a folder or a .tar/.tar.gz/.zip archive of images")


def _archive(files: dict, path: Path, image_size: int):
    batches = {PurePosixPath(n).name: read for n, read in files.items() if PurePosixPath(n).name in CIFAR_BATCHES}
    if batches:
        return _cifar_batches(batches, path)
    return _image_files(files, path, image_size)


def _cifar_batches(batches: dict, where: Path):
    """The official python format: pickled dicts with b'data' (N, 3072) uint8 and b'labels'."""
    images, labels = [], []
    for name in CIFAR_BATCHES:
        if name not in batches:
            continue
        try:
            batch = pickle.loads(batches[name](), encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except Exception as e:  # a damaged pickle can raise almost anything
            raise DatasetError(f"{where}/{name}: not a valid CIFAR-10 batch ({type(e).__name__}: {e})") from None
        images.append(data)
    if not images:
        raise DatasetError(f"{where}: no CIFAR-10 batches found")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return np.concatenate(images), np.concatenate(labels), classes


def _image_files(files: dict, where: Path, image_size: int):
    """Decode every file; class = first folder below the common root when there are class folders."""
    from PIL import Image, UnidentifiedImageError

    names = [n for n in sorted(files) if not any(part.startswith(".") for part in PurePosixPath(n).parts)]
    if not names:
        raise DatasetError(f"{where}: contains no files")
    # Strip a single top folder shared by all files (e.g. train/ inside train.tar.gz).
    parts = [PurePosixPath(n).parts for n in names]
    depth = 0
    while all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    class_of = [p[depth] if len(p) > depth + 1 else None for p in parts]
    classes = sorted({c for c in class_of if c is not None})
    if classes and None in class_of:
        loose = names[class_of.index(None)]
        raise DatasetError(f"{where}/{loose}: a file beside the class folders (expected all images in class folders)")
    index = {c: i for i, c in enumerate(classes)}
    images = np.empty((len(names), 3, image_size, image_size), dtype=np.uint8)
    labels = np.full(len(names), -1, dtype=np.int64)
    for i, (name, cls) in enumerate(zip(names, class_of)):
        try:
            with Image.open(io.BytesIO(files[name]())) as im:
                if im.size != (image_size, image_size):
                    raise DatasetError(f"{where}/{name}: image is {im.size[0]}x{im.size[1]}, expected {image_size}x{image_size}")
                images[i] = rgb_array(im).transpose(2, 0, 1)  # decoded as the service decodes requests
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise DatasetError(f"{where}/{name}: not a readable image ({e})") from None
        if cls is not None:
            labels[i] = index[cls]
    return images, labels, classes


def fake_images(count: int = 512, image_size: int = 32, seed: int = 0) -> ImageArray:
    """Smooth random images (low-frequency noise, so an autoencoder can learn something): seconds to make."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 3, 4, 4), dtype=np.float32)
    factor = max(1, image_size // 4)
    smooth = coarse.repeat(factor, axis=2).repeat(factor, axis=3)[:, :, :image_size, :image_size]
    noise = rng.normal(0, 0.05, smooth.shape).astype(np.float32)
    images = (np.clip(smooth + noise, 0, 1) * 255).round().astype(np.uint8)
    labels = rng.integers(0, 10, count).astype(np.int64)
    return ImageArray(images, labels, [f"class{i}" for i in range(10)], f"fake:{count}", f"fake-{count}-{image_size}-{seed}")


@dataclass(frozen=True)
class Split:
    """Index arrays into an ImageArray for train/validation/test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    fraction: float


def split_indices(n: int, seed: int = 0, fractions=(0.8, 0.1, 0.1), fraction: float = 1.0) -> Split:
    """A seeded 80/10/10 split of n items; `fraction` keeps that share of each part.

    The split is made on all n items first and `fraction` keeps a prefix of each part, so the test
    images of a 10% run are a subset of the full test split and results stay comparable.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    kept = [p[: max(1, int(round(len(p) * fraction)))] if len(p) else p for p in parts]
    return Split(*kept, seed=seed, fraction=fraction)
