"""The shipped models on one photo, through the real service and the Python client: a picture for the README.

    python scripts/showcase.py                                  # models/, matplotlib's Grace Hopper photo
    python scripts/showcase.py --photo my.jpg --out showcase.png

Starts `python -m service` on loopback with --models, then with `cae_client.Client`: /reconstruct at native size
with every autoencoder of the family (`model=`), and /colorize of the photo's grayscale. Writes one figure: the
photo, each reconstruction titled with its latent size and PSNR against the photo, the gray input and the
colorization. The default photo is the portrait matplotlib ships (US Navy, public domain), not a data-set image:
figures of data-set images are never committed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "clients" / "python"))  # the client, from the checkout when not installed

from photo_size import start_server  # noqa: E402
from serve_load import free_port  # noqa: E402

from cae_client import Client  # noqa: E402


def default_photo() -> Path:
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = (np.asarray(i.convert("RGB"), dtype=np.float64) / 255 for i in (a, b))
    return float(10 * np.log10(1 / np.mean((x - y) ** 2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(ROOT / "models"), help="model folder (default: the shipped models/)")
    parser.add_argument("--photo", default=None, help="a photo (default: matplotlib's sample portrait)")
    parser.add_argument("--out", default=str(ROOT / "results" / "serving" / "showcase.png"), help="figure to write")
    args = parser.parse_args(argv)

    models = Path(args.models).resolve()
    photo = Image.open(args.photo or default_photo()).convert("RGB")
    gray = photo.convert("L").convert("RGB")
    port = free_port()
    proc = start_server(models, port, {})
    try:
        with Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as cae:
            panels = [("photo", photo)]
            # The family as the service lists it (GET /v1/models), smallest latent first.
            for member in sorted(cae.models()["autoencoders"], key=lambda m: m["latent_size_32x32"]):
                result = cae.reconstruct(photo, model=member["name"], format="png").image
                panels.append((f"{member['name']}\n{member['latent_size_32x32']} values per 32x32, {psnr(result, photo):.1f} dB", result))
            colour = cae.colorize(gray, format="png").image
            panels += [(f"gray input\n{psnr(gray, photo):.1f} dB", gray), (f"colorized from gray\n{psnr(colour, photo):.1f} dB", colour)]
    finally:
        proc.terminate()
        proc.wait(30)

    for title, _ in panels:
        print(title.replace("\n", ": "))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.6))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"The shipped models on a {photo.width}x{photo.height} photo, through the service (PSNR against the photo)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, format="png", dpi=100)
    print(f"figure written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
