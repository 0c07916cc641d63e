import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import png

PNG = {"content-type": "image/png"}


def image(resp) -> Image.Image:
    return Image.open(io.BytesIO(resp.content))


@pytest.mark.parametrize("endpoint", ["/reconstruct", "/colorize"])
def test_raw_and_multipart_give_an_image(client, endpoint):
    raw = client.post(endpoint, content=png(), headers=PNG)
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert image(raw).size == (32, 32) and image(raw).mode == "RGB"
    assert raw.headers["x-model"] and raw.headers["x-model-version"] == "1"
    form = client.post(endpoint, files={"image": ("cat.png", png(), "image/png")})
    assert form.status_code == 200 and form.content == raw.content


@pytest.mark.parametrize("endpoint", ["/reconstruct", "/colorize"])
def test_native_size_and_32(client, endpoint):
    photo = png(size=(45, 30), fmt="JPEG")
    assert image(client.post(endpoint, content=photo, headers={"content-type": "image/jpeg"})).size == (45, 30)
    assert image(client.post(f"{endpoint}?size=32", content=photo, headers={"content-type": "image/jpeg"})).size == (32, 32)
    for fmt, pil in (("jpeg", "JPEG"), ("webp", "WEBP")):
        resp = client.post(f"{endpoint}?format={fmt}", content=photo, headers={"content-type": "image/jpeg"})
        assert resp.headers["content-type"] == f"image/{fmt}" and image(resp).format == pil


def test_batch_results_come_back_in_order(client):
    parts = [("image", (f"{i}.png", png(seed=i), "image/png")) for i in range(5)]
    resp = client.post("/reconstruct", files=parts)
    assert resp.status_code == 200
    body = resp.json()
    singles = [client.post("/reconstruct", content=png(seed=i), headers=PNG).content for i in range(5)]
    assert [base64.b64decode(b) for b in body["images"]] == singles


def test_colorize_accepts_gray_and_colour(client):
    gray = client.post("/colorize", content=png(mode="L"), headers=PNG)
    colour = client.post("/colorize", content=png(), headers=PNG)
    assert gray.status_code == colour.status_code == 200
    # A colour image is reduced to its luma first: same luma, same colorization.
    rgb = np.asarray(Image.open(io.BytesIO(png())).convert("RGB"), np.float32) / 255
    y = (np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(y, "L").save(buf, "PNG")
    same_luma = client.post("/colorize", content=buf.getvalue(), headers=PNG)
    diff = np.abs(np.asarray(image(same_luma), int) - np.asarray(image(colour), int))
    assert diff.max() <= 3  # only the 8-bit rounding of Y differs


def test_encode_decode_round_trip(client):
    enc = client.post("/encode", content=png(), headers=PNG)
    assert enc.status_code == 200
    body = enc.json()
    result = body["results"][0]
    c, h, w = result["shape"]
    assert len(result["latent"]) == c * h * w and body["model"] and body["version"] == "1"
    dec = client.post("/decode", json=result)
    assert dec.status_code == 200 and image(dec).size == (32, 32)
    assert dec.content == client.post("/reconstruct?size=32", content=png(), headers=PNG).content
    several = client.post("/encode", files=[("image", ("a.png", png(seed=1), "image/png")), ("image", ("b.png", png(seed=2), "image/png"))])
    assert len(several.json()["results"]) == 2


# The status-code table: every bad input gets the right 4xx and a JSON error body.
@pytest.mark.parametrize("method,path,kwargs,status,code", [
    ("post", "/reconstruct", {"content": b"not an image", "headers": PNG}, 415, "unsupported_image"),
    ("post", "/reconstruct", {"content": png()[:70], "headers": PNG}, 400, "invalid_image"),
    ("post", "/reconstruct", {"content": b"", "headers": PNG}, 400, "empty_body"),
    ("post", "/reconstruct", {"content": png(), "headers": {"content-type": "application/json"}}, 415, "unsupported_media_type"),
    ("post", "/colorize", {"content": b"GIF89a\x01", "headers": {"content-type": "image/gif"}}, 415, "unsupported_image"),
    ("post", "/colorize", {"content": png(fmt="GIF")[:800], "headers": {"content-type": "image/gif"}}, 400, "invalid_image"),
    ("post", "/reconstruct?size=64", {"content": png(), "headers": PNG}, 422, "invalid_request"),
    ("post", "/reconstruct?format=bmp", {"content": png(), "headers": PNG}, 422, "invalid_request"),
    ("post", "/encode", {"files": {"other": (None, "text")}}, 400, "no_image"),
    ("post", "/encode", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no_image"),
    ("post", "/decode", {"json": {"shape": [1, 2], "latent": [1.0]}}, 422, "invalid_request"),
    ("post", "/decode", {"json": {"shape": [999, 2, 2], "latent": [0.0] * 3996}}, 422, "invalid_latent"),
    ("post", "/decode", {"json": {"shape": ["C", 2, 2], "latent": [0.0] * 5}}, 422, "invalid_latent"),
    ("post", "/decode", {"content": b'{"shape": [C, 2, 2], "latent": [' + b",".join([b"NaN"] * 4) + b"]}", "headers": {"content-type": "application/json"}}, 422, "invalid_latent"),
    ("post", "/decode", {"json": {"shape": ["C", 2, 2], "latent": [1e300] * 4}}, 422, "invalid_latent"),
    ("post", "/decode", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
    ("get", "/reconstruct", {}, 405, "method_not_allowed"),
    ("get", "/nowhere", {}, 404, "not_found"),
])
def test_status_code_table(client, method, path, kwargs, status, code):
    channels = client.app.state.runtime.model("decoder").input_channels
    if "json" in kwargs and kwargs["json"]["shape"][0] == "C":  # "C" stands for the decoder's latent channels
        kwargs = {"json": {"shape": [channels, 2, 2], "latent": kwargs["json"]["latent"] * (channels if len(kwargs["json"]["latent"]) == 4 else 1)}}
    if "content" in kwargs and b"[C," in kwargs["content"]:
        kwargs = {**kwargs, "content": b'{"shape": [%d, 2, 2], "latent": [%s]}' % (channels, b",".join([b"NaN"] * 4 * channels))}
    resp = getattr(client, method)(path, **kwargs)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]


def test_pixel_cap_and_body_limit(make_client):
    c = make_client(max_pixels=32 * 32, max_body_bytes=5000)
    assert c.post("/reconstruct", content=png(size=(33, 32)), headers=PNG).status_code == 413
    big = png(size=(32, 32)) + b"\0" * 6000
    resp = c.post("/reconstruct", content=big, headers=PNG)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit must hold mid-stream
        for _ in range(10):
            yield b"\0" * 1000

    resp = c.post("/reconstruct", content=chunks(), headers=PNG)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"


def test_too_many_images_in_one_request(make_client):
    c = make_client(max_images_per_request=2)
    parts = [("image", (f"{i}.png", png(seed=i), "image/png")) for i in range(3)]
    resp = c.post("/reconstruct", files=parts)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_multipart"


def test_api_key(make_client):
    c = make_client(api_key="s3cret")
    assert c.post("/reconstruct", content=png(), headers=PNG).status_code == 401
    wrong = c.post("/reconstruct", content=png(), headers={**PNG, "authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert c.post("/reconstruct", content=png(), headers={**PNG, "authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/v1/models").status_code == 401
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
