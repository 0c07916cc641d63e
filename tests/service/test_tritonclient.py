"""NVIDIA's own V2 client, unchanged, against the real service: health, metadata, and inference with JSON
and with binary tensors for every model, and errors as the protocol writes them."""

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.service.conftest import V2_INPUTS as INPUTS, V2_OUTPUTS, onnxruntime_reference  # noqa: E402
from tests.service.test_server import start  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "triton-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def triton(model_dir):
    proc, port = start(model_dir, CAE_API_KEY=KEY)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield client
    client.close()
    proc.terminate()
    proc.wait(30)


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "cae" and "binary_tensor_data" in meta["extensions"]
    for name, (input_name, _) in INPUTS.items():
        assert triton.is_model_ready(name)
        model = triton.get_model_metadata(name, headers=HEADERS)
        assert model["name"] == name and model["inputs"][0]["name"] == input_name and model["inputs"][0]["datatype"] == "FP32"
    assert not triton.is_model_ready("upscaler")


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_every_model_with_json_and_binary_tensors(triton, model_dir, name, binary):
    input_name, shape = INPUTS[name]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    tensor = httpclient.InferInput(input_name, list(shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output_name = V2_OUTPUTS[name]
    result = triton.infer(name, [tensor], outputs=[httpclient.InferRequestedOutput(output_name, binary_data=binary)],
                          request_id="r-1", headers=HEADERS)
    got = result.as_numpy(output_name)
    expected = onnxruntime_reference(model_dir, name, x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result.get_response()["id"] == "r-1" and result.get_response()["model_name"] == name


def test_binary_output_is_the_default_without_requested_outputs(triton):
    tensor = httpclient.InferInput("image", [1, 3, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, dtype=np.float32))
    result = triton.infer("encoder", [tensor], headers=HEADERS)  # tritonclient asks for binary_data_output
    assert result.as_numpy("latent").shape == (1, 8, 1, 1)
    assert "data" not in result.get_response()["outputs"][0]


def test_errors_reach_the_client_as_messages(triton):
    tensor = httpclient.InferInput("image", [1, 3, 6, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 6, 8), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="H and W must be multiples of 4") as caught:
        triton.infer("encoder", [tensor], headers=HEADERS)
    assert caught.value.status() == "422"
    with pytest.raises(InferenceServerException, match="has no model .upscaler."):
        triton.infer("upscaler", [tensor], headers=HEADERS)
    with pytest.raises(InferenceServerException, match="API key") as caught:
        triton.infer("encoder", [tensor])
    assert caught.value.status() == "401"


def test_versioned_paths(triton):
    tensor = httpclient.InferInput("image", [1, 3, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, dtype=np.float32))
    assert triton.infer("encoder", [tensor], model_version="1", headers=HEADERS).as_numpy("latent").shape == (1, 8, 1, 1)
    assert triton.get_model_metadata("encoder", model_version="1", headers=HEADERS)["versions"] == ["1"]
    assert triton.is_model_ready("encoder", model_version="1") and not triton.is_model_ready("encoder", model_version="7")
    with pytest.raises(InferenceServerException, match="has no version '7'"):
        triton.infer("encoder", [tensor], model_version="7", headers=HEADERS)


def test_an_encoder_request_may_ask_to_refine(triton, model_dir):
    from cae.refine import onnx_gradient, refine_latents
    import onnxruntime as ort

    x = np.random.default_rng(2).random((2, 3, 16, 24), dtype=np.float32)
    tensor = httpclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    got = triton.infer("tiny_autoencoder.encoder", [tensor], parameters={"refine": 10}, headers=HEADERS).as_numpy("latent")
    session = ort.InferenceSession(str(model_dir / "tiny_autoencoder/gradient.onnx"), providers=["CPUExecutionProvider"])
    expected = refine_latents(onnx_gradient(session), onnxruntime_reference(model_dir, "tiny_autoencoder.encoder", x), x, 10, lr=0.02)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for name, parameters, message in [("decoder", {"refine": 3}, "applies to an encoder"),
                                      ("tiny_fine.encoder", {"refine": 3}, "cannot refine"),
                                      ("encoder", {"refine": "many"}, "whole number of steps")]:
        input_name, shape = INPUTS[name]
        bad = httpclient.InferInput(input_name, list(shape), "FP32")
        bad.set_data_from_numpy(np.zeros(shape, np.float32))
        with pytest.raises(InferenceServerException, match=message):
            triton.infer(name, [bad], parameters=parameters, headers=HEADERS)
