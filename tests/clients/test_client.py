"""The real client against the real app in-process (sync through TestClient's transport, async through ASGI)."""

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cae_client import (AsyncClient, Client, InvalidImage, InvalidInput, LatentResult, RetryPolicy, TooLarge, TransportError,
                        Unauthorised, Unavailable)
from cae_client.cli import main as cli_main
from cae_client.errors import CaeError
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import png

NO_WAIT = RetryPolicy(max_retries=3, backoff_s=0.0)


@pytest.fixture
def app_client(model_dir):
    def make(**settings):
        test_client = TestClient(create_app(Settings(model_dir=model_dir, **settings)))
        test_client.__enter__()
        made.append(test_client)
        return Client(base_url="http://testserver", transport=test_client._transport, retries=NO_WAIT, api_key=settings.get("api_key"))

    made = []
    yield make
    for t in made:
        t.__exit__(None, None, None)


def inputs(tmp_path):
    path = tmp_path / "in.png"
    path.write_bytes(png())
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return {"path": path, "str": str(path), "bytes": png(), "pil": Image.open(path), "hwc_uint8": rgb,
            "chw_float": rgb.transpose(2, 0, 1).astype(np.float32) / 255}


def test_every_input_kind_gives_the_same_result(app_client, tmp_path):
    cae = app_client()
    results = {k: cae.reconstruct(v) for k, v in inputs(tmp_path).items()}
    reference = np.asarray(results["path"].image)
    for kind, r in results.items():
        assert r.image.size == (32, 32) and r.model and r.version == "1"
        assert np.array_equal(np.asarray(r.image), reference), kind


def test_sync_methods(app_client, tmp_path):
    cae = app_client()
    assert cae.ready()
    colour = cae.colorize(png(), size="32", format="jpeg")
    assert colour.image.format == "JPEG"
    z = cae.encode(png())
    assert isinstance(z, LatentResult) and z.latent.dtype == np.float32 and z.latent.ndim == 3
    assert np.array_equal(np.asarray(cae.decode(z).image), np.asarray(cae.reconstruct(png(), size="32").image))
    assert np.array_equal(np.asarray(cae.decode(z.latent).image), np.asarray(cae.decode(z.to_json()).image))
    batch = cae.reconstruct_batch([png(seed=i) for i in range(3)])
    assert [np.asarray(r.image).tolist() for r in batch] == [np.asarray(cae.reconstruct(png(seed=i)).image).tolist() for i in range(3)]
    assert len(cae.colorize_batch([png(), png(seed=1)])) == 2
    zs = cae.encode_batch([png(), png(seed=1)])
    assert len(zs) == 2 and len(cae.decode_batch(zs)) == 2
    assert {m["role"] for m in cae.models()["models"]} == {"encoder", "decoder", "colorizer"}


def test_every_autoencoder_of_the_family_by_name(app_client):
    cae = app_client()
    assert [a["name"] for a in cae.models()["autoencoders"]] == ["tiny_autoencoder", "tiny_fine"]
    fine = cae.encode(png(), model="tiny_fine")
    assert fine.model == "tiny_fine" and fine.shape == (4, 16, 16) and cae.encode(png()).shape == (8, 8, 8)
    # An encode result is decoded by the autoencoder that made it, without naming it again.
    back = cae.decode(fine)
    assert back.model == "tiny_fine"
    assert np.array_equal(np.asarray(back.image), np.asarray(cae.reconstruct(png(), size="32", model="tiny_fine").image))
    assert cae.decode(fine.latent, model="tiny_fine").image.size == (32, 32)
    assert [r.model for r in cae.reconstruct_batch([png(), png(seed=1)], model="tiny_fine")] == ["tiny_fine"] * 2
    with pytest.raises(InvalidInput, match="for autoencoder tiny_autoencoder"):
        cae.decode(fine.latent)  # a bare array goes to the default, which takes 8 channels
    with pytest.raises(CaeError, match="no autoencoder 'nope'") as caught:
        cae.reconstruct(png(), model="nope")
    assert caught.value.status == 404


def test_async_methods(model_dir):
    async def go():
        app = create_app(Settings(model_dir=model_dir))
        async with app.router.lifespan_context(app):
            async with AsyncClient(base_url="http://test", transport=httpx.ASGITransport(app=app)) as cae:
                assert await cae.ready()
                r = await cae.reconstruct(png())
                c = await cae.colorize(png(), size="32")
                z = await cae.encode(png())
                d = await cae.decode(z)
                rb = await cae.reconstruct_batch([png(), png(seed=1)])
                cb = await cae.colorize_batch([png(), png(seed=1)])
                zb = await cae.encode_batch([png(), png(seed=1)])
                db = await cae.decode_batch(zb)
                models = await cae.models()
                with pytest.raises(InvalidImage):
                    await cae.reconstruct(b"not an image")
        return r, c, z, d, rb, cb, zb, db, models

    r, c, z, d, rb, cb, zb, db, models = asyncio.run(go())
    assert r.image.size == c.image.size == d.image.size == (32, 32)
    assert z.shape == zb[0].shape and len(rb) == len(cb) == len(db) == 2 and models["models"]


def test_error_mapping(app_client):
    cae = app_client(max_body_bytes=2000)
    with pytest.raises(InvalidImage) as e:
        cae.reconstruct(b"not an image at all")
    assert e.value.status == 415 and e.value.code == "unsupported_image"
    with pytest.raises(InvalidImage):
        cae.reconstruct(png()[:70])
    with pytest.raises(TooLarge):
        cae.reconstruct(png() + b"\0" * 3000)
    with pytest.raises(InvalidInput) as e:
        cae.decode({"shape": [1, 1, 1], "latent": [0.0]})
    assert e.value.status == 422


def test_api_key_is_sent_and_a_wrong_one_is_unauthorised(app_client):
    cae = app_client(api_key="right")
    assert cae.models()["models"]
    keyless = Client(base_url="http://testserver", transport=cae._http._transport)
    with pytest.raises(Unauthorised) as e:
        keyless.reconstruct(png())
    assert e.value.status == 401


class Flaky(httpx.BaseTransport):
    """Fails the first `failures` requests (connection error or a status), then answers like the real app."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.calls = inner, list(failures), 0

    def handle_request(self, request):
        self.calls += 1
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(failure, headers={"Retry-After": "0"},
                                  json={"error": {"status": failure, "code": "overloaded", "message": "busy"}})
        return self.inner.handle_request(request)


def test_retries_connection_errors_and_503_then_succeeds(app_client):
    inner = app_client()._http._transport
    flaky = Flaky(inner, ["connect", 503, 429])
    cae = Client(base_url="http://testserver", transport=flaky, retries=NO_WAIT)
    assert cae.reconstruct(png()).image.size == (32, 32)
    assert flaky.calls == 4


def test_gives_up_after_max_retries_and_never_retries_validation_errors(app_client):
    inner = app_client()._http._transport
    flaky = Flaky(inner, [503] * 10)
    with pytest.raises(Unavailable):
        Client(base_url="http://testserver", transport=flaky, retries=NO_WAIT).reconstruct(png())
    assert flaky.calls == 4  # the first try and 3 retries
    counting = Flaky(inner, [])
    with pytest.raises(InvalidImage):
        Client(base_url="http://testserver", transport=counting, retries=NO_WAIT).reconstruct(b"junk")
    assert counting.calls == 1
    down = Flaky(inner, ["connect"] * 10)
    with pytest.raises(TransportError):
        Client(base_url="http://testserver", transport=down, retries=NO_WAIT).reconstruct(png())


def test_retry_after_is_honoured():
    policy = RetryPolicy(backoff_s=10)
    assert policy.delay(0, httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert policy.delay(0, httpx.Response(503, headers={"Retry-After": "9999"})) == 30.0
    assert 5 <= policy.delay(0, None) <= 10


def test_cli(app_client, tmp_path, monkeypatch, capsys):
    transport = app_client()._http._transport
    real_init = Client.__init__

    def with_transport(self, **kw):
        real_init(self, **{**kw, "transport": transport, "base_url": "http://testserver"})

    monkeypatch.setattr(Client, "__init__", with_transport)
    src = tmp_path / "in.png"
    src.write_bytes(png())
    assert cli_main(["reconstruct", str(src), "-o", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (32, 32)
    assert cli_main(["colorize", str(src), str(src), "-o", str(tmp_path / "many")]) == 0
    capsys.readouterr()
    assert cli_main(["encode", str(src), "--json"]) == 0
    latent = json.loads(capsys.readouterr().out)
    (tmp_path / "z.json").write_text(json.dumps(latent))
    assert cli_main(["decode", str(tmp_path / "z.json"), "-o", str(tmp_path / "back.png")]) == 0
    assert Image.open(tmp_path / "back.png").size == (32, 32)
    # Another autoencoder of the family: its latent JSON names it, and decode uses it.
    capsys.readouterr()
    assert cli_main(["encode", str(src), "--json", "--model", "tiny_fine"]) == 0
    fine = json.loads(capsys.readouterr().out)
    assert fine["model"] == "tiny_fine" and fine["results"][0]["shape"] == [4, 16, 16]
    (tmp_path / "fine.json").write_text(json.dumps(fine))
    assert cli_main(["decode", str(tmp_path / "fine.json"), "-o", str(tmp_path / "fine.png")]) == 0
    assert cli_main(["reconstruct", str(src), "-o", str(tmp_path / "fine_direct.png"), "--model", "tiny_fine"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fine.png")), np.asarray(Image.open(tmp_path / "fine_direct.png")))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert cli_main(["reconstruct", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "415 unsupported_image" in capsys.readouterr().err
    assert cli_main(["ready"]) == 0


def test_cli_decode_takes_every_json_form_of_a_latent(app_client, tmp_path, monkeypatch, capsys):
    transport = app_client()._http._transport
    real_init = Client.__init__
    monkeypatch.setattr(Client, "__init__", lambda self, **kw: real_init(self, **{**kw, "transport": transport,
                                                                                 "base_url": "http://testserver"}))
    srcs = []
    for seed in (0, 1):
        srcs.append(tmp_path / f"in{seed}.png")
        srcs[-1].write_bytes(png(seed=seed))
    capsys.readouterr()
    assert cli_main(["encode", *map(str, srcs), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    served = app_client()._http.post("/encode", files=[("image", (p.name, p.read_bytes(), "image/png")) for p in srcs]).json()
    assert printed == served  # the client prints what the service answers
    forms = {"encode": printed, "one": printed["results"][0], "list": printed["results"]}
    for name, body in forms.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
        out = tmp_path / (f"{name}.png" if name == "one" else name)
        assert cli_main(["decode", str(tmp_path / f"{name}.json"), "-o", str(out)]) == 0, name
        made = [out] if name == "one" else sorted(out.iterdir())
        assert len(made) == (1 if name == "one" else 2) and all(Image.open(p).size == (32, 32) for p in made)
    (tmp_path / "junk.json").write_text('{"latents": []}')
    assert cli_main(["decode", str(tmp_path / "junk.json"), "-o", str(tmp_path / "j.png")]) == 2
    assert "expected /encode's JSON" in capsys.readouterr().err


def test_cli_output_into_a_closed_pipe_is_not_an_error(model_dir, tmp_path):
    from tests.service.test_server import start

    big = tmp_path / "big.png"
    big.write_bytes(png((512, 512)))  # its latent's JSON is megabytes: far more than the pipe holds
    proc, port = start(model_dir)
    try:
        shell = f"{sys.executable} -m cae_client.cli --url http://127.0.0.1:{port} encode {big} --size native --json | head -c 20"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "clients" / "python")}
        done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=env, timeout=60)
        assert done.stdout.startswith('{"model": ') and done.stderr == "" and done.returncode == 0
    finally:
        proc.terminate()
        proc.wait(30)


def test_refine_through_the_client_and_the_cli(app_client, tmp_path, monkeypatch, capsys):
    cae = app_client()
    image = png(size=(32, 32))
    plain, refined = cae.encode(image), cae.encode(image, refine=10)
    assert plain.refine == 0 and refined.refine == 10 and refined.shape == plain.shape
    assert not np.allclose(plain.latent, refined.latent)
    # A refined latent decodes to what /reconstruct?refine gives: the same latent, the same decoder.
    assert np.array_equal(np.asarray(cae.decode(refined).image), np.asarray(cae.reconstruct(image, refine=10).image))
    with pytest.raises(InvalidInput, match="refine_unavailable|cannot refine"):
        cae.reconstruct(image, refine=5, model="tiny_fine")

    transport = cae._http._transport
    real_init = Client.__init__
    monkeypatch.setattr(Client, "__init__", lambda self, **kw: real_init(self, **{**kw, "transport": transport,
                                                                              "base_url": "http://testserver"}))
    src = tmp_path / "in.png"
    src.write_bytes(image)
    capsys.readouterr()
    assert cli_main(["encode", str(src), "--json", "--refine", "10"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["refine"] == 10 and np.allclose(np.asarray(body["results"][0]["latent"]), refined.latent.ravel())
    assert cli_main(["reconstruct", str(src), "-o", str(tmp_path / "refined.png"), "--refine", "10"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "refined.png")), np.asarray(cae.reconstruct(image, refine=10).image))
