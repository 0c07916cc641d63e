import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_photo_quality_scores_every_member_on_each_photo_cropped_to_its_stride(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "odd.png"  # 37x50: a crop to 36x48 for stride 4 and 36x50 for stride 2
    Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "quality.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "photo_quality.py"), "--models", str(model_dir),
                           "--photos", str(photo), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert set(result["psnr_db"]["odd.png"]) == {"tiny_autoencoder", "tiny_fine"} and result["default"] == manifest["default_autoencoder"]
    rgb = np.asarray(Image.open(photo), dtype=np.float32) / 255
    for name, stride in (("tiny_autoencoder", 4), ("tiny_fine", 2)):
        x = np.ascontiguousarray(rgb[: 37 // stride * stride, : 50 // stride * stride].transpose(2, 0, 1)[None])
        enc, dec = (ort.InferenceSession(str(model_dir / name / f"{role}.onnx")) for role in ("encoder", "decoder"))
        y = dec.run(None, {"latent": enc.run(None, {"image": x})[0]})[0]
        assert abs(result["psnr_db"]["odd.png"][name] - 10 * np.log10(1 / np.mean((y - x) ** 2))) < 1e-3
    assert "| median |" in proc.stdout
