"""Photo-sized and hostile requests (issue: photo-sized requests): each test is one row of what a user met,
in-process against the real app."""

import asyncio
import io
import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.images import decode_image
from service.main import create_app
from service.settings import SHIPPED_MODELS, Settings
from tests.service.conftest import png


def jpeg(width: int, height: int, seed: int = 0, exif=None) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((width, height), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def record_runs(app, role):
    """Wrap a model's session run to record the input shapes it is given."""
    model = app.state.runtime.model(role)
    shapes, run = [], model.run

    def recording(batch, options=None):
        shapes.append(batch.shape)
        return run(batch, options)

    model.run = recording
    return shapes


def test_colorize_on_a_photo_predicts_colour_at_a_reduced_size_and_keeps_the_full_size_luma(make_client):
    client = make_client()
    shapes = record_runs(client.app, "colorizer")
    body = jpeg(512, 384)
    resp = client.post("/colorize", content=body, headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200
    out = Image.open(io.BytesIO(resp.content))
    assert out.size == (512, 384)
    (shape,) = shapes
    assert shape[2] * shape[3] <= 512 * 384 // 16 + 512  # 1/4 of each side (plus stride padding)
    # The luma is the photo's own, at full resolution: only the colour was predicted.
    y_in = np.asarray(Image.open(io.BytesIO(body)).convert("L"), dtype=int)
    y_out = np.asarray(out.convert("L"), dtype=int)
    assert np.abs(y_in - y_out).mean() < 2.0


@pytest.mark.parametrize("width, height", [(1024, 768), (2048, 1536), (4000, 3000)])
def test_colorize_work_is_bounded_whatever_the_photo_size(make_client, width, height):
    client = make_client()
    shapes = record_runs(client.app, "colorizer")
    resp = client.post("/colorize", content=jpeg(width, height), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200 and Image.open(io.BytesIO(resp.content)).size == (width, height)
    assert sum(s[2] * s[3] for s in shapes) <= client.app.state.runtime.settings.colorize_max_work_pixels + width + height  # + stride padding


def test_thumbnails_are_colorized_at_full_resolution_as_before(make_client):
    client = make_client()
    shapes = record_runs(client.app, "colorizer")
    assert client.post("/colorize", content=png((32, 32)), headers={"content-type": "image/png"}).status_code == 200
    assert shapes == [(1, 1, 32, 32)]


def test_a_small_request_waits_for_one_tile_not_for_a_whole_photo():
    # Tiles of the large image take turns with other requests in the model's queue (the shipped models: the
    # photo must take longer than the thumbnail's 0.3 s head start).
    # A generous deadline: small tiles have a high estimated cost, which must not get the photo refused on a busy machine.
    app = create_app(Settings(model_dir=SHIPPED_MODELS, tile_memory_mb=8, batch_min_run_ms=0, inference_timeout_s=600))
    finished = []

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
                async def send(name, body, delay):
                    await asyncio.sleep(delay)
                    r = await c.post("/reconstruct", content=body, headers={"content-type": "image/jpeg"})
                    finished.append((name, r.status_code))
                await asyncio.gather(send("photo", jpeg(1600, 1200), 0), send("thumbnail", png((32, 32)), 0.3))
        return app.state.runtime.metrics.tiles.labels(app.state.runtime.model("encoder").key)._value.get()

    tiles = asyncio.run(go())
    assert tiles > 4
    assert finished == [("thumbnail", 200), ("photo", 200)]


def test_an_image_too_large_for_the_memory_budget_is_tiled_not_refused():
    # The shipped default's decoder holds ~400 bytes per pixel (the residual members' encoders ~260): a whole run on
    # 1.1 megapixels would not fit half the budget.
    client = TestClient(create_app(Settings(model_dir=SHIPPED_MODELS, memory_budget_mb=256, tile_memory_mb=2048)))
    with client:
        resp = client.post("/reconstruct", content=jpeg(1200, 900), headers={"content-type": "image/jpeg"})
        assert resp.status_code == 200 and Image.open(io.BytesIO(resp.content)).size == (1200, 900)
        runtime = client.app.state.runtime
        assert sum(runtime.metrics.tiles.labels(runtime.model(role).key)._value.get() for role in ("encoder", "decoder")) > 1


def test_a_request_that_can_never_fit_the_budget_is_413_with_the_numbers(model_dir):
    # 16777216 x 1 pixels: padded to the encoder's stride it is 8 rows, 134 million pixels.
    image = Image.new("RGB", (1 << 24, 1), (120, 30, 200))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    client = TestClient(create_app(Settings(model_dir=model_dir, memory_budget_mb=512)))
    with client:
        resp = client.post("/reconstruct", content=buf.getvalue(), headers={"content-type": "image/png"})
        as_latent = client.post("/encode?size=native", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert as_latent.status_code == 413  # 16.7 million latent values as JSON
    assert resp.status_code == 413
    error = resp.json()["error"]
    assert error["code"] == "request_too_large" and "MB" in error["message"] and "CAE_MEMORY_BUDGET_MB" in error["message"]


def test_a_request_while_the_budget_is_held_is_503_with_retry_after(make_client):
    client = make_client(memory_budget_mb=400)
    admission = client.app.state.runtime.admission
    admission.reserved_bytes = admission.budget_bytes - (1 << 20)  # others hold all but 1 MB
    resp = client.post("/reconstruct", content=jpeg(640, 480), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
    assert "memory budget" in resp.json()["error"]["message"]
    admission.reserved_bytes = 0
    assert client.post("/reconstruct", content=jpeg(640, 480), headers={"content-type": "image/jpeg"}).status_code == 200


def test_a_burst_gets_only_200s_and_fast_503s_never_504s(model_dir):
    # Each colorizer run really takes 0.1 s and is expected to take 0.3 s: with a 1 s deadline, three of
    # the 20 fit; the rest must be told at once (503 + Retry-After), not time out. The estimate is 3x the
    # truth because a shared CI machine can stretch 0.1 s (with 1.2x, one CI run got a 504).
    app = create_app(Settings(model_dir=model_dir, inference_timeout_s=1.0, batching=False))

    async def go():
        async with app.router.lifespan_context(app):
            model = app.state.runtime.model("colorizer")
            run = model.run

            def slow(batch, options=None):
                time.sleep(0.1)
                return run(batch, options)

            model.run = slow
            model.cost.fixed_s, model.cost.seconds_per_pixel = 0.3, 0.0  # estimates err on the safe side
            app.state.runtime.batchers["colorizer"].min_run_s = 0
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                started = time.perf_counter()
                rs = await asyncio.gather(*[c.post("/colorize", content=png(seed=i), headers={"content-type": "image/png"})
                                            for i in range(20)])
                return rs, time.perf_counter() - started

    responses, elapsed = asyncio.run(go())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 3
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
    assert elapsed < 2


def test_after_a_504_no_compute_is_left_running(make_client):
    # The colorizer underestimates its cost (as any estimate can), so a big run is admitted and passes
    # the deadline: it must be stopped, leaving the model free for the next request at once.
    client = TestClient(create_app(Settings(model_dir=SHIPPED_MODELS, inference_timeout_s=1.0, tile_memory_mb=4096)))
    with client:
        model = client.app.state.runtime.model("colorizer")
        model.cost.seconds_per_pixel = 1e-9
        x = np.zeros((1, 1, 512, 768), dtype=np.float32)  # several seconds of work on this CPU
        started = time.perf_counter()
        resp = client.post("/v2/models/colorizer/infer", json={"inputs": [{"name": "gray", "shape": list(x.shape),
                                                                             "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert resp.status_code == 504
        next_started = time.perf_counter()
        small = client.post("/colorize?size=32", content=png(), headers={"content-type": "image/png"})
        assert small.status_code == 200
        assert time.perf_counter() - next_started < 1.0, "the abandoned run kept the model busy"
        assert time.perf_counter() - started < 3.0


def test_a_v2_output_too_large_for_json_is_413_before_running(make_client):
    client = make_client(max_json_values=100_000)
    z = np.zeros((2, 8, 8, 8), dtype=np.float32)  # the tiny decoder's latent: 8 channels, stride 4 -> 2x3x32x32 out
    body = {"inputs": [{"name": "latent", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}]}
    assert client.post("/v2/models/decoder/infer", json=body).status_code == 200
    z = np.zeros((64, 8, 16, 16), dtype=np.float32)
    body = {"inputs": [{"name": "latent", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}]}
    resp = client.post("/v2/models/decoder/infer", json=body)
    assert resp.status_code == 413 and "CAE_MAX_JSON_VALUES" in resp.json()["error"]


def test_an_empty_api_key_is_refused_at_start():
    with pytest.raises(ValueError, match="CAE_API_KEY is set but empty"):
        Settings(api_key="")


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    body = jpeg(40, 20, exif=exif)
    assert decode_image(body, 1 << 20).shape == (40, 20, 3)


def test_exif_orientation_reaches_the_output(make_client):
    exif = Image.Exif()
    exif[0x0112] = 6
    resp = make_client().post("/reconstruct", content=jpeg(64, 32, exif=exif), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200 and Image.open(io.BytesIO(resp.content)).size == (32, 64)


@pytest.mark.parametrize("path", ["/decode", "/v2/models/decoder/infer", "/reconstruct"])
def test_chunked_bodies_over_the_limit_are_413_on_every_endpoint(make_client, path):
    client = make_client(max_body_bytes=1 << 20)

    def chunks():
        yield b'{"shape": [2, 1, 1], "latent": ['
        for _ in range(200):
            yield b"0.5, " * 1200
        yield b"0.5]}"

    resp = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    error = resp.json()["error"]
    assert resp.status_code == 413 and "larger than the limit" in (error if path.startswith("/v2") else error["message"])


def test_a_request_cut_by_shutdown_gets_a_json_503(model_dir):
    # What uvicorn does when its grace period ends: cancel the request's task.
    app = create_app(Settings(model_dir=model_dir, max_batch_wait_ms=5000, batch_min_run_ms=0))
    sent = []

    async def go():
        async with app.router.lifespan_context(app):
            body = png()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive():
                if messages:
                    return messages.pop()
                await asyncio.sleep(3600)

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/reconstruct", "raw_path": b"/reconstruct", "query_string": b"",
                     "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
                     "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "scheme": "http", "http_version": "1.1",
                     "root_path": "", "asgi": {"version": "3.0"}}
            task = asyncio.create_task(app(scope, receive, send))
            await asyncio.sleep(0.5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "shutting_down"


def test_a_keyless_service_refuses_requests_arriving_on_a_public_address(model_dir):
    # What `uvicorn service.main:app --host 0.0.0.0` gave: an open, keyless service. Requests reaching
    # the app on a non-loopback local address now need the key, or CAE_INSECURE.
    async def status(settings, base):
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
                r = await c.post("/reconstruct", content=png(), headers={"content-type": "image/png"})
                h = await c.get("/healthz")
                return r.status_code, h.status_code

    assert asyncio.run(status(Settings(model_dir=model_dir), "http://10.1.2.3:8000")) == (403, 200)
    assert asyncio.run(status(Settings(model_dir=model_dir), "http://127.0.0.1:8000")) == (200, 200)
    assert asyncio.run(status(Settings(model_dir=model_dir, insecure=True), "http://10.1.2.3:8000")) == (200, 200)
    assert asyncio.run(status(Settings(model_dir=model_dir, api_key="k"), "http://10.1.2.3:8000"))[0] == 401


def test_authentication_comes_before_the_body_is_parsed(make_client):
    client = make_client(api_key="secret")
    resp = client.post("/decode", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 401
    resp = client.post("/decode", content=b"{not json", headers={"content-type": "application/json", "authorization": "Bearer secret"})
    assert resp.status_code == 422
