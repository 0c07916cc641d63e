"""What refining the latent against the decoder wins for the shipped pae members, and what it costs.

    python benchmarks/refine_latents.py                                  # every pae member of models/, all 5,000 test images
    python benchmarks/refine_latents.py --images 500 --steps 0,10,25,50 --out results/autoencoder/refine_latents.json

For each member: its decoder's gradient graph is exported from the checkpoint the manifest names
(export.gradient, checked against autograd), then each test image's latent from the shipped
encoder.onnx is refined by Adam in numpy (cae.refine) and decoded by the shipped decoder.onnx.
Prints per step count the mean per-image PSNR, its margin over PCA at the same number of components
(fitted on the training split, scored on the same test images) and the milliseconds per 32x32 image
on this CPU. Needs the checkpoints (runs/..., not committed) and the training data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.gradient import export_decoder_gradient
from cae.refine import onnx_gradient, refine_latents
from training.data import load_images
from training.model import for_inference
from training.pca import PCA
from training.run import Run


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="models", help="the shipped models' folder (default models)")
    p.add_argument("--data", default=None, help="the training data (default: where each member trained)")
    p.add_argument("--members", default="", help="comma-separated member names (default: every pae member)")
    p.add_argument("--images", type=int, default=0, help="the first N test images (default 0: all)")
    p.add_argument("--steps", default="0,25", help="Adam step counts to measure (default 0,25)")
    p.add_argument("--batch", type=int, default=500, help="images per onnxruntime call (default 500)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default 0: all cores)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    manifest = json.loads((Path(args.models) / "manifest.json").read_text())
    members = [entry for entry in manifest["models"].values() if entry.get("role") == "encoder" and entry["autoencoder"].startswith("pae_")
               and (not args.members or entry["autoencoder"] in args.members.split(","))]
    if not members:
        p.error(f"no pae member{' named ' + args.members if args.members else ''} in {args.models}/manifest.json")
    rows, data, pca = [], None, None
    print(f"{'member':<20} {'steps':>5} {'test PSNR':>9} {'PCA':>6} {'margin':>6} {'ms/image':>8}")
    for entry in members:
        name = entry["autoencoder"]
        run = Run.load(entry["checkpoint"]["path"])
        if data is None or data.source != (args.data or run.data.source):
            data = load_images(args.data or run.data.source)
            pca = PCA(data.images[run.split(data).train])
        chosen = run.split(data).test[: args.images or None]
        pca_psnr = round(pca.evaluate(data.images[chosen], [entry["latent_size_32x32"]])[0]["psnr"], 3)
        images = data.images[chosen].astype(np.float32) / 255
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gradient.onnx"
            model = for_inference(run.model())
            export_decoder_gradient(model.decoder, model.config.components, model.config.stride, path)
            gradient = onnx_gradient(_session(path, args.threads))
            encoder = _session(Path(args.models) / entry["file"], args.threads)
            decoder = _session(Path(args.models) / manifest["models"][f"{name}.decoder"]["file"], args.threads)
            for count in steps:
                psnrs, seconds = [], 0.0
                for start in range(0, len(images), args.batch):
                    x = images[start : start + args.batch]
                    latent = encoder.run(None, {"image": x})[0]
                    began = time.perf_counter()
                    latent = refine_latents(gradient, latent, x, count)
                    seconds += time.perf_counter() - began
                    out = decoder.run(None, {"latent": latent})[0]
                    mse = ((np.clip(out, 0, 1) - x) ** 2).reshape(len(x), -1).mean(1)
                    psnrs.append(10 * np.log10(1 / np.maximum(mse, 1e-10)))
                psnr = float(np.concatenate(psnrs).mean())
                row = {"member": name, "steps": count, "images": len(images), "test_psnr": round(psnr, 3), "pca_psnr": pca_psnr,
                       "margin_db": round(psnr - pca_psnr, 3), "ms_per_image": round(1000 * seconds / len(images), 3)}
                rows.append(row)
                print(f"{name:<20} {count:>5} {psnr:>9.2f} {pca_psnr:>6.2f} {row['margin_db']:>6.2f} {row['ms_per_image']:>8.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/refine_latents.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v not in (None, 0, "") and k != "out"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
