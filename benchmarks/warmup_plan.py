"""How well the warm-up's plan (each model's Cost: seconds and peak bytes per pixel) predicts photo-sized runs.

    python benchmarks/warmup_plan.py --models models --only rae_w64_d1_z1_b1,rae_w16_d2_z2_b1,pae_k256_w16_l3 --sides 512 1024

Loads the models as the service does (the same allocator setting), runs service.models.warm_up, then runs
each model once per image side (a square image of that many pixels a side; decoders get the latent of one),
measuring seconds (median of 2) and peak memory as the warm-up does (service.models.measure_run). Prints
actual / planned for both: above 1 the service under-plans (a request may pass its deadline or its
memory budget), below 1 it refuses work it could do. --out writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.memory import give_large_blocks_back, reset_peak_rss  # noqa: E402
from service.models import SHRINK_ABOVE_BYTES, load_models, measure_run, warm_up  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="a model folder (manifest.json)")
    parser.add_argument("--only", default=None, help="comma-separated autoencoder names and/or colorizer (default: all)")
    parser.add_argument("--sides", type=int, nargs="+", default=[512, 1024], help="image sides in pixels")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    give_large_blocks_back()  # as the service's lifespan does before its warm-up
    models = load_models(args.models, "cpu", 0, args.only.split(",") if args.only else None)
    started = time.perf_counter()
    warm_up(models)
    print(f"warm-up: {time.perf_counter() - started:.1f} s for {len(models)} models", flush=True)
    rows = []
    for key, model in models.items():
        unit = model.stride if model.role == "decoder" else 1
        align = model.geometry.align
        for image_side in args.sides:
            side = max(align, image_side // unit // align * align)
            x = np.random.default_rng(1).random((1, model.input_channels, side, side), dtype=np.float32)
            pixels = model.image_pixels(side, side)
            seconds, held = measure_run(model, x, model.run_options(SHRINK_ABOVE_BYTES + 1), 2)
            row = {"model": key, "megapixels": round(pixels / 1e6, 3), "seconds": float(f"{seconds:.3g}"),
                   "seconds_vs_plan": round(seconds / max(model.cost.seconds(pixels), 1e-9), 2),
                   "bytes_per_pixel": round(held / pixels), "bytes_vs_plan": round(held / max(1, model.cost.bytes(pixels)), 2)}
            rows.append(row)
            print(f"{key:32s} {row['megapixels']:6.3f} MP  time actual/plan {row['seconds_vs_plan']:5.2f} ({seconds:.2f} s)  "
                  f"memory actual/plan {row['bytes_vs_plan']:5.2f} ({row['bytes_per_pixel']} B/px)", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"sides": args.sides, "exact_peak": reset_peak_rss(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
