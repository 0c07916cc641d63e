import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_showcase_draws_every_family_member_through_the_service(model_dir, tmp_path):
    photo, out = tmp_path / "photo.png", tmp_path / "showcase.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "showcase.py"), "--models", str(model_dir),
                           "--photo", str(photo), "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((model_dir / "manifest.json").read_text())
    sizes = {f["autoencoder"]: f["latent_size_32x32"] for f in manifest["models"].values() if f["role"] == "encoder"}
    members = sorted(sizes, key=sizes.get)
    lines = proc.stdout.splitlines()
    # One panel per member, smallest latent first, each titled with its PSNR against the photo; then gray and colour.
    assert [line.split(":")[0] for line in lines[:-1]] == ["photo", *members, "gray input", "colorized from gray"]
    assert all(line.endswith(" dB") for line in lines[1:-1])
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width == 260 * (len(members) + 3)
