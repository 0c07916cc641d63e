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
