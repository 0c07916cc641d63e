"""How well each shipped autoencoder reconstructs photos at native size, not the 32x32 test split it is scored on.

    python benchmarks/photo_quality.py                      # models/, the photos scikit-image and matplotlib ship
    python benchmarks/photo_quality.py --photos a.jpg b.png --out results/serving/photo_quality.json

Each photo is cropped to a multiple of the member's stride and put through its encoder.onnx and decoder.onnx
whole (onnxruntime, CPU provider: the files the service runs, without its tiling); prints PSNR against the
crop per photo and member, and each member's median over the photos. The default photos are the sample
pictures scikit-image's and matplotlib's wheels carry (public, never data-set images); a few photos are a
spot check of the out-of-domain case, not a test split.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def default_photos() -> list[Path]:
    import matplotlib
    import skimage

    where = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg"]
    return [where / n for n in names if (where / n).is_file()] + [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]


def reconstruct(encoder: ort.InferenceSession, decoder: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    latent = encoder.run(None, {encoder.get_inputs()[0].name: image})[0]
    return decoder.run(None, {decoder.get_inputs()[0].name: latent})[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="models", help="model folder with manifest.json (default models/)")
    p.add_argument("--photos", nargs="+", type=Path, help="photos (default: the sample pictures of scikit-image and matplotlib)")
    p.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = p.parse_args()
    models = Path(args.models)
    manifest = json.loads((models / "manifest.json").read_text())
    members = sorted((f for f in manifest["models"].values() if f["role"] == "encoder"), key=lambda f: (f["latent_size_32x32"], f["autoencoder"]))
    photos = args.photos or default_photos()
    scores: dict[str, dict[str, float]] = {}
    for f in members:
        name, stride = f["autoencoder"], f["stride"]
        encoder, decoder = (ort.InferenceSession(str(models / manifest["models"][f"{name}.{role}"]["file"]), providers=["CPUExecutionProvider"])
                            for role in ("encoder", "decoder"))
        for photo in photos:
            with Image.open(photo) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
            h, w = rgb.shape[0] // stride * stride, rgb.shape[1] // stride * stride
            x = np.ascontiguousarray(rgb[:h, :w].transpose(2, 0, 1)[None])
            mse = float(np.mean((reconstruct(encoder, decoder, x) - x) ** 2))
            scores.setdefault(photo.name, {})[name] = 10 * np.log10(1 / max(mse, 1e-10))
    names = [f["autoencoder"] for f in members]
    default = manifest.get("default_autoencoder")
    header = [n + (" (default)" if n == default else "") + f" [{f['latent_size_32x32']}]" for n, f in zip(names, members)]
    print("| photo | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(names))
    for photo, row in scores.items():
        print(f"| {photo} | " + " | ".join(f"{row[n]:.2f}" for n in names) + " |")
    medians = {n: statistics.median(row[n] for row in scores.values()) for n in names}
    print("| median | " + " | ".join(f"{medians[n]:.2f}" for n in names) + " |")
    if args.out:
        args.out.write_text(json.dumps({"psnr_db": scores, "median_db": medians, "default": default}, indent=1) + "\n")


if __name__ == "__main__":
    main()
