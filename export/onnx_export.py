"""One graph to one ONNX file: export, full check, self-description, parity with PyTorch.

Two exporters, chosen explicitly: `dynamo` (torch.export, the maintained path) and `torchscript` (the
tracing exporter, kept for older runtimes). Both are checked the same way, so either is safe to ship.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.graphs import GraphSpec

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
UNORDERED_EXPORT_METADATA = {"pkg.torch.export.ExportedProgram.range_constraints"}
METADATA_KEY = "cae"  # metadata_props key holding the model's manifest entry as JSON


# torch.onnx warns about every torchvision operator it cannot register when torchvision is absent.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class ParityError(ValueError):
    """ONNX and PyTorch disagree beyond the tolerance."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_graph(module: torch.nn.Module, spec: GraphSpec, example: torch.Tensor, stride: int, path: Path,
                 exporter: str = "dynamo", opset: int = DEFAULT_OPSET) -> None:
    """Write `module` (one input, one output) to `path` with dynamic N, H, W and the contract's names."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation chatter; the checks below are what count
        if exporter == "dynamo":
            n, h, w = torch.export.Dim("N"), torch.export.Dim("h"), torch.export.Dim("w")
            # The decoder's input is the latent grid; other graphs take images, a multiple of the stride.
            scale = 1 if spec.role == "decoder" else stride
            torch.onnx.export(module, (example,), str(path), input_names=[spec.input], output_names=[spec.output],
                              opset_version=opset, dynamo=True, verbose=False, optimize=True, external_data=False,
                              dynamic_shapes={spec.input: {0: n, 2: scale * h, 3: scale * w}})
        else:
            torch.onnx.export(module, (example,), str(path), input_names=[spec.input], output_names=[spec.output],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={spec.input: {0: "N", 2: "H", 3: "W"}, spec.output: {0: "N", 2: "H_out", 3: "W_out"}})
    model = onnx.load(str(path))
    _name_dims(model, spec)
    drop_unordered_metadata(model)
    onnx.save(model, str(path))


def drop_unordered_metadata(model: onnx.ModelProto) -> None:
    """torch.export writes its shape-range constraints from a set, in an order that changes from process to
    process: dropped, so exporting the same checkpoint twice gives the same bytes (and sha256)."""
    kept = [(p.key, p.value) for p in model.graph.metadata_props if p.key not in UNORDERED_EXPORT_METADATA]
    del model.graph.metadata_props[:]
    for key, value in kept:
        model.graph.metadata_props.add(key=key, value=value)


def _name_dims(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Give the graph's inputs and outputs the contract's symbolic dimension names (exporters invent theirs)."""
    for value, shape in ((model.graph.input[0], spec.input_shape), (model.graph.output[0], spec.output_shape)):
        for dim, want in zip(value.type.tensor_type.shape.dim, shape):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want


def describe(path: Path, facts: dict, doc: str) -> None:
    """Store the model's manifest entry in its own metadata_props, so the file describes itself."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(facts, sort_keys=True))
    model.doc_string = doc
    model.producer_name = "cae"
    model.model_version = int(facts.get("version", 1))
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)  # shape inference and all: after the last write


def read_metadata(path: Path) -> dict:
    """The facts `describe` stored, read back without onnxruntime."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[METADATA_KEY])


def io_description(path: Path) -> dict:
    """Names, dtypes and (symbolic) shapes of the file's inputs and outputs, as the file states them."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def one(v):
        dims = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name, "shape": dims}

    return {"inputs": [one(v) for v in graph.input], "outputs": [one(v) for v in graph.output]}


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def parity(module: torch.nn.Module, path: Path, cases: dict[str, torch.Tensor], tolerance: float) -> dict[str, float]:
    """Max |ONNX - PyTorch| for each named input batch; raises ParityError past `tolerance`."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    diffs = {}
    for case, x in cases.items():
        expected = module(x).numpy()
        got = sess.run(None, {name: x.numpy().astype(np.float32)})[0]
        if got.shape != expected.shape:
            raise ParityError(f"{path.name} {case}: ONNX shape {got.shape}, PyTorch {expected.shape}")
        diffs[case] = float(np.abs(got - expected).max())
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}
    if bad:
        raise ParityError(f"{path.name} differs from PyTorch beyond {tolerance:g}: " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()))
    return diffs
