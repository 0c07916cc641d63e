"""Fetch the official CIFAR-10 python archive, resuming a partial download and verifying its md5."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from training.data import DatasetError, cache_dir

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_FILE = "cifar-10-python.tar.gz"


class DownloadError(DatasetError):
    """The download failed or the file does not match its published checksum."""


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str = CIFAR10_URL, dest: str | os.PathLike | None = None, md5: str = CIFAR10_MD5,
             timeout: float = 60, progress: bool = True) -> Path:
    """Download `url` to `dest` (a folder or file path) and return the verified file.

    Bytes land in `<file>.part`; a later call continues it with an HTTP Range request. The file gets its
    final name only after its md5 matches, so a finished name always means a verified file.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    target = dest / Path(url).name if dest.is_dir() or not dest.suffix else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if file_md5(target) == md5:
            return target
        raise DownloadError(f"{target}: exists but its md5 is not {md5}; delete it to download again")
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            total = response.length + have if response.length is not None else None
            with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                               desc=target.name, disable=not progress) as bar:
                while block := response.read(1 << 16):
                    f.write(block)
                    bar.update(len(block))
            # http.client ends a body cut short by the server like a complete one: compare with its length.
            if total is not None and part.stat().st_size < total:
                raise TimeoutError("the server closed the connection early")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part file is already complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        size = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"{url}: download interrupted after {size} bytes ({e}); run it again to resume") from None
    actual = file_md5(part)
    if actual != md5:
        part.unlink()
        raise DownloadError(f"{url}: md5 {actual} does not match the published {md5}; the partial file was removed")
    os.replace(part, target)
    return target


def ensure_cifar10(dest: str | os.PathLike | None = None) -> Path:
    """The official archive in the cache (or `dest`), downloading it on first use."""
    return download(CIFAR10_URL, dest, CIFAR10_MD5)
