"""Probes, model listing, Prometheus metrics and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Runtime, get_runtime
from service.errors import error_body
from service.routing import Access, access

router = APIRouter(tags=["service"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/healthz", summary="Liveness: the process is up")
@access(Access.PROBE)
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and warmed up, not draining (503 otherwise)")
@access(Access.PROBE)
async def readyz(runtime: Runtime = Depends(get_runtime)):
    if runtime.ready and not runtime.draining:
        return {"status": "ready", "models": sorted(runtime.models), "autoencoders": sorted(runtime.models.autoencoders)}
    reason = "draining" if runtime.draining else "loading"
    return JSONResponse(error_body(503, reason, f"not ready: {reason}"), status_code=503, headers={"Retry-After": "1"})


@router.get("/v1/models", summary="The models served: the autoencoder family, and every model's names, versions, "
                                 "shapes, providers and test metrics")
async def list_models(runtime: Runtime = Depends(get_runtime)):
    family = runtime.models
    return {"default_autoencoder": family.default_autoencoder,
            "autoencoders": [ae.describe(name == family.default_autoencoder) for name, ae in family.autoencoders.items()],
            "aliases": {alias: family.resolve(alias) for alias in family.names() if alias not in family},
            "models": [{**m.describe(), "measured": {"seconds_per_megapixel": m.cost.seconds_per_pixel * 1e6,
                                                     "seconds_per_run": m.cost.fixed_s,
                                                     "bytes_per_pixel": m.cost.bytes_per_pixel, "tile_halo": m.halo}}
                        for m in runtime.models.values()],
            "memory": {"budget_mb": runtime.settings.memory_budget_mb, "reserved_mb": runtime.admission.reserved_bytes / (1 << 20),
                       "tile_memory_mb": runtime.settings.tile_memory_mb},
            "batching": {"enabled": runtime.settings.batching, "max_batch_size": runtime.settings.max_batch_size,
                         "max_batch_wait_ms": runtime.settings.max_batch_wait_ms,
                         "min_run_ms": runtime.settings.batch_min_run_ms}}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
@access(Access.PROBE)
async def metrics(runtime: Runtime = Depends(get_runtime)):
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
@access(Access.PROBE)
async def page():
    return HTMLResponse(PAGE.read_text())
