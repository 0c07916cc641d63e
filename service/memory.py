"""The process's memory: what the machine allows, what is resident now, the peak of a piece of work, and
an allocator that gives large blocks back.

Resident memory is read from /proc (Linux); elsewhere the functions fall back to what they can know
(no sampling, no budget from cgroups) rather than fail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int:
    """Resident set size of this process now (0 where /proc is missing)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def machine_memory_bytes() -> int:
    """The memory this process may use: the cgroup limit (containers) if set, else the machine's RAM."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or 1 << 62):
            total = int(text)
    return total or 8 << 30


def default_memory_budget_mb() -> int:
    """Half of what the machine (or container) allows: the rest is the process itself, the kernel's page
    cache and estimates being estimates."""
    return max(256, machine_memory_bytes() // 2 // (1 << 20))


class PeakSampler:
    """The peak resident set size while a block runs: `with PeakSampler() as p: ...; p.peak_delta`.

    Used at warm-up to measure each model's memory per pixel. Where Linux lets a process reset its recorded
    peak (writing 5 to /proc/self/clear_refs, Linux 4.0+), the kernel's high-water mark (VmHWM) is exact
    however short the run. Elsewhere a thread samples the RSS every half millisecond, which finds the peak of
    a run of a few tens of milliseconds within a few percent but misses most of a run of a few (measured:
    decoders probed at 64-128 pixels planned 0.4-0.65x the memory of their megapixel runs). Both rely on the
    allocator returning large blocks at once (`give_large_blocks_back`)."""

    def __init__(self, interval_s: float = 0.0005):
        self.interval_s = interval_s
        self.base = self.peak = 0
        self.exact = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self.exact = reset_peak_rss()
        self.base = self.peak = rss_bytes()
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, rss_bytes(), peak_rss_bytes() if self.exact else 0)

    @property
    def peak_delta(self) -> int:
        return max(0, self.peak - self.base)


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Set the kernel's record of this process's peak RSS (VmHWM) to the RSS now; False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return peak_rss_bytes() > 0


def peak_rss_bytes() -> int:
    """This process's peak RSS since start or since reset_peak_rss (0 where /proc is missing)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) << 10
    except (OSError, IndexError, ValueError):
        pass
    return 0


@functools.cache
def _libc():
    """The C library, loaded once (None where it cannot be)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def give_large_blocks_back() -> bool:
    """Make glibc return every block over 128 KiB to the kernel when it is freed.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
    freed image-sized buffers stay in the heap: measured here, RSS stayed at 6-13 GB after a few photo-sized
    requests. A fixed threshold turns that off. Returns False where the C library has no mallopt."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    m_mmap_threshold, m_trim_threshold = -3, -1
    ok = mallopt(m_mmap_threshold, 128 * 1024) == 1
    return ok and mallopt(m_trim_threshold, 128 * 1024) == 1


def trim() -> None:
    """Hand free heap pages back to the kernel (glibc's malloc_trim); a no-op elsewhere."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
