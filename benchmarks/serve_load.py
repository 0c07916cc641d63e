"""Load benchmark of the service against the minimal baseline, with wrk, in one run.

    python benchmarks/serve_load.py --models models --duration 10

Measures, on the same model and machine, one after the other:
- the raw onnxruntime ceiling: in-process encoder+decoder runs per second at batch 1 and 64;
- the minimal baseline (benchmarks/minimal_server.py), raw body and multipart;
- the service (every feature on: validation, limits, metrics, queue), batching off, on (the default:
  runs cheaper than CAE_BATCH_MIN_RUN_MS skip the queue) and on for every request, raw body and multipart;
each under uvicorn on loopback, driven by wrk (1 thread) at each concurrency. Prints a table and the
ratios the targets are stated in, and writes them as JSON (--out). Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WRK = os.environ.get("WRK", "wrk")  # a wrk binary elsewhere (the GPU machine has none of its own)
BENTOML_MULTIPART = {1: 480, 16: 476, 64: 380}  # requests/s seen here for BentoML 1.4 (the figures)

RAW_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = io.open("{png}", "rb"); wrk.body = f:read("*all"); f:close()
"""
MULTIPART_LUA = """
wrk.method = "POST"
local boundary = "----caebenchboundary"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
local f = io.open("{png}", "rb"); local data = f:read("*all"); f:close()
wrk.body = "--" .. boundary .. "\\r\\n" ..
  'Content-Disposition: form-data; name="image"; filename="x.png"\\r\\n' ..
  "Content-Type: image/png\\r\\n\\r\\n" .. data .. "\\r\\n--" .. boundary .. "--\\r\\n"
"""


def test_png() -> bytes:
    """A smooth synthetic 32x32 picture (no data-set image), about the size of a CIFAR PNG."""
    yy, xx = np.mgrid[0:32, 0:32] / 31
    rgb = np.stack([xx, yy, 1 - xx * yy], -1) * 200 + np.random.default_rng(0).integers(0, 40, (32, 32, 3))
    buf = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def ort_ceiling(models: Path, seconds: float = 3.0) -> dict:
    import onnxruntime as ort

    from cae.manifest import read_manifest

    pair = read_manifest(models).default  # the default autoencoder's files
    enc = ort.InferenceSession(str(models / pair.encoder.file), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(models / pair.decoder.file), providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
        dec.run(None, {"latent": enc.run(None, {"image": x})[0]})
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            dec.run(None, {"latent": enc.run(None, {"image": x})[0]})
            n += 1
        out[f"batch_{batch}_images_per_s"] = round(n * batch / (time.perf_counter() - started), 1)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, port: int, path: str, timeout_s: float = 60) -> None:
    """Until GET `path` answers 200 on loopback; RuntimeError if the process exits or time runs out."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            error = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"the server exited during startup {error}")
    proc.kill()
    raise RuntimeError(f"the server did not answer {path} within {timeout_s:g} s")


def start_server(app: str, env: dict, cwd: Path = ROOT, ready_path: str = "/docs") -> tuple[subprocess.Popen, int]:
    """`uvicorn app` on a free loopback port, from `cwd`, once `ready_path` answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(proc, port, ready_path)
    return proc, port


def write_results(out: str | None, results: dict) -> None:
    """The benchmark's figures as JSON at `out` (if given)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, connections: int, duration: float) -> dict:
    out = subprocess.run([WRK, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def breakdown(port: int) -> dict:
    """Where a /reconstruct request's time went, from the service's own Prometheus metrics (means)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()

    def total(name: str, route: str | None = None, role: str | None = None) -> float:
        # Models are labelled by manifest key (<autoencoder>.encoder): a role matches any autoencoder's part.
        def wanted(line: str) -> bool:
            return ((route is None or f'route="{route}"' in line)
                    and (role is None or f'.{role}"' in line or f'model="{role}"' in line))
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and wanted(line))

    requests = total("cae_request_seconds_count", route="/reconstruct")
    if not requests:
        return {}
    out = {"request_ms": 1000 * total("cae_request_seconds_sum", route="/reconstruct") / requests}
    for model in ("encoder", "decoder"):
        runs = total("cae_batch_size_count", role=model)
        images = total("cae_batch_size_sum", role=model)
        if not runs:
            return {}
        out[f"{model}_mean_batch"] = images / runs
        # A request waits for its whole batch's run: the run's time counts in full for each of its images.
        out[f"{model}_inference_ms"] = 1000 * total("cae_inference_seconds_sum", role=model) / runs
        out[f"{model}_queue_wait_ms"] = 1000 * total("cae_queue_wait_seconds_sum", role=model) / max(images, 1)
    out["http_decode_encode_ms"] = out["request_ms"] - sum(out[f"{m}_{k}_ms"] for m in ("encoder", "decoder")
                                                           for k in ("inference", "queue_wait"))
    return {k: round(v, 3) for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models", help="models folder (default models)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk point (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if shutil.which(WRK) is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    models = Path(args.models).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="cae-bench-"))
    png = tmp / "x.png"
    png.write_bytes(test_png())
    scripts = {"raw": tmp / "raw.lua", "multipart": tmp / "multipart.lua"}
    scripts["raw"].write_text(RAW_LUA.format(png=png))
    scripts["multipart"].write_text(MULTIPART_LUA.format(png=png))

    results: dict = {"models": str(args.models), "ort_ceiling": ort_ceiling(models), "runs": {}}
    print(f"onnxruntime in-process, encoder+decoder: {results['ort_ceiling']}")
    configs = [
        ("baseline", "benchmarks.minimal_server:app", {"raw": "/raw", "multipart": "/multipart"}, {}),
        ("service, batching off", "service.main:app", {"raw": "/reconstruct", "multipart": "/reconstruct"}, {"CAE_BATCHING": "false"}),
        ("service, batching on", "service.main:app", {"raw": "/reconstruct", "multipart": "/reconstruct"}, {"CAE_BATCHING": "true"}),
        # The default lets runs cheaper than CAE_BATCH_MIN_RUN_MS skip the queue; this one queues every request.
        ("service, queue all", "service.main:app", {"raw": "/reconstruct", "multipart": "/reconstruct"},
         {"CAE_BATCHING": "true", "CAE_BATCH_MIN_RUN_MS": "0"}),
    ]
    for name, app, paths, env in configs:
        proc, port = start_server(app, {"CAE_MODEL_DIR": str(models), **env})
        try:
            for body, path in paths.items():
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, scripts[body], 4, 2)  # warm-up
                for c in args.concurrency:
                    r = wrk(url, scripts[body], c, args.duration)
                    results["runs"].setdefault(name, {}).setdefault(body, {})[c] = r
                    print(f"{name:24s} {body:9s} c{c:<3d} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}")
            if app.startswith("service"):
                results.setdefault("breakdown", {})[name] = breakdown(port)
                print(f"{name}: mean per request over all points {results['breakdown'][name]}")
        finally:
            proc.terminate()
            proc.wait(30)

    runs = results["runs"]
    on, off, base = runs["service, batching on"], runs["service, batching off"], runs["baseline"]
    ratios = {}
    if 16 in args.concurrency:
        ratios["c16_throughput_vs_baseline"] = on["raw"][16]["rps"] / base["raw"][16]["rps"]
        ratios["c16_p99_vs_baseline"] = on["raw"][16]["p99_ms"] / base["raw"][16]["p99_ms"]
    for c in args.concurrency:
        if c in BENTOML_MULTIPART:
            ratios[f"c{c}_multipart_vs_bentoml"] = on["multipart"][c]["rps"] / BENTOML_MULTIPART[c]
            ratios[f"c{c}_multipart_vs_baseline_multipart"] = on["multipart"][c]["rps"] / base["multipart"][c]["rps"]
    if 64 in args.concurrency:
        ratios["c64_batching_on_vs_off"] = on["raw"][64]["rps"] / off["raw"][64]["rps"]
        ratios["c64_queue_all_vs_off"] = runs["service, queue all"]["raw"][64]["rps"] / off["raw"][64]["rps"]
    results["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    print(json.dumps(results["ratios"], indent=2))
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
