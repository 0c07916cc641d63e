"""Open Inference Protocol (KServe V2) with Triton's binary tensor extension, so Triton's and KServe's
clients (tritonclient, kserve) work unchanged.

Models are named by their manifest key: `<autoencoder>.encoder` and `<autoencoder>.decoder` for each
autoencoder of the family, `colorizer`; `encoder` and `decoder` are aliases for the default autoencoder's
(GET /v1/models lists them). One FP32 input and one FP32 output each, as in the ONNX files. An infer request is JSON, whatever its Content-Type (tritonclient sends none). Input `data`
may be flat or nested row-major lists; or, with `"parameters": {"binary_data_size": n}`, the tensor's n
bytes of little-endian values follow the JSON, whose length is in the `Inference-Header-Content-Length`
header. Outputs come back as JSON data, or binary (after the JSON, same header) when the request asks
(`"parameters": {"binary_data_output": true}`, or `binary_data` on a requested output). An encoder's
request may ask `"parameters": {"refine": <steps>}`, as /encode?refine= does. Errors under
/v2 are `{"error": "<message>"}`, as the protocol says (service.errors).
"""

from __future__ import annotations

import asyncio
import json
import math
from contextlib import asynccontextmanager

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from service import pipeline
from service.deps import Runtime, get_runtime
from service.errors import ServiceError
from service.routing import Access, access

router = APIRouter(prefix="/v2", tags=["kserve-v2"])
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list | None = Field(None, description="row-major values, flat or nested; absent with binary_data_size")
    parameters: dict | None = Field(None, description='{"binary_data_size": n}: the values are n bytes after the JSON')


class RequestedOutput(BaseModel):
    name: str
    parameters: dict | None = Field(None, description='{"binary_data": true}: this output as binary after the JSON')


class InferRequest(BaseModel):
    """For the documentation: requests are checked by `_read_request` (nested data, binary parts)."""
    id: str | None = None
    parameters: dict | None = Field(None, description='{"binary_data_output": true}: every output as binary')
    inputs: list[InferTensor] = Field(..., min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


def _tensor_meta(io: dict) -> dict:
    return {"name": io["name"], "datatype": "FP32", "shape": [d if isinstance(d, int) and d > 0 else -1 for d in io["shape"]]}


@router.get("", summary="Server metadata")
@access(Access.PUBLIC)
async def server_metadata():
    return server_metadata_dict()


def server_metadata_dict() -> dict:
    return {"name": "cae", "version": "1", "extensions": EXTENSIONS}


def model_metadata_dict(name: str, m) -> dict:
    return {"name": name, "versions": [m.version], "platform": "onnxruntime_onnx",
            "inputs": [_tensor_meta(i) for i in m.facts["inputs"]], "outputs": [_tensor_meta(o) for o in m.facts["outputs"]]}


@router.get("/health/live", summary="Server live")
@access(Access.PROBE)
async def live():
    return {"live": True}


@router.get("/health/ready", summary="Server ready")
@access(Access.PROBE)
async def ready(runtime: Runtime = Depends(get_runtime)):
    ok = runtime.ready and not runtime.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def versioned_model(runtime: Runtime, name: str, version: str | None):
    """The model `name`, at `version` when one is named (the protocol's /versions/{version} paths)."""
    m = runtime.model(name)
    if version not in (None, "", m.version):
        raise ServiceError(404, "model_not_found", f"model {name} has no version {version!r} (this service has version {m.version})")
    return m


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def model_metadata(name: str, version: str | None = None, runtime: Runtime = Depends(get_runtime)):
    return model_metadata_dict(name, versioned_model(runtime, name, version))


@router.get("/models/{name}/ready", summary="Model ready")
@router.get("/models/{name}/versions/{version}/ready", summary="Model ready (one version)")
@access(Access.PUBLIC)
async def model_ready(name: str, version: str | None = None, runtime: Runtime = Depends(get_runtime)):
    versioned_model(runtime, name, version)
    ok = runtime.ready and not runtime.draining  # the status code is the answer (clients read only that)
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": InferRequest.model_json_schema()},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": "JSON header, then binary tensors (Inference-Header-Content-Length)"}}}}}


def _bad(message: str, status: int = 400) -> ServiceError:
    return ServiceError(status, "invalid_request" if status == 400 else "invalid_tensor", message)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary part) of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise _bad(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise _bad(f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes")
    return body[:length], memoryview(body)[length:]


def _read_request(header: bytes) -> dict:
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(f"the request is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise _bad("the request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad("inputs must be a list of one tensor (each model has one input)")
    for key in ("parameters", "outputs", "id"):
        kind = {"parameters": dict, "outputs": list, "id": str}[key]
        if request.get(key) is not None and not isinstance(request[key], kind):
            raise _bad(f"{key} must be a {kind.__name__}")
    return request


def check_tensor(m, limits, name, shape, datatype) -> None:
    """The one input tensor a model takes, checked before any value is read (HTTP and gRPC alike)."""
    expected = m.facts["inputs"][0]["name"]
    if name != expected:
        raise _bad(f"model {m.key} takes input {expected!r}, got {name!r}", 422)
    if datatype != "FP32":
        raise _bad(f"datatype must be FP32, got {datatype}", 422)
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or shape[1] != m.input_channels or min(shape) < 1):
        raise _bad(f"shape must be [N, {m.input_channels}, H, W], got {shape}", 422)
    n, _, h, w = shape
    if h % m.geometry.align or w % m.geometry.align:
        raise _bad(f"H and W must be multiples of {m.geometry.align}, got {h}x{w}", 422)
    if n > limits.max_images_per_request or m.image_pixels(h, w) > limits.max_pixels:
        raise ServiceError(413, "tensor_too_large", f"shape {shape} is over the service's limits")


def _input_array(tensor: dict, binary: memoryview, m, limits) -> np.ndarray:
    shape = tensor.get("shape")
    check_tensor(m, limits, tensor.get("name"), shape, tensor.get("datatype"))
    count = math.prod(shape)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * 4 or size != len(binary):
            raise _bad(f"binary_data_size must be the {count * 4} bytes of shape {shape} in FP32, and the body must hold "
                       f"exactly that after the JSON; got {size!r} and {len(binary)} bytes", 422)
        x = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(shape)
    else:
        if len(binary):
            raise _bad("binary data follows the JSON but no input says binary_data_size")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise _bad("the input has neither data nor parameters.binary_data_size", 422)
        try:
            x = np.asarray(data, dtype=np.float32)  # flat or nested row-major lists
        except (ValueError, TypeError):
            raise _bad("data must be numbers in flat or regularly nested lists", 422) from None
        if x.size != count or (x.ndim > 1 and list(x.shape) != shape):
            raise _bad(f"shape {shape} needs {count} values, got data of shape {list(x.shape)}", 422)
        x = x.reshape(shape)
    if not np.isfinite(x).all():
        raise _bad("values must be finite", 422)
    return x


def _binary_output(request: dict, output_name: str) -> bool:
    wanted = request.get("outputs")
    if wanted:
        for out in wanted:
            if not isinstance(out, dict) or out.get("name") != output_name:
                raise _bad(f"the model has one output, {output_name!r}; asked for {out.get('name') if isinstance(out, dict) else out!r}")
        return bool((wanted[0].get("parameters") or {}).get("binary_data", (request.get("parameters") or {}).get("binary_data_output")))
    return bool((request.get("parameters") or {}).get("binary_data_output", False))


def output_values(m, shape) -> int:
    n, _, h, w = shape
    return n * m.output_channels * m.geometry.out(h) * m.geometry.out(w)


def refine_steps(runtime: Runtime, m, value) -> int:
    """The request parameter `refine` (HTTP JSON or gRPC): Adam steps refining an encoder's latents against
    its decoder, as /encode?refine= does; 0 when absent."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"parameters.refine must be a whole number of steps >= 0, got {value!r}", 422)
    if value and m.role != "encoder":
        raise _bad(f"parameters.refine applies to an encoder's latents; {m.key} is a {m.role}", 422)
    if value:
        pipeline.check_refine(runtime, runtime.autoencoder(m.autoencoder), value)
    return value


@asynccontextmanager
async def admitted_run(runtime: Runtime, name: str, x: np.ndarray, response_bytes_per_value: int, refine: int = 0):
    """Run model `name` on the batch x once admitted (memory and time, as every request); the output array
    is yielded while the admission still holds, so the response is built inside it. `refine` (encoders):
    Adam steps on each latent against the decoder (refine_steps)."""
    m = runtime.model(name)  # a key or an alias: the queue and admission are the key's
    n, _, h, w = x.shape
    plan = pipeline.plan_run(runtime, m, h, w)
    need_bytes = x.nbytes + response_bytes_per_value * output_values(m, x.shape) + plan.peak_bytes
    need_s, keys, ae = plan.seconds * n, (m.key,), None
    if refine:
        ae = runtime.autoencoder(m.autoencoder)
        step_s, step_bytes = pipeline.plan_refine(runtime, ae, h, w)
        need_s, need_bytes, keys = need_s + n * refine * step_s, max(need_bytes, x.nbytes + step_bytes), (m.key, ae.decoder.key)

    async def one(item: np.ndarray, deadline: float) -> np.ndarray:
        z = await pipeline.run_model(runtime, m.key, item, deadline)
        return await pipeline.refine_latent(runtime, ae, z, item, refine, deadline) if refine else z

    async with runtime.admit(need_bytes, need_s, keys) as deadline:
        yield np.stack(await asyncio.gather(*[one(item, deadline) for item in x]))


@router.post("/models/{name}/infer", summary="Inference (JSON, or JSON plus binary tensors)", openapi_extra=INFER_BODY)
@router.post("/models/{name}/versions/{version}/infer", summary="Inference (one version)", openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, version: str | None = None, runtime: Runtime = Depends(get_runtime)):
    m = versioned_model(runtime, name, version)
    header, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    body = await asyncio.to_thread(_read_request, header) if len(header) > 256 * 1024 else _read_request(header)
    output_name = m.facts["outputs"][0]["name"]
    as_binary = _binary_output(body, output_name)
    refine = refine_steps(runtime, m, (body.get("parameters") or {}).get("refine"))
    x = _input_array(body["inputs"][0], binary, m, runtime.settings)
    request_id = body.get("id")
    del body, header, binary
    out_values = output_values(m, x.shape)
    if not as_binary and out_values > runtime.settings.max_json_values:
        raise ServiceError(413, "response_too_large", f"the output tensor would hold {out_values:,} numbers as JSON, more "
                           f"than the limit of {runtime.settings.max_json_values:,} (CAE_MAX_JSON_VALUES); send fewer or smaller "
                           "inputs, or ask for binary output")
    # The response: ~20 bytes a number as JSON text (and the array), 4 as binary (and the array).
    async with admitted_run(runtime, name, x, 8 if as_binary else 40, refine) as out:
        meta = {"model_name": name, "model_version": m.version, **({"id": request_id} if request_id is not None else {})}
        tensor = {"name": output_name, "datatype": "FP32", "shape": list(out.shape)}
        if not as_binary:
            payload = await pipeline.to_json(out_values, {**meta, "outputs": [{**tensor, "data": out}]})
            return Response(payload, media_type="application/json")
        raw = out.astype("<f4", copy=False).tobytes()
        head = json.dumps({**meta, "outputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}).encode()
        return Response(head + raw, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(len(head))})
