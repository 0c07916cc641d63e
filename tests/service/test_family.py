"""The service serves every autoencoder of the models folder by name (the fixture: tiny_autoencoder, the
default, with 8 latent channels at stride 4; tiny_fine with 4 channels at stride 2)."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import onnxruntime_reference, png

PNG = {"content-type": "image/png"}


def test_v1_models_lists_the_family_and_the_default(client):
    body = client.get("/v1/models").json()
    assert body["default_autoencoder"] == "tiny_autoencoder"
    family = {a["name"]: a for a in body["autoencoders"]}
    assert set(family) == {"tiny_autoencoder", "tiny_fine"}
    assert family["tiny_autoencoder"]["default"] and not family["tiny_fine"]["default"]
    assert family["tiny_fine"]["latent_size_32x32"] == 4 * 16 * 16 and family["tiny_fine"]["stride"] == 2
    assert family["tiny_fine"]["models"] == ["tiny_fine.encoder", "tiny_fine.decoder"]
    assert body["aliases"] == {"encoder": "tiny_autoencoder.encoder", "decoder": "tiny_autoencoder.decoder"}
    assert {m["key"] for m in body["models"]} == {"tiny_autoencoder.encoder", "tiny_autoencoder.decoder", "tiny_fine.encoder",
                                                  "tiny_fine.decoder", "colorizer"}
    assert client.get("/readyz").json()["autoencoders"] == ["tiny_autoencoder", "tiny_fine"]


def test_encode_by_name_and_by_default(client):
    default = client.post("/encode", content=png(), headers=PNG).json()
    fine = client.post("/encode?model=tiny_fine", content=png(), headers=PNG).json()
    named = client.post("/encode?model=tiny_autoencoder", content=png(), headers=PNG).json()
    assert default["model"] == named["model"] == "tiny_autoencoder" and default["results"] == named["results"]
    assert fine["model"] == "tiny_fine" and fine["results"][0]["shape"] == [4, 16, 16]
    assert default["results"][0]["shape"] == [8, 8, 8]
    # What the model file computes (the service resizes to 32x32 at size=32; the fixture image is 32x32).
    x = np.asarray(Image.open(io.BytesIO(png())).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255
    expected = onnxruntime_reference(client.app.state.runtime.settings.model_dir, "tiny_fine.encoder", x)
    assert np.allclose(np.array(fine["results"][0]["latent"]).reshape(4, 16, 16), expected[0], atol=1e-6)


def test_reconstruct_and_decode_by_name(client):
    fine = client.post("/reconstruct?model=tiny_fine", content=png(size=(40, 24)), headers=PNG)
    coarse = client.post("/reconstruct", content=png(size=(40, 24)), headers=PNG)
    assert fine.status_code == coarse.status_code == 200
    assert fine.headers["x-model"] == "tiny_fine" and coarse.headers["x-model"] == "tiny_autoencoder"
    assert Image.open(io.BytesIO(fine.content)).size == (40, 24) and fine.content != coarse.content
    # /encode's JSON names its autoencoder; /decode takes that name from the body or the query.
    encoded = client.post("/encode?model=tiny_fine&size=native", content=png(size=(40, 24)), headers=PNG).json()
    latent = encoded["results"][0]
    from_body = client.post("/decode", json={**latent, "model": encoded["model"]})
    from_query = client.post("/decode?model=tiny_fine", json=latent)
    assert from_body.status_code == from_query.status_code == 200 and from_body.content == from_query.content
    assert from_body.headers["x-model"] == "tiny_fine" and Image.open(io.BytesIO(from_body.content)).size == (40, 24)


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({"url": "/encode?model=nope", "content": png(), "headers": PNG}, 404, "no autoencoder 'nope' (it serves: tiny_autoencoder, tiny_fine)"),
    ({"url": "/reconstruct?model=colorizer", "content": png(), "headers": PNG}, 404, "no autoencoder 'colorizer'"),
    ({"url": "/decode?model=nope", "json": {"shape": [4, 1, 1], "latent": [0.0] * 4}}, 404, "no autoencoder 'nope'"),
    ({"url": "/decode", "json": {"shape": [4, 1, 1], "latent": [0.0] * 4, "model": "nope"}}, 404, "no autoencoder 'nope'"),
    # tiny_fine's latent without its name goes to the default decoder, which takes 8 channels: a clear 422.
    ({"url": "/decode", "json": {"shape": [4, 1, 1], "latent": [0.0] * 4}}, 422, "shape must be [8, h, w] with h, w >= 1 for autoencoder tiny_autoencoder"),
    ({"url": "/decode?model=tiny_autoencoder", "json": {"shape": [4, 1, 1], "latent": [0.0] * 4, "model": "tiny_fine"}}, 422,
     "the body's model 'tiny_fine' is not the query's 'tiny_autoencoder'"),
])
def test_unknown_or_mismatched_names_are_clear_errors(client, request_kwargs, status, message):
    resp = client.post(**request_kwargs)
    assert resp.status_code == status and message in resp.json()["error"]["message"]


def test_v2_names_every_part_and_aliases_the_default(client):
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    model_dir = client.app.state.runtime.settings.model_dir
    for name, channels in (("tiny_fine.encoder", 4), ("tiny_autoencoder.encoder", 8), ("encoder", 8)):
        resp = client.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "image", "shape": [1, 3, 8, 8],
                                                                           "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert resp.status_code == 200, resp.text
        out = resp.json()["outputs"][0]
        assert resp.json()["model_name"] == name and out["shape"][1] == channels
        assert np.allclose(np.array(out["data"]).reshape(out["shape"]), onnxruntime_reference(model_dir, name, x), atol=1e-6)
    meta = client.get("/v2/models/tiny_fine.decoder").json()
    assert meta["inputs"][0]["shape"] == [-1, 4, -1, -1]
    assert client.get("/v2/models/tiny_fine.decoder/ready").status_code == 200
    assert client.get("/v2/models/tiny_fine/ready").status_code == 404  # an autoencoder is two models, not one


def test_cae_models_serves_only_the_named_and_keeps_the_folders_default_when_named(make_client):
    client = make_client(models="colorizer, tiny_autoencoder")
    body = client.get("/v1/models").json()
    assert body["default_autoencoder"] == "tiny_autoencoder"
    assert [a["name"] for a in body["autoencoders"]] == ["tiny_autoencoder"]
    assert {m["key"] for m in body["models"]} == {"tiny_autoencoder.encoder", "tiny_autoencoder.decoder", "colorizer"}
    assert client.post("/colorize", content=png(), headers=PNG).status_code == 200
    refused = client.post("/encode?model=tiny_fine", content=png(), headers=PNG)
    assert refused.status_code == 404 and "(it serves: tiny_autoencoder)" in refused.json()["error"]["message"]
    assert client.post("/v2/models/tiny_fine.encoder/infer", json={}).status_code == 404


def test_cae_models_without_the_folders_default_makes_the_first_named_the_default(make_client):
    client = make_client(models="tiny_fine")
    assert client.get("/readyz").json()["autoencoders"] == ["tiny_fine"]
    body = client.get("/v1/models").json()
    assert body["default_autoencoder"] == "tiny_fine" and body["aliases"]["encoder"] == "tiny_fine.encoder"
    encoded = client.post("/encode", content=png(), headers=PNG).json()
    assert encoded["model"] == "tiny_fine" and encoded["results"][0]["shape"] == [4, 16, 16]
    missing = client.post("/colorize", content=png(), headers=PNG)
    assert missing.status_code == 404 and "colorizer" in missing.json()["error"]["message"]


def test_cae_models_naming_what_the_folder_lacks_stops_the_startup(model_dir, tmp_path):
    import shutil

    from service.models import ModelLoadError, load_models

    with pytest.raises(ModelLoadError, match=r"CAE_MODELS: 'nope': not in this folder \(it has tiny_autoencoder, tiny_fine, "
                                             r"colorizer\)"):
        load_models(model_dir, "cpu", 1, only=["tiny_fine", "nope"])
    # Only the named models' files are checked and loaded: another member's damaged file does not matter.
    folder = shutil.copytree(model_dir, tmp_path / "models")
    (folder / "tiny_autoencoder" / "encoder.onnx").write_bytes(b"damaged")
    served = load_models(folder, "cpu", 1, only=["tiny_fine"])
    assert sorted(served) == ["tiny_fine.decoder", "tiny_fine.encoder"] and served.default_autoencoder == "tiny_fine"
    with pytest.raises(ModelLoadError, match="sha256 does not match"):
        load_models(folder, "cpu", 1)


def test_two_runs_of_one_network_are_told_apart_by_their_member_names(model_dir, tmp_path):
    # `cae export --autoencoder RUN=NAME` serves a second run of a network beside the first: the entries share
    # the network's name, and every response names the member asked for.
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    network = manifest["models"]["tiny_autoencoder.encoder"]["name"]
    for role in ("encoder", "decoder"):
        manifest["models"][f"tiny_fine.{role}"]["name"] = network
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_dir=folder)), raise_server_exceptions=False) as client:
        assert {a["name"] for a in client.get("/v1/models").json()["autoencoders"]} == {"tiny_autoencoder", "tiny_fine"}
        reconstructed = client.post("/reconstruct?model=tiny_fine", content=png(), headers=PNG)
        assert reconstructed.status_code == 200 and reconstructed.headers["x-model"] == "tiny_fine"
        encoded = client.post("/encode?model=tiny_fine", content=png(), headers=PNG).json()
        assert encoded["model"] == "tiny_fine" and encoded["results"][0]["shape"] == [4, 16, 16]
