"""Photo-sized requests against the real service: latency, peak memory, probes, memory given back.

    python benchmarks/photo_size.py --models models --out results/serving/photo_size.json
    python benchmarks/photo_size.py --model rae_w64_d1_z2_b1 --burst-seconds 0 --out results/serving/photo_size_w64.json
    python benchmarks/photo_size.py --endpoints '/reconstruct?refine=10' --sizes 0.01 0.05 0.25 1 --burst-seconds 0

Starts `python -m service` on loopback with the given models and default settings, then:
- for each endpoint (/reconstruct, /colorize, /encode?size=native) at 0.25, 1, 4 and 12 megapixels
  (synthetic photo-like JPEGs, 4:3, made here: no data-set image), one request at a time: status,
  latency, and the server's peak RSS during it (VmRSS sampled every 5 ms), also as bytes above idle per
  input pixel (the photo-size targets: at most 1 s per megapixel and 300 bytes per pixel for /colorize);
- a burst: wrk with 120 connections sending 256x256 /colorize requests for --burst-seconds: status
  counts (503s with and without Retry-After), worst latency;
- all along, /healthz every 20 ms on its own connection: its worst latency per phase;
- RSS at idle before, and 3 s after the last request finished in the service.
--model names the family member /reconstruct and /encode use (default: the manifest's default autoencoder);
--burst-seconds 0 leaves the burst out.
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import http.client
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import free_port, wait_ready, write_results  # noqa: E402
SIZES_MP = (0.25, 1, 4, 12)
ENDPOINTS = ("/reconstruct", "/colorize", "/encode?size=native")

BURST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local f = io.open("{jpeg}", "rb"); wrk.body = f:read("*all"); f:close()
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {{}} end
function response(status, headers, body)
  local key = tostring(status)
  if status == 503 and headers["Retry-After"] == nil and headers["retry-after"] == nil then key = "503-no-retry-after" end
  counts[key] = (counts[key] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do io.write("STATUS ", k, " ", v, "\\n") end
  end
  io.write("MAXLAT_US ", latency.max, "\\n")
end
"""


def photo_shape(megapixels: float) -> tuple[int, int]:
    """Width and height of a 4:3 photo of about this many megapixels."""
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    return w, int(round(w * 3 / 4))


def photo(megapixels: float, seed: int = 0, side: int | None = None) -> bytes:
    """A photo-like JPEG: smooth colour fields, soft shapes, a little grain."""
    w, h = (side, side) if side else photo_shape(megapixels)
    rng = np.random.default_rng(seed)
    small = rng.random((6, 8, 3)) * 255
    img = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    yy, xx = np.ogrid[0:h, 0:w]
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(min(h, w) // 20, min(h, w) // 4)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        arr = np.where(mask[..., None], (arr + rng.integers(-80, 80, 3)).clip(0, 255), arr)
    arr = (arr + rng.integers(-6, 7, (h, w, 1))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


class Sampler:
    """The server's RSS every 5 ms, and /healthz every 20 ms on its own connection, in threads."""

    def __init__(self, pid: int, port: int):
        self.pid, self.port = pid, port
        self.peak_rss = 0.0
        self.worst_health_ms = 0.0
        self.health_failures = 0
        self._stop = threading.Event()

    def _rss(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
            time.sleep(0.005)

    def _health(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.health_failures += not ok
            self.worst_health_ms = max(self.worst_health_ms, (time.perf_counter() - started) * 1000)
            time.sleep(0.02)

    def __enter__(self):
        self.threads = [threading.Thread(target=self._rss, daemon=True), threading.Thread(target=self._health, daemon=True)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self.threads:
            t.join()


def start_server(models: Path, port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                            env={**os.environ, "CAE_MODEL_DIR": str(models), **env})
    wait_ready(proc, port, "/readyz", timeout_s=120)
    return proc


def wait_idle(port: int, timeout_s: float = 120) -> None:
    """Until the service reports no request in flight (its cae_requests_in_flight gauge)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        if float(re.search(r"^cae_requests_in_flight (\S+)$", text, re.M).group(1)) == 0:
            return
        time.sleep(0.2)


def post(port: int, path: str, body: bytes) -> tuple[int, float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, time.perf_counter() - started, len(data)


def burst(port: int, pid: int, connections: int, seconds: int) -> dict:
    """wrk with `connections` connections sending 256x256 /colorize for `seconds`: statuses, worst latency, peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "burst.jpg"
        jpeg.write_bytes(photo(0, seed=7, side=256))
        script = Path(tmp) / "burst.lua"
        script.write_text(BURST_LUA.format(jpeg=jpeg))
        with Sampler(pid, port) as s:
            started = time.perf_counter()
            out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s",
                                  "-s", str(script), f"http://127.0.0.1:{port}/colorize"], capture_output=True, text=True).stdout
            wall = time.perf_counter() - started
    counts: dict[str, int] = {}
    for key, value in re.findall(r"^STATUS (\S+) (\d+)$", out, re.M):
        counts[key] = counts.get(key, 0) + int(value)
    max_latency = float(re.search(r"^MAXLAT_US (\S+)$", out, re.M).group(1)) / 1e6
    print(f"burst: {connections} connections x {seconds} s of 256x256 /colorize: {counts}, "
          f"worst latency {max_latency:.2f} s, peak RSS {s.peak_rss:.0f} MB, /healthz worst {s.worst_health_ms:.1f} ms")
    return {"connections": connections, "seconds": seconds, "wall_s": round(wall, 1),
            "statuses": counts, "worst_latency_s": round(max_latency, 2), "peak_rss_mb": round(s.peak_rss, 1),
            "healthz_worst_ms": round(s.worst_health_ms, 1), "healthz_failures": s.health_failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(ROOT / "models"), help="model folder (default: the shipped models/)")
    parser.add_argument("--sizes", type=float, nargs="+", default=list(SIZES_MP), help="megapixels (default 0.25 1 4 12)")
    parser.add_argument("--burst-connections", type=int, default=120, help="wrk connections in the burst (default 120)")
    parser.add_argument("--burst-seconds", type=int, default=15, help="burst duration (default 15; 0: no burst)")
    parser.add_argument("--model", default=None, help="autoencoder for /reconstruct and /encode (default: the default one)")
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), help="paths with their query (default: "
                        + " ".join(ENDPOINTS) + "), e.g. '/reconstruct?refine=10'")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.burst_seconds > 0 and shutil.which("wrk") is None:  # say so now, not after minutes of measuring
        parser.error("the burst needs wrk (Debian: apt-get install wrk); --burst-seconds 0 leaves it out")

    port = free_port()
    proc = start_server(Path(args.models).resolve(), port, {})
    results: dict = {"command": "python benchmarks/photo_size.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "cpus": os.cpu_count(), "requests": [], "burst": {}}
    try:
        time.sleep(1)
        results["rss_idle_mb"] = round(rss_mb(proc.pid), 1)
        print(f"idle RSS {results['rss_idle_mb']:.0f} MB")
        print(f"{'endpoint':<22}{'MP':>6}{'status':>8}{'seconds':>9}{'s/MP':>7}{'peak RSS MB':>13}{'B/px':>6}{'healthz worst ms':>18}")
        for mp in args.sizes:
            body = photo(mp, seed=int(mp * 100))
            for path in args.endpoints:
                if args.model and not path.startswith("/colorize"):
                    path += ("&" if "?" in path else "?") + f"model={args.model}"
                with Sampler(proc.pid, port) as s:
                    status, seconds, size = post(port, path, body)
                # The photo-size targets are per pixel of input: peak memory above idle, in bytes (RSS is in MiB).
                per_pixel = (s.peak_rss - results["rss_idle_mb"]) * 2**20 / math.prod(photo_shape(mp))
                row = {"endpoint": path, "megapixels": mp, "status": status, "seconds": round(seconds, 3),
                       "seconds_per_megapixel": round(seconds / mp, 3), "peak_rss_mb": round(s.peak_rss, 1),
                       "bytes_per_pixel_above_idle": round(per_pixel), "healthz_worst_ms": round(s.worst_health_ms, 1),
                       "healthz_failures": s.health_failures, "bytes_out": size}
                results["requests"].append(row)
                print(f"{path:<22}{mp:>6g}{status:>8}{seconds:>9.2f}{seconds / mp:>7.2f}{s.peak_rss:>13.0f}{per_pixel:>6.0f}"
                      f"{s.worst_health_ms:>18.1f}")
        if args.burst_seconds > 0:
            results["burst"] = burst(port, proc.pid, args.burst_connections, args.burst_seconds)
        # wrk stops sending, but requests it abandoned are still being worked through: wait for none in flight.
        wait_idle(port)
        time.sleep(3)
        results["rss_after_mb"] = round(rss_mb(proc.pid), 1)
        print(f"RSS 3 s after the last request finished: {results['rss_after_mb']:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(30)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
