import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings


def png(size=(32, 32), mode="RGB", seed=0, fmt="PNG", **save) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None, "CMYK": 4, "LA": 2}[mode]
    shape = (size[1], size[0]) + ((channels,) if channels else ())
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture
def make_client(model_dir):
    """A TestClient on a fresh app (lifespan run) with the given settings over the test-exported models."""
    clients = []

    def make(**settings):
        client = TestClient(create_app(Settings(model_dir=model_dir, **settings)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


# One input per V2 model of the test fixture (tests/fixtures/tiny_models): name and a shape it takes. `encoder`
# and `decoder` are the aliases of the default autoencoder's parts; tiny_fine's are named by key.
V2_INPUTS = {"encoder": ("image", (2, 3, 8, 12)), "decoder": ("latent", (2, 8, 2, 3)), "colorizer": ("gray", (1, 1, 8, 8)),
             "tiny_fine.encoder": ("image", (1, 3, 6, 10)), "tiny_fine.decoder": ("latent", (1, 4, 3, 2))}
V2_OUTPUTS = {"encoder": "latent", "decoder": "image", "colorizer": "image", "tiny_fine.encoder": "latent", "tiny_fine.decoder": "image"}


def onnxruntime_reference(model_dir, name: str, x):
    """What the model file itself computes, for comparing the service's answers."""
    import onnxruntime as ort

    from cae.manifest import read_manifest

    manifest = read_manifest(model_dir)
    if name in ("encoder", "decoder"):  # the aliases: the default autoencoder's parts
        name = f"{manifest.default_autoencoder}.{name}"
    entry = manifest.models[name]
    return ort.InferenceSession(str(model_dir / entry.file), providers=["CPUExecutionProvider"]).run(None, {entry.inputs[0]["name"]: x})[0]
