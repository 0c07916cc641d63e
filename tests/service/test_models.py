"""service.models: onnxruntime's arena regions go back once the service is idle."""

import gc
import time

import numpy as np
import onnxruntime as ort
import pytest

from service import deps
from service.memory import give_large_blocks_back, trim
from service.models import SHRINK_ABOVE_BYTES, Model, load_models, run_into_own_buffers
from tests.service.conftest import png


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def three_channel_model() -> Model:
    """gray (N, 1, H, W) -> image (N, 3, H, W): an output as large as a photo's, and an intermediate."""
    onnx = pytest.importorskip("onnx", reason="builds its graph with onnx (the export extra); the serve extra alone lacks it")
    TensorProto, helper = onnx.TensorProto, onnx.helper
    gray = helper.make_tensor_value_info("gray", TensorProto.FLOAT, ["N", 1, "H", "W"])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    nodes = [helper.make_node("Relu", ["gray"], ["r"]), helper.make_node("Concat", ["r", "r", "gray"], ["image"], axis=1)]
    graph = helper.make_model(helper.make_graph(nodes, "three", [gray], [image]), opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    facts = {"name": "three", "stride": 1, "inputs": [{"shape": ["N", 1, "H", "W"]}], "outputs": [{"shape": ["N", 3, "H", "W"]}]}
    return Model("colorizer", facts, session, "colorizer")


def test_outputs_in_own_buffers_are_the_sessions_outputs(model_dir):
    models = load_models(model_dir)
    decoder = models[models.resolve("decoder")]
    latent = np.random.default_rng(0).standard_normal((2, decoder.input_channels, 3, 2), dtype=np.float32)
    expected = decoder.run(latent)
    got = run_into_own_buffers(decoder.session, {decoder.input_name: latent}, {decoder.output_name: decoder.output_shape(latent.shape)},
                               decoder.run_options(SHRINK_ABOVE_BYTES + 1))[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not give_large_blocks_back(), reason="needs glibc (mallopt) to give large blocks back")
def test_a_large_runs_arena_region_stays_until_released():
    # A shrinking run cannot return the region its output lies in (the output is still in use when it
    # ends), so ~256 MB stay resident after the output is long gone, until release_arena.
    model = three_channel_model()
    big = np.random.default_rng(0).random((1, 1, 4000, 4000), dtype=np.float32)  # 64 MB in, 192 MB out
    before = rss_mb()
    out = model.run(big, model.run_options(SHRINK_ABOVE_BYTES + 1))
    del out
    gc.collect()
    trim()
    held = rss_mb() - before
    model.release_arena()
    trim()
    assert held > 150 and rss_mb() - before < held - 150, (held, rss_mb() - before)


def test_every_served_model_and_gradient_can_release(model_dir):
    models = load_models(model_dir)
    assert any(m.gradient is not None for m in models.values())  # the fixture's refinable decoder
    for model in models.values():
        model.release_arena()  # a smallest run each, with the gradient's step: no error for any contract


def test_the_service_releases_after_warm_up_and_after_large_requests_once_idle(make_client, monkeypatch):
    calls = []
    monkeypatch.setattr(deps.Runtime, "release_memory", lambda self: calls.append(time.monotonic()))
    monkeypatch.setattr(deps, "TRIM_AFTER_BYTES", 0)
    monkeypatch.setattr(deps, "TRIM_DELAY_S", 0.05)
    client = make_client()
    assert len(calls) == 1  # after the warm-up's probes
    assert client.post("/reconstruct", content=png((64, 48)), headers={"content-type": "image/png"}).status_code == 200
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(calls) == 2  # once idle after it
