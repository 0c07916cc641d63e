"""Train -> export -> serve: tiny models trained here, exported by the real export step, answered by the
real app the same as PyTorch computes them."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import needs_torch

pytestmark = [needs_torch, pytest.mark.slow]


def test_what_training_made_the_service_serves(exported_models):
    import torch
    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings
    from training.run import Run

    folder, manifest = exported_models
    run = Run.load(manifest["selection"]["chosen"]["run"])
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with TestClient(create_app(Settings(model_dir=folder))) as client:
        body = client.post("/encode", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
        assert body["model"] == run.name  # the default is the autoencoder the rule chose
        reconstructed = client.post("/reconstruct", content=buf.getvalue(), headers={"content-type": "image/png"})
        colorized = client.post("/colorize", content=buf.getvalue(), headers={"content-type": "image/png"})
        # Every member of the family, by name, computes what its PyTorch model does.
        for candidate in manifest["selection"]["candidates"]:
            member = Run.load(candidate["run"])
            body = client.post(f"/encode?model={member.name}", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
            served = np.array(body["results"][0]["latent"], dtype=np.float32).reshape(body["results"][0]["shape"])
            with torch.no_grad():
                expected = member.model().encode(x)[0]
            assert body["model"] == member.name
            np.testing.assert_allclose(served, expected.numpy(), atol=1e-4)
    assert reconstructed.status_code == 200 and colorized.status_code == 200
    with Image.open(io.BytesIO(reconstructed.content)) as out:
        assert out.size == (32, 32)


def test_a_pca_autoencoder_exports_and_serves_whole_and_in_tiles(tiny_runs, tmp_path, monkeypatch):
    # Its stride is a whole 32x32 tile: the export checks parity at 32x32 to 128x128, and a photo cut into the
    # service's tiles (a tiny tile budget) comes back the same as in one run.
    import onnx
    import torch
    from fastapi.testclient import TestClient

    from export.exporter import export_models
    from service.main import create_app
    from service.settings import Settings
    from training.model import PCAAutoencoderConfig
    from training.run import Run
    from training.train import TrainConfig, train

    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    config = PCAAutoencoderConfig(components=8, width=4, levels=2)
    train(config, TrainConfig(data="fake:160", epochs=1, batch_size=32, precision="fp32", loss="psnr"), out=tmp_path / "pae", progress=False)
    manifest = export_models([tmp_path / "pae"], tiny_runs["colorizer"], tmp_path / "models")
    encoder = manifest["models"][f"{config.name}.encoder"]
    assert encoder["stride"] == 32 and encoder["latent_size_32x32"] == 8
    assert max(encoder["parity"].values()) <= 1e-4 and max(manifest["models"][f"{config.name}.decoder"]["parity"].values()) <= 1e-4
    assert encoder["test"]["psnr"] == pytest.approx(Run.load(tmp_path / "pae").state.test["psnr"], abs=1e-3)
    # Each file holds the projection once: its learned change is folded into the axes at export.
    for role in ("encoder", "decoder"):
        graph = onnx.load(tmp_path / "models" / manifest["models"][f"{config.name}.{role}"]["file"]).graph
        assert sum(list(t.dims) == [8, 3, 32, 32] for t in graph.initializer) == 1

    image = np.random.default_rng(5).integers(0, 256, (480, 600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    outputs, tiles = [], []
    for tile_mb in (512, 1):
        app = create_app(Settings(model_dir=tmp_path / "models", tile_memory_mb=tile_mb, batch_min_run_ms=0))
        with TestClient(app) as client:
            response = client.post("/reconstruct", content=buf.getvalue(), headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
            tiles.append(app.state.runtime.metrics.tiles.labels(app.state.runtime.model("encoder").key)._value.get())
        with Image.open(io.BytesIO(response.content)) as out:
            outputs.append(np.asarray(out.convert("RGB"), dtype=np.int16))
    assert outputs[0].shape == image.shape and tiles[0] == 0 < tiles[1]
    assert np.abs(outputs[0] - outputs[1]).max() <= 1
    # And the image is what PyTorch makes of it (the service pads to a multiple of 32 and crops back).
    with torch.no_grad():
        x = torch.from_numpy(image[:, :576].transpose(2, 0, 1)[None].astype(np.float32) / 255)
        expected = Run.load(tmp_path / "pae").model()(x)[0].numpy().transpose(1, 2, 0) * 255
    assert np.abs(outputs[0][40:440, 40:530] - expected[40:440, 40:530]).mean() < 1.0
