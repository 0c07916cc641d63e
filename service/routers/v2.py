"""Open Inference Protocol (KServe V2) for the same models, so KServe and Triton clients work unchanged.

Models are named by role: encoder, decoder, colorizer. Tensors travel as JSON FP32 arrays in row-major
order (the protocol's JSON form); one input and one output per model, as in the ONNX files.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service import pipeline
from service.deps import Runtime, get_runtime
from service.routers.inference import parse_json_body
from service.errors import ServiceError
from service.routing import Access, access

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
@access(Access.PUBLIC)
async def server_metadata():
    return {"name": "cae", "version": "1", "extensions": []}


@router.get("/health/live", summary="Server live")
@access(Access.PROBE)
async def live():
    return {"live": True}


@router.get("/health/ready", summary="Server ready")
@access(Access.PROBE)
async def ready(runtime: Runtime = Depends(get_runtime)):
    ok = runtime.ready and not runtime.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, runtime: Runtime = Depends(get_runtime)):
    m = runtime.model(name)
    return {"name": name, "versions": [m.version], "platform": "onnxruntime_onnx",
            "inputs": [_tensor_meta(i) for i in m.facts["inputs"]], "outputs": [_tensor_meta(o) for o in m.facts["outputs"]]}


@router.get("/models/{name}/ready", summary="Model ready")
@access(Access.PUBLIC)
async def model_ready(name: str, runtime: Runtime = Depends(get_runtime)):
    runtime.model(name)
    return {"name": name, "ready": runtime.ready and not runtime.draining}


INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": InferRequest.model_json_schema()}}}}


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, runtime: Runtime = Depends(get_runtime)):
    m = runtime.model(name)
    body = await parse_json_body(request, InferRequest)
    tensor = body.inputs[0]
    expected = m.facts["inputs"][0]
    if tensor.name != expected["name"]:
        raise ServiceError(422, "invalid_tensor", f"model {name} takes input {expected['name']!r}, got {tensor.name!r}")
    if tensor.datatype != "FP32":
        raise ServiceError(422, "invalid_tensor", f"datatype must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 4 or tensor.shape[1] != m.input_channels or min(tensor.shape) < 1:
        raise ServiceError(422, "invalid_tensor", f"shape must be [N, {m.input_channels}, H, W], got {tensor.shape}")
    n, c, h, w = tensor.shape
    geometry = m.geometry
    if h % geometry.align or w % geometry.align:
        raise ServiceError(422, "invalid_tensor", f"H and W must be multiples of {geometry.align}, got {h}x{w}")
    if n > runtime.settings.max_images_per_request or m.image_pixels(h, w) > runtime.settings.max_pixels:
        raise ServiceError(413, "tensor_too_large", f"shape {tensor.shape} is over the service's limits")
    if len(tensor.data) != math.prod(tensor.shape):
        raise ServiceError(422, "invalid_tensor", f"shape {tensor.shape} needs {math.prod(tensor.shape)} values, got {len(tensor.data)}")
    out_values = n * m.output_channels * geometry.out(h) * geometry.out(w)
    if out_values > runtime.settings.max_json_values:
        raise ServiceError(413, "response_too_large", f"the output tensor would hold {out_values:,} numbers as JSON, more "
                           f"than the limit of {runtime.settings.max_json_values:,} (CAE_MAX_JSON_VALUES); send fewer or smaller inputs")
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    request_id, output_name = body.id, m.facts["outputs"][0]["name"]
    del body, tensor
    if not np.isfinite(x).all():
        raise ServiceError(422, "invalid_tensor", "values must be finite")
    plan = pipeline.plan_run(runtime, m, h, w)
    # Input and output arrays and the JSON text (~20 bytes a number): ~40 bytes per output value.
    need_bytes = x.nbytes + 40 * out_values + plan.peak_bytes
    async with runtime.admit(need_bytes, plan.seconds * n, (name,)) as deadline:
        outs = await asyncio.gather(*[pipeline.run_model(runtime, name, item, deadline) for item in x])
        out = np.stack(outs)
        del outs
        payload = await pipeline.to_json(out_values, {
            "model_name": name, "model_version": m.version, "id": request_id,
            "outputs": [{"name": output_name, "datatype": "FP32", "shape": list(out.shape), "data": out}]})
    return Response(payload, media_type="application/json")
