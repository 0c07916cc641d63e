"""V2 over gRPC with NVIDIA's tritonclient[grpc], unchanged, against the real service (CAE_GRPC_PORT): the
same sessions, admission, API key and tensor checks as HTTP."""

import os
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.service.conftest import V2_INPUTS as INPUTS, V2_OUTPUTS, onnxruntime_reference  # noqa: E402
from tests.service.test_server import free_port, start  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "grpc-test-key"
HEADERS = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def triton(model_dir):
    port = free_port()
    proc, http_port = start(model_dir, CAE_API_KEY=KEY, CAE_GRPC_PORT=str(port))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield client, http_port
    client.close()
    proc.terminate()
    proc.wait(30)


def test_health_and_metadata(triton):
    client, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "cae" and "binary_tensor_data" in meta["extensions"]
    for name, (input_name, shape) in INPUTS.items():
        assert client.is_model_ready(name)
        model = client.get_model_metadata(name, headers=HEADERS, as_json=True)
        assert model["inputs"][0]["name"] == input_name and model["inputs"][0]["datatype"] == "FP32"
        assert model["inputs"][0]["shape"] == ["-1", str(shape[1]), "-1", "-1"]  # int64 as JSON strings
    assert not client.is_model_ready("upscaler")


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_infer_every_model(triton, model_dir, name):
    client, _ = triton
    input_name, shape = INPUTS[name]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    tensor = grpcclient.InferInput(input_name, list(shape), "FP32")
    tensor.set_data_from_numpy(x)  # raw_input_contents
    output_name = V2_OUTPUTS[name]
    result = client.infer(name, [tensor], outputs=[grpcclient.InferRequestedOutput(output_name)], request_id="g-1", headers=HEADERS)
    expected = onnxruntime_reference(model_dir, name, x)
    np.testing.assert_allclose(result.as_numpy(output_name), expected, atol=1e-5)
    assert result.get_response().id == "g-1" and result.get_response().model_name == name


def test_errors_and_the_api_key(triton):
    client, http_port = triton
    tensor = grpcclient.InferInput("image", [1, 3, 6, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 6, 8), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="H and W must be multiples of 4") as caught:
        client.infer("encoder", [tensor], headers=HEADERS)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="has no model .upscaler.") as caught:
        client.infer("upscaler", [tensor], headers=HEADERS)
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="API key") as caught:
        client.infer("encoder", [tensor])
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_repository_index()  # one of Triton's RPCs this service does not have
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
    # Counted with the HTTP requests, labelled by RPC.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    assert 'route="grpc inference.GRPCInferenceService/ModelInfer",status="200"' in metrics
    assert 'route="grpc inference.GRPCInferenceService/ModelInfer",status="401"' in metrics


def test_no_open_grpc_port_without_an_api_key(model_dir):
    proc = subprocess.run([sys.executable, "-m", "service", "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CAE_MODEL_DIR": str(model_dir), "CAE_GRPC_PORT": str(free_port()),
                               "CAE_GRPC_HOST": "0.0.0.0"})
    assert proc.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in proc.stderr


def test_a_grpc_port_in_use_is_one_line(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "service", "--port", str(free_port())], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "CAE_MODEL_DIR": str(model_dir), "CAE_GRPC_PORT": str(port)})
    assert proc.returncode == 2 and f"cannot bind 127.0.0.1:{port} (CAE_GRPC_PORT)" in proc.stderr and "Traceback" not in proc.stderr


def test_versions(triton):
    client, _ = triton
    tensor = grpcclient.InferInput("image", [1, 3, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, dtype=np.float32))
    assert client.infer("encoder", [tensor], model_version="1", headers=HEADERS).as_numpy("latent").shape == (1, 8, 1, 1)
    assert client.is_model_ready("encoder", model_version="1") and not client.is_model_ready("encoder", model_version="7")
    with pytest.raises(InferenceServerException, match="has no version '7'"):
        client.infer("encoder", [tensor], model_version="7", headers=HEADERS)


def test_an_encoder_request_may_ask_to_refine(triton, model_dir):
    from cae.refine import onnx_gradient, refine_latents
    import onnxruntime as ort

    client, _ = triton
    x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    tensor = grpcclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    got = client.infer("tiny_autoencoder.encoder", [tensor], parameters={"refine": 10}, headers=HEADERS).as_numpy("latent")
    session = ort.InferenceSession(str(model_dir / "tiny_autoencoder/gradient.onnx"), providers=["CPUExecutionProvider"])
    expected = refine_latents(onnx_gradient(session), onnxruntime_reference(model_dir, "tiny_autoencoder.encoder", x), x, 10, lr=0.02)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(InferenceServerException, match="whole number of steps"):
        client.infer("tiny_autoencoder.encoder", [tensor], parameters={"refine": 2.5}, headers=HEADERS)
    with pytest.raises(InferenceServerException, match="cannot refine"):
        fine = grpcclient.InferInput("image", list(x.shape), "FP32")
        fine.set_data_from_numpy(x)
        client.infer("tiny_fine.encoder", [fine], parameters={"refine": 3}, headers=HEADERS)
