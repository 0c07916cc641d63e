"""What the routers share: the runtime (settings, models, batchers, metrics) and the API key check."""

from __future__ import annotations

import hmac

import numpy as np
from fastapi import Request

from service.batching import Batcher
from service.errors import ServiceError
from service.metrics import Metrics
from service.models import Model
from service.settings import Settings


class Runtime:
    """Lives in app.state.runtime from startup to shutdown (see service.main's lifespan)."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.models: dict[str, Model] = {}
        self.batchers: dict[str, Batcher] = {}
        self.ready = False
        self.draining = False

    def model(self, role: str) -> Model:
        if role not in self.models:
            if not self.ready:
                raise ServiceError(503, "not_ready", "the models are still loading", {"Retry-After": "1"})
            raise ServiceError(404, "model_not_found", f"this service has no {role} model (it serves {sorted(self.models)})")
        return self.models[role]

    async def infer(self, role: str, items: list[np.ndarray]) -> list[np.ndarray]:
        self.model(role)
        return await self.batchers[role].infer(items, self.settings.inference_timeout_s)


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool,
# two thread hand-offs per request that cost more than the first model's whole inference.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def require_api_key(request: Request) -> None:
    key = request.app.state.runtime.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode()):
        request.app.state.runtime.metrics.rejections.labels("unauthorised").inc()
        raise ServiceError(401, "unauthorised", "missing or wrong API key: send Authorization: Bearer <key>",
                           {"WWW-Authenticate": "Bearer"})
