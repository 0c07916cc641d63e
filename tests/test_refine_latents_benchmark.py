import json
import subprocess
import sys
from pathlib import Path

from export.exporter import export_models
from training.model import PCAAutoencoderConfig
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def test_refining_latents_is_measured_for_every_pae_member_from_its_checkpoint(tmp_path):
    config = PCAAutoencoderConfig(components=8, width=4, levels=2, tile=16)
    run = tmp_path / "runs" / config.name
    train(config, TrainConfig(data="fake:200", epochs=1, batch_size=32, precision="fp32", loss="mse"), out=run, progress=False)
    export_models([run], None, tmp_path / "models")
    out = tmp_path / "refine.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "refine_latents.py"), "--models", str(tmp_path / "models"),
                           "--images", "12", "--steps", "0,5", "--batch", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["member"], r["steps"], r["images"]) for r in rows] == [(config.name, 0, 12), (config.name, 5, 12)]
    # Zero steps is the shipped encoder's own latent. A one-epoch model on smooth images is still PCA, whose latent
    # is already the best (what refining wins is tested in tests/export/test_gradient.py): here the steps are run
    # (they take time) and do not make it worse.
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert rows[1]["test_psnr"] > rows[0]["test_psnr"] - 0.01 and rows[1]["ms_per_image"] > rows[0]["ms_per_image"]
    assert all(abs(r["margin_db"] - (r["test_psnr"] - r["pca_psnr"])) < 2e-3 for r in rows)
    assert manifest["models"][f"{config.name}.encoder"]["checkpoint"]["path"] and config.name in proc.stdout
