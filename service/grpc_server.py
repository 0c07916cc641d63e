"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService), beside HTTP on CAE_GRPC_PORT.

It runs in the app's event loop and shares everything with the HTTP endpoints: the sessions, each model's
batching queue, memory and deadline admission, the API key (gRPC metadata `authorization: Bearer <key>`),
the tensor checks and the metrics. ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata
and ModelInfer are implemented (tensors as raw_input_contents / raw_output_contents, or typed
fp32_contents in); Triton's other RPCs (repository, statistics, shared memory) answer UNIMPLEMENTED.
The message types are Triton's (tritonclient[grpc]), a superset of KServe's with the same wire format.
"""

from __future__ import annotations

import logging
import math
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.deps import Runtime, api_key_error
from service.errors import ServiceError
from service.routers import v2

log = logging.getLogger("cae.service")

SERVICE = "inference.GRPCInferenceService"
STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
                408: grpc.StatusCode.DEADLINE_EXCEEDED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                422: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE,
                504: grpc.StatusCode.DEADLINE_EXCEEDED}


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def _ready(self) -> bool:
        return self.runtime.ready and not self.runtime.draining

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self._ready())

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(**v2.server_metadata_dict())

    async def ModelReady(self, request, context):
        key = self.runtime.models.resolve(request.name)
        known = key is not None and request.version in ("", self.runtime.models[key].version)
        return service_pb2.ModelReadyResponse(ready=known and self._ready())

    async def ModelMetadata(self, request, context):
        return await self._call("ModelMetadata", context, self._model_metadata, request)

    async def ModelInfer(self, request, context):
        return await self._call("ModelInfer", context, self._infer, request)

    async def _call(self, method: str, context, handler, request):
        """Key check, error mapping and metrics around a protected RPC."""
        started, status = time.perf_counter(), 200
        runtime = self.runtime
        try:
            error = api_key_error(runtime.settings, dict(context.invocation_metadata()).get("authorization", ""))
            if error is not None:
                runtime.metrics.rejections.labels("unauthorised").inc()
                raise error
            runtime.metrics.in_flight.inc()
            try:
                return await handler(request)
            finally:
                runtime.metrics.in_flight.dec()
        except ServiceError as e:
            status = e.status
            await context.abort(STATUS_CODES.get(e.status, grpc.StatusCode.INTERNAL), e.message)
        finally:
            label = f"grpc {SERVICE}/{method}"
            runtime.metrics.requests.labels(label, str(status)).inc()
            runtime.metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def _model_metadata(self, request):
        m = v2.versioned_model(self.runtime, request.name, request.version)
        meta = v2.model_metadata_dict(request.name, m)
        tensors = [[service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in meta[k]] for k in ("inputs", "outputs")]
        return service_pb2.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                                 inputs=tensors[0], outputs=tensors[1])

    async def _infer(self, request):
        runtime, name = self.runtime, request.model_name
        m = v2.versioned_model(runtime, name, request.model_version)
        if len(request.inputs) != 1:
            raise ServiceError(400, "invalid_request", f"inputs must be a list of one tensor, got {len(request.inputs)}")
        # The request's `refine` parameter (int64_param), as the HTTP body's; any other kind is refused there.
        param = request.parameters["refine"] if "refine" in request.parameters else None
        choice = param.WhichOneof("parameter_choice") if param is not None else None
        refine = v2.refine_steps(runtime, m, getattr(param, choice) if choice else None)
        tensor = request.inputs[0]
        shape = list(tensor.shape)
        v2.check_tensor(m, runtime.settings, tensor.name, shape, tensor.datatype)
        count = math.prod(shape)
        if request.raw_input_contents:
            raw = request.raw_input_contents[0]
            if len(request.raw_input_contents) != 1 or len(raw) != count * 4:
                raise ServiceError(422, "invalid_tensor", f"raw_input_contents must hold the {count * 4} bytes of shape "
                                   f"{shape} in FP32, got {len(raw)}")
            x = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        else:
            values = tensor.contents.fp32_contents
            if len(values) != count:
                raise ServiceError(422, "invalid_tensor", f"shape {shape} needs {count} values, got {len(values)}")
            x = np.asarray(values, dtype=np.float32).reshape(shape)
        if not np.isfinite(x).all():
            raise ServiceError(422, "invalid_tensor", "values must be finite")
        output_name = m.facts["outputs"][0]["name"]
        for wanted in request.outputs:
            if wanted.name != output_name:
                raise ServiceError(400, "invalid_request", f"the model has one output, {output_name!r}; asked for {wanted.name!r}")
        async with v2.admitted_run(runtime, name, x, 8, refine) as out:
            output = service_pb2.ModelInferResponse.InferOutputTensor(name=output_name, datatype="FP32", shape=list(out.shape))
            return service_pb2.ModelInferResponse(model_name=name, model_version=m.version, id=request.id, outputs=[output],
                                                  raw_output_contents=[out.astype("<f4", copy=False).tobytes()])


async def start(runtime: Runtime, host: str, port: int) -> grpc.aio.Server:
    settings = runtime.settings
    server = grpc.aio.server(maximum_concurrent_rpcs=settings.max_concurrency, options=[
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        # Outputs are bounded by memory admission, not by gRPC's 4 MB default.
        ("grpc.max_send_message_length", 1 << 30),
    ])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(runtime), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"gRPC could not bind {address}")
    await server.start()
    log.info("gRPC (%s) on %s", SERVICE, address)
    return server
