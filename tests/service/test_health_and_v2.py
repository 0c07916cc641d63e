import asyncio
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from service.main import create_app
from service.models import ModelLoadError
from service.settings import Settings
from tests.service.conftest import png


def test_probes_models_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    models = client.get("/v1/models").json()
    roles = {m["role"]: m for m in models["models"]}
    assert set(roles) == {"encoder", "decoder", "colorizer"}
    assert roles["encoder"]["providers"] == ["CPUExecutionProvider"]
    assert roles["encoder"]["inputs"][0]["name"] == "image" and "psnr" in roles["encoder"]["test"]
    client.post("/reconstruct", content=png(), headers={"content-type": "image/png"})
    client.post("/reconstruct", content=b"junk", headers={"content-type": "image/png"})
    text = client.get("/metrics").text
    for name in ("cae_requests_total", "cae_request_seconds_bucket", "cae_inference_seconds_bucket", "cae_batch_size_bucket",
                 "cae_queue_wait_seconds_bucket", "cae_rejections_total"):
        assert name in text
    assert 'cae_requests_total{route="/reconstruct",status="200"} 1.0' in text
    assert 'cae_requests_total{route="/reconstruct",status="415"} 1.0' in text
    assert client.get("/docs").status_code == 200 and "/reconstruct" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<title>cae" in page.text


def test_kserve_v2(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/encoder").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert client.get("/v2/models/encoder/ready").json()["ready"] is True
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    resp = client.post("/v2/models/encoder/infer", json={"id": "r1", "inputs": [
        {"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert resp.status_code == 200
    out = resp.json()
    assert out["id"] == "r1" and out["model_name"] == "encoder" and out["outputs"][0]["name"] == "latent"
    z = np.asarray(out["outputs"][0]["data"], np.float32).reshape(out["outputs"][0]["shape"])
    # The same numbers as /encode on the same pixels (an exact 8-bit image).
    dec = client.post("/v2/models/decoder/infer", json={"inputs": [
        {"name": "latent", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}]}).json()
    assert dec["outputs"][0]["shape"] == [2, 3, 32, 32]


@pytest.mark.parametrize("path,body,status", [
    ("/v2/models/nothing/infer", {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}, 404),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "gray", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}, 422),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "INT8", "data": [0.0] * 3072}]}, 422),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 10}]}, 422),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "image", "shape": [1, 3, 30, 32], "datatype": "FP32", "data": [0.0] * 2880}]}, 422),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "image", "shape": [3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}, 422),
    ("/v2/models/encoder/infer", {"inputs": []}, 400),
])
def test_kserve_v2_errors(client, path, body, status):
    resp = client.post(path, json=body)
    # The protocol's error body: {"error": "<message>"}, a string (Triton's and KServe's clients read it).
    assert resp.status_code == status and isinstance(resp.json()["error"], str) and resp.json()["error"]


def test_startup_fails_loudly_on_a_tampered_model(model_dir, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    bad = shutil.copytree(model_dir, tmp_path / "models")
    with open(bad / "tiny_fine" / "encoder.onnx", "ab") as f:  # not the default autoencoder: every file is checked
        f.write(b"\0")
    with pytest.raises(ModelLoadError, match="sha256 does not match"):
        with TestClient(create_app(Settings(model_dir=bad))):
            pass
    with pytest.raises(ModelLoadError, match="CAE_PROVIDERS=cuda"):
        with TestClient(create_app(Settings(model_dir=model_dir, providers="cuda"))):
            pass
    with pytest.raises(ModelLoadError, match="manifest.json not found"):
        with TestClient(create_app(Settings(model_dir=tmp_path / "empty"))):
            pass


async def _burst(app, n: int, path="/reconstruct"):
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*[c.post(path, content=png(seed=i), headers={"content-type": "image/png"}) for i in range(n)])


def test_a_burst_beyond_the_queue_gets_exactly_the_expected_503s(model_dir):
    # Requests wait 300 ms in the batcher, so all 10 are in flight at once; 4 are admitted.
    app = create_app(Settings(model_dir=model_dir, max_concurrency=4, max_batch_wait_ms=300, max_batch_size=64,
                              batch_min_run_ms=0))
    responses = asyncio.run(_burst(app, 10))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 4 + [503] * 6
    rejected = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in rejected)


def test_dynamic_batching_groups_concurrent_requests(model_dir):
    app = create_app(Settings(model_dir=model_dir, max_batch_wait_ms=200, max_batch_size=64, batch_min_run_ms=0))
    responses = asyncio.run(_burst(app, 6))
    assert all(r.status_code == 200 for r in responses)
    metrics = app.state.runtime.metrics
    # Two session runs (encoder, decoder) of 6 images each, not 12 runs of one.
    assert metrics.batch_size.labels("tiny_autoencoder.encoder")._sum.get() == 6 and metrics.inference.labels("tiny_autoencoder.encoder")._sum.get() > 0
    counts = {s.labels.get("le"): s.value for m in metrics.registry.collect() if m.name == "cae_batch_size" for s in m.samples
              if s.name == "cae_batch_size_count" and s.labels.get("model") == "tiny_autoencoder.encoder"}
    assert list(counts.values()) == [1.0]


def test_runs_too_cheap_to_batch_skip_the_queue(model_dir):
    # Every run of these tiny models is expected under 10 s, so none waits the 500 ms for a batch.
    app = create_app(Settings(model_dir=model_dir, max_batch_wait_ms=500, max_batch_size=64, batch_min_run_ms=10_000))
    started = time.perf_counter()
    responses = asyncio.run(_burst(app, 6))
    assert all(r.status_code == 200 for r in responses) and time.perf_counter() - started < 5
    metrics = app.state.runtime.metrics
    assert metrics.batch_size.labels("tiny_autoencoder.encoder")._sum.get() == 6
    assert metrics.queue_wait.labels("tiny_autoencoder.encoder")._sum.get() == 0  # never queued
    counts = [s.value for m in metrics.registry.collect() if m.name == "cae_batch_size" for s in m.samples
              if s.name == "cae_batch_size_count" and s.labels.get("model") == "tiny_autoencoder.encoder"]
    assert counts == [6.0]  # six runs of one image


def test_inference_past_its_timeout_is_504(model_dir):
    app = create_app(Settings(model_dir=model_dir, max_batch_wait_ms=500, inference_timeout_s=0.05,
                              batch_min_run_ms=0))
    (resp,) = asyncio.run(_burst(app, 1))
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "inference_timeout"


def test_the_service_never_imports_torch():
    code = "import sys, service.main; bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'training')]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, env={"CAE_MODEL_DIR": "/nonexistent", "PATH": ""})


def test_v2_json_forms_and_binary_tensors_by_hand(client):
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    flat = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]}
    nested = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.tolist()}]}
    # No Content-Type at all (what tritonclient sends), flat and nested data: the same answer.
    a = client.post("/v2/models/encoder/infer", content=json.dumps(flat).encode(), headers={"content-type": ""})
    b = client.post("/v2/models/encoder/infer", json=nested)
    assert a.status_code == b.status_code == 200 and a.json()["outputs"] == b.json()["outputs"]
    # Binary in and out: the JSON header, then the raw little-endian tensor.
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                    "parameters": {"binary_data_size": x.nbytes}}],
                        "outputs": [{"name": "latent", "parameters": {"binary_data": True}}]}).encode()
    c = client.post("/v2/models/encoder/infer", content=head + x.astype("<f4").tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"})
    assert c.status_code == 200
    n = int(c.headers["inference-header-content-length"])
    meta = json.loads(c.content[:n])
    out = np.frombuffer(c.content[n:], dtype="<f4").reshape(meta["outputs"][0]["shape"])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == out.nbytes
    np.testing.assert_array_equal(out.ravel(), np.array(a.json()["outputs"][0]["data"], dtype=np.float32))
    # Malformed framing and mismatches: clear errors in the protocol's form.
    for headers, body, status, words in [
        ({"Inference-Header-Content-Length": "999999"}, head, 400, "outside the body"),
        ({"Inference-Header-Content-Length": "x"}, head, 400, "must be an integer"),
        ({"Inference-Header-Content-Length": str(len(head))}, head + b"\0" * 8, 422, "binary_data_size"),
        ({}, b"{not json", 400, "not valid JSON"),
    ]:
        r = client.post("/v2/models/encoder/infer", content=body, headers=headers)
        assert r.status_code == status and words in r.json()["error"], (headers, r.text)
    wrong_output = {**flat, "outputs": [{"name": "image"}]}
    r = client.post("/v2/models/encoder/infer", json=wrong_output)
    assert r.status_code == 400 and "one output, 'latent'" in r.json()["error"]
    ragged = {"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [[0.0], [0.0, 1.0]]}]}
    assert client.post("/v2/models/encoder/infer", json=ragged).status_code == 422


def test_gpu_batching_defaults_where_cuda_runs_the_models(make_client, monkeypatch):
    from service.settings import GPU_BATCHING, batching_for

    cpu, cuda = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert batching_for(Settings(), cpu) == Settings()
    tuned = batching_for(Settings(), cuda)
    assert {k: getattr(tuned, k) for k in GPU_BATCHING} == GPU_BATCHING
    assert batching_for(Settings(max_batch_size=64), cuda).max_batch_size == 64  # set explicitly: kept
    # The app passes the providers its sessions report (here made to look like CUDA's).
    import service.main

    seen = []
    monkeypatch.setattr(service.main, "batching_for", lambda settings, providers: seen.append(providers) or batching_for(settings, cuda))
    batching = make_client().get("/v1/models").json()["batching"]
    assert batching["max_batch_size"] == 256 and batching["max_batch_wait_ms"] == 2.0
    assert make_client(max_batch_size=8).get("/v1/models").json()["batching"]["max_batch_size"] == 8
    assert seen[0] == cpu


def test_cuda_libraries_are_preloaded_only_where_cuda_may_run(monkeypatch):
    import onnxruntime as ort

    from service import models

    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert models.choose_providers("cpu") == ["CPUExecutionProvider"] and calls == []
    assert models.choose_providers("auto")[0] == "CUDAExecutionProvider" and calls == [1]
    assert models.choose_providers("cuda")[0] == "CUDAExecutionProvider" and calls == [1, 1]

    def broken():
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    assert models.choose_providers("auto")[0] == "CUDAExecutionProvider"  # a failed preload is logged, not fatal
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    assert models.choose_providers("auto") == ["CPUExecutionProvider"] and len(calls) == 2
