"""`refine=<steps>` on /encode and /reconstruct: the encoder's latent refined against the decoder by Adam
on the decoder's gradient graph (the fixture's tiny_autoencoder has one, tiny_fine has none)."""

import io

import numpy as np
import onnxruntime as ort
from PIL import Image

from cae.refine import onnx_gradient, refine_latents
from tests.service.conftest import onnxruntime_reference, png

PNG = {"content-type": "image/png"}


def smooth_png(size=(64, 48), seed=0) -> bytes:
    """A photo-like image (smooth, so the tiny autoencoder reconstructs it roughly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


def test_the_fixture_gradient_is_the_decoders_gradient(model_dir):
    # The hand-written graph against central differences of the decoder itself.
    session = ort.InferenceSession(str(model_dir / "tiny_autoencoder/gradient.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    latent = rng.normal(0.3, 0.2, (2, 8, 2, 3)).astype(np.float32)
    image = rng.random((2, 3, 8, 12), dtype=np.float32)
    gradient, mse = session.run(None, {"latent": latent, "image": image})
    decode = lambda z: onnxruntime_reference(model_dir, "tiny_autoencoder.decoder", z.astype(np.float32)).astype(np.float64)
    loss = lambda z: float(np.log(((decode(z) - image) ** 2).reshape(2, -1).mean(1)).sum())
    assert np.allclose(mse, ((decode(latent) - image) ** 2).reshape(2, -1).mean(1), rtol=1e-5)
    for index in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 5, 1, 1)]:
        step = np.zeros_like(latent, dtype=np.float64)
        step[index] = 1e-3
        numeric = (loss(latent + step) - loss(latent - step)) / 2e-3
        assert abs(numeric - gradient[index]) <= 2e-2 * max(1.0, abs(numeric)), index


def test_reconstruct_with_refine_is_closer_to_the_image(client):
    image = smooth_png()
    plain = client.post("/reconstruct", content=image, headers=PNG)
    refined = client.post("/reconstruct?refine=25", content=image, headers=PNG)
    assert plain.status_code == refined.status_code == 200
    truth = pixels(image)
    assert psnr(pixels(refined.content), truth) > psnr(pixels(plain.content), truth) + 0.5
    assert client.post("/reconstruct?refine=0", content=image, headers=PNG).content == plain.content


def test_encode_with_refine_returns_the_refined_latent(client, model_dir):
    image = smooth_png(size=(32, 32))
    body = client.post("/encode?refine=10", content=image, headers=PNG).json()
    assert body["refine"] == 10 and body["results"][0]["shape"] == [8, 8, 8]
    got = np.array(body["results"][0]["latent"], np.float32).reshape(1, 8, 8, 8)
    # What cae.refine computes from the encoder's latent with the manifest's step size.
    x = pixels(image).transpose(2, 0, 1)[None].copy()
    start = onnxruntime_reference(model_dir, "tiny_autoencoder.encoder", x)
    session = ort.InferenceSession(str(model_dir / "tiny_autoencoder/gradient.onnx"), providers=["CPUExecutionProvider"])
    expected = refine_latents(onnx_gradient(session), start, x, 10, lr=0.02)
    assert np.allclose(got, expected, atol=1e-5)
    plain = client.post("/encode", content=image, headers=PNG).json()
    assert "refine" not in plain and not np.allclose(np.array(plain["results"][0]["latent"]), got.ravel())


def test_refine_errors_are_clear_4xx(make_client):
    client = make_client(max_refine_steps=50)
    image = smooth_png(size=(32, 32))
    for url, status, code in [("/reconstruct?refine=51", 422, "invalid_refine"), ("/encode?refine=-1", 422, None),
                              ("/reconstruct?refine=5&model=tiny_fine", 422, "refine_unavailable"),
                              ("/encode?refine=5&model=tiny_fine", 422, "refine_unavailable")]:
        resp = client.post(url, content=image, headers=PNG)
        assert resp.status_code == status, url
        if code:
            error = resp.json()["error"]
            assert error["code"] == code, url
    message = client.post("/encode?refine=5&model=tiny_fine", content=image, headers=PNG).json()["error"]["message"]
    assert "tiny_fine" in message and "tiny_autoencoder" in message
    assert "CAE_MAX_REFINE_STEPS" in client.post("/encode?refine=51", content=image, headers=PNG).json()["error"]["message"]


def test_refining_a_photo_is_bounded_in_time_and_memory(make_client):
    client = make_client(inference_timeout_s=5.0, tile_memory_mb=1)
    gradient = client.app.state.runtime.models.autoencoders["tiny_autoencoder"].gradient
    assert gradient.cost.seconds_per_pixel > 0 and gradient.cost.bytes_per_pixel > 0  # measured at warm-up
    # Larger than one run may hold: refining needs the whole image in one run.
    too_big = client.post("/reconstruct?refine=5", content=smooth_png(size=(1024, 768)), headers=PNG)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    assert "CAE_TILE_MEMORY_MB" in too_big.json()["error"]["message"] and "megapixels" in too_big.json()["error"]["message"]
    # The same image without refine is tiled as always.
    assert client.post("/reconstruct", content=smooth_png(size=(1024, 768)), headers=PNG).status_code == 200
    # More steps than the deadline allows: refused before any work, not a 504.
    gradient.cost.fixed_s = 0.5
    slow = client.post("/reconstruct?refine=20", content=smooth_png(size=(32, 32)), headers=PNG)
    assert slow.status_code == 413 and slow.json()["error"]["code"] == "request_too_slow"
    assert "refine" in slow.json()["error"]["message"]


def test_v1_models_says_which_autoencoders_refine_and_what_it_gained(client, model_dir):
    family = {a["name"]: a for a in client.get("/v1/models").json()["autoencoders"]}
    assert family["tiny_fine"]["refine"] is None
    refine = family["tiny_autoencoder"]["refine"]
    assert refine["lr"] == 0.02 and refine["max_steps_measured"] == 25
    assert refine["test_psnr_by_steps"]["25"] > family["tiny_autoencoder"]["test_psnr"]


def test_a_refinement_past_its_deadline_is_stopped(make_client):
    # The estimate is made too low (as any estimate can be), so a long refinement is admitted: at the
    # deadline it is stopped between two steps' operators, answered 504, and the decoder is free again.
    import time

    client = make_client(inference_timeout_s=0.5, tile_memory_mb=4096)
    gradient = client.app.state.runtime.models.autoencoders["tiny_autoencoder"].gradient
    gradient.cost.fixed_s, gradient.cost.seconds_per_pixel = 0.0, 1e-12
    started = time.perf_counter()
    resp = client.post("/reconstruct?refine=100", content=smooth_png(size=(1024, 768)), headers=PNG)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "inference_timeout"
    assert time.perf_counter() - started < 3.0
    next_started = time.perf_counter()
    assert client.post("/reconstruct", content=smooth_png(size=(32, 32)), headers=PNG).status_code == 200
    assert time.perf_counter() - next_started < 1.0, "the abandoned refinement kept the decoder busy"
