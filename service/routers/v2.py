"""Open Inference Protocol (KServe V2) for the same models, so KServe and Triton clients work unchanged.

Models are named by role: encoder, decoder, colorizer. Tensors travel as JSON FP32 arrays in row-major
order (the protocol's JSON form); one input and one output per model, as in the ONNX files.
"""

from __future__ import annotations

import math

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.deps import Runtime, get_runtime, require_api_key
from service.errors import ServiceError

router = APIRouter(prefix="/v2", tags=["kserve-v2"])


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] = Field(..., description="row-major values")


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(..., min_length=1, max_length=1)


def _tensor_meta(io: dict) -> dict:
    return {"name": io["name"], "datatype": "FP32", "shape": [d if isinstance(d, int) and d > 0 else -1 for d in io["shape"]]}


@router.get("", summary="Server metadata")
async def server_metadata():
    return {"name": "cae", "version": "1", "extensions": []}


@router.get("/health/live", summary="Server live")
async def live():
    return {"live": True}


@router.get("/health/ready", summary="Server ready")
async def ready(runtime: Runtime = Depends(get_runtime)):
    ok = runtime.ready and not runtime.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}", summary="Model metadata", dependencies=[Depends(require_api_key)])
async def model_metadata(name: str, runtime: Runtime = Depends(get_runtime)):
    m = runtime.model(name)
    return {"name": name, "versions": [m.version], "platform": "onnxruntime_onnx",
            "inputs": [_tensor_meta(i) for i in m.facts["inputs"]], "outputs": [_tensor_meta(o) for o in m.facts["outputs"]]}


@router.get("/models/{name}/ready", summary="Model ready")
async def model_ready(name: str, runtime: Runtime = Depends(get_runtime)):
    runtime.model(name)
    return {"name": name, "ready": runtime.ready and not runtime.draining}


@router.post("/models/{name}/infer", summary="Inference", dependencies=[Depends(require_api_key)])
async def infer(name: str, body: InferRequest, runtime: Runtime = Depends(get_runtime)):
    m = runtime.model(name)
    tensor = body.inputs[0]
    expected = m.facts["inputs"][0]
    if tensor.name != expected["name"]:
        raise ServiceError(422, "invalid_tensor", f"model {name} takes input {expected['name']!r}, got {tensor.name!r}")
    if tensor.datatype != "FP32":
        raise ServiceError(422, "invalid_tensor", f"datatype must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 4 or tensor.shape[1] != m.input_channels or min(tensor.shape) < 1:
        raise ServiceError(422, "invalid_tensor", f"shape must be [N, {m.input_channels}, H, W], got {tensor.shape}")
    n, c, h, w = tensor.shape
    if name != "decoder" and (h % m.stride or w % m.stride):
        raise ServiceError(422, "invalid_tensor", f"H and W must be multiples of {m.stride}, got {h}x{w}")
    scale = m.stride**2 if name == "decoder" else 1
    if n > runtime.settings.max_images_per_request or h * w * scale > runtime.settings.max_pixels:
        raise ServiceError(413, "tensor_too_large", f"shape {tensor.shape} is over the service's limits")
    if len(tensor.data) != math.prod(tensor.shape):
        raise ServiceError(422, "invalid_tensor", f"shape {tensor.shape} needs {math.prod(tensor.shape)} values, got {len(tensor.data)}")
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    if not np.isfinite(x).all():
        raise ServiceError(422, "invalid_tensor", "values must be finite")
    out = np.stack(await runtime.infer(name, list(x)))
    return {"model_name": name, "model_version": m.version, "id": body.id,
            "outputs": [{"name": m.facts["outputs"][0]["name"], "datatype": "FP32", "shape": list(out.shape), "data": out.ravel().tolist()}]}


