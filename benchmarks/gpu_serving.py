"""The service per endpoint on each onnxruntime provider, batching on and off, in one run on one machine.

    python benchmarks/gpu_serving.py --providers cpu cuda --out results/serving/gpu_serving.json

For each provider (CAE_PROVIDERS: cpu, cuda) and batching off and on (with the settings the service picks
for that provider), the service runs under uvicorn on loopback and wrk (1 thread) drives each endpoint at
each concurrency: /encode, /reconstruct and /colorize with a 32x32 PNG, and V2 /v2/models/encoder/infer with
a binary tensor (the GPU serving issue's main figure). Prints a table and the ratios the targets are stated
in: batching on vs off at c64 on /encode, and each provider against the CPU provider on the same machine;
writes them as JSON (--out). Photo sizes: `CAE_PROVIDERS=cuda python benchmarks/photo_size.py`.
Needs wrk (Debian: apt-get install wrk; elsewhere WRK=/path/to/wrk).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import RAW_LUA, WRK, start_server, test_png, wrk, write_results  # noqa: E402

V2_LUA = """
wrk.method = "POST"
wrk.headers["Inference-Header-Content-Length"] = "{header_length}"
wrk.headers["Content-Type"] = "application/octet-stream"
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
"""


def v2_body(side: int = 32) -> tuple[bytes, int]:
    """A V2 binary request for one side x side image: the JSON header, then the raw FP32 tensor."""
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.astype("<f4").tobytes(), len(header)


def device_name(provider: str) -> str:
    if provider == "cuda":
        try:
            return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, check=True).stdout.strip().splitlines()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            return "CUDA (nvidia-smi unavailable)"
    return f"{platform.processor() or platform.machine()} CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models", help="models folder (default models)")
    parser.add_argument("--providers", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk point (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--endpoints", nargs="+", default=["/encode", "/reconstruct", "/colorize", "v2-encoder"])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if shutil.which(WRK) is None:
        print(f"wrk not found ({WRK}): apt-get install wrk, or WRK=/path/to/wrk", file=sys.stderr)
        return 2
    models = Path(args.models).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="cae-gpu-bench-"))
    (tmp / "x.png").write_bytes(test_png())
    body, header_length = v2_body()
    (tmp / "v2.bin").write_bytes(body)
    scripts = {"png": tmp / "png.lua", "v2": tmp / "v2.lua"}
    scripts["png"].write_text(RAW_LUA.format(png=tmp / "x.png"))
    scripts["v2"].write_text(V2_LUA.format(header_length=header_length, body=tmp / "v2.bin"))
    paths = {"v2-encoder": ("/v2/models/encoder/infer", "v2")}

    results: dict = {"models": str(args.models), "devices": {}, "runs": {}}
    for provider in args.providers:
        results["devices"][provider] = device_name(provider)
        for batching in ("off", "on"):
            env = {"CAE_MODEL_DIR": str(models), "CAE_PROVIDERS": provider, "CAE_BATCHING": str(batching == "on").lower(),
                   "CAE_MAX_CONCURRENCY": "1024"}
            proc, port = start_server("service.main:app", env)
            try:
                for endpoint in args.endpoints:
                    path, script = paths.get(endpoint, (endpoint, "png"))
                    url = f"http://127.0.0.1:{port}{path}"
                    wrk(url, scripts[script], 4, 2)  # warm-up (and CUDA's first-run costs)
                    for c in args.concurrency:
                        r = wrk(url, scripts[script], c, args.duration)
                        results["runs"].setdefault(provider, {}).setdefault(batching, {}).setdefault(endpoint, {})[c] = r
                        print(f"{provider:4s} batching {batching:3s} {endpoint:12s} c{c:<3d} {r['rps']:9.0f} req/s  "
                              f"p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  errors {r['errors']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)

    runs, ratios = results["runs"], {}
    top = max(args.concurrency)
    for provider in args.providers:
        for endpoint in args.endpoints:
            off, on = runs[provider]["off"][endpoint][top]["rps"], runs[provider]["on"][endpoint][top]["rps"]
            ratios[f"{provider}_{endpoint}_c{top}_batching_on_vs_off"] = on / off if off else None
            if provider != "cpu" and "cpu" in runs:
                ratios[f"{provider}_vs_cpu_{endpoint}_c{top}_batching_on"] = on / runs["cpu"]["on"][endpoint][top]["rps"]
    results["ratios"] = {k: round(v, 3) if v is not None else None for k, v in ratios.items()}
    print(json.dumps({"devices": results["devices"], "ratios": results["ratios"]}, indent=2))
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
