"""The ASGI app: `python -m service` (or `cae serve`), or `uvicorn --factory service.main:create_app`.

Models are loaded in the lifespan, checked against their manifest checksums and warmed up before
/readyz says ready; a model folder that cannot be served stops the startup with the reason. This
module never imports torch or the training code.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from service import errors
from service.batching import Batcher
from service.deps import Runtime
from service.memory import give_large_blocks_back, rss_bytes
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.models import ModelSet, load_models, warm_up
from service.routers import health, inference, v2
from service.routing import Access, declare
from service.settings import Settings, batching_for

log = logging.getLogger("cae.service")


def create_app(settings: Settings | None = None, models: ModelSet | None = None) -> FastAPI:
    """The app for `settings` (default: the CAE_* environment). `models` already loaded (as `cae serve`
    does, to report a bad model folder before uvicorn starts) are used as they are; otherwise the lifespan
    loads them."""
    settings = settings or Settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        give_large_blocks_back()  # photo-sized buffers go back to the kernel when freed (service.memory)
        runtime.models = models or load_models(settings.model_dir, settings.providers, settings.intra_op_threads, settings.served_models)
        if settings.warmup:
            warm_up(runtime.models)
            runtime.release_memory()  # the warm-up's largest probes left arena regions behind (~130 MB measured)
        runtime.settings = tuned = batching_for(settings, next(iter(runtime.models.values())).providers)
        runtime.batchers = {key: Batcher(m, metrics, tuned.max_batch_size, tuned.max_batch_wait_ms / 1000, tuned.batching,
                                        tuned.inline_ms / 1000, tuned.batch_min_run_ms / 1000, tuned.inference_timeout_s)
                            for key, m in runtime.models.items()}
        for batcher in runtime.batchers.values():
            batcher.start()
        grpc_server = None
        if settings.grpc_port:
            from service import grpc_server as grpc_service  # grpcio only when gRPC is on

            host = settings.grpc_host or "127.0.0.1"
            if settings.exposed_without_key(host):
                raise RuntimeError(f"refusing to serve gRPC on {host} without an API key (CAE_API_KEY or CAE_INSECURE)")
            grpc_server = await grpc_service.start(runtime, host, settings.grpc_port)
        runtime.ready = True
        log.info("ready: %s", ", ".join(f"{r} ({m.name} v{m.version}, {m.providers[0]})" for r, m in runtime.models.items()))
        try:
            yield
        finally:
            # uvicorn has stopped accepting and finished in-flight requests by now (graceful shutdown).
            runtime.draining = True
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            for batcher in runtime.batchers.values():
                await batcher.stop()

    # Swagger UI and ReDoc from assets installed with the package (fastapi-offline), not a CDN: /docs works offline.
    app = FastAPIOffline(title="cae", version="0.1.0", lifespan=lifespan,
                         description="Convolutional autoencoders served with onnxruntime: reconstruct, colorize, encode, decode.")
    declare(app.routes, Access.PROBE)  # all the app has before our routers: the schema, the docs pages and their assets
    app.state.runtime = runtime
    errors.install(app)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request, exc):
        # Nobody is left to read it; answering keeps the disconnect out of the error log.
        return errors.error_response(400, "client_disconnected", "the client closed the connection before sending the whole body")

    routes = list(app.routes)
    for router in (health.router, inference.router, v2.router):
        app.include_router(router)
        routes += router.routes  # full paths already (a router's prefix is applied as its routes are declared)
    app.add_middleware(ServiceMiddleware, metrics=metrics, settings=settings, routes=routes)
    metrics.resident_bytes.set_function(rss_bytes)
    return app


def __getattr__(name: str):
    # `uvicorn service.main:app` keeps working, but importing this module builds nothing (and a bad CAE_*
    # value is reported by whoever starts the app, not by an import).
    if name == "app":
        return create_app()
    raise AttributeError(name)
