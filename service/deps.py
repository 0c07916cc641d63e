"""What the routers share: the runtime (settings, models, batchers, metrics) and the API key check."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import Request

from service.admission import Admission
from service.batching import Batcher
from service.errors import ServiceError
from service.memory import trim
from service.metrics import Metrics
from service.models import Autoencoder, Model, ModelSet
from service.settings import Settings


log = logging.getLogger("cae.service")

TRIM_AFTER_BYTES = 64 << 20
TRIM_DELAY_S = 2.0


class Runtime:
    """Lives in app.state.runtime from startup to shutdown (see service.main's lifespan)."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.models = ModelSet({}, None)
        self.batchers: dict[str, Batcher] = {}
        self.admission = Admission(settings.memory_budget_mb << 20, settings.inference_timeout_s, metrics)
        self.reserved_since_trim = 0  # the most memory reserved at once since the allocator was last trimmed
        self.admissions = 0  # requests admitted so far (the trim waits for a spell without any)
        self.admitted_s: dict[str, float] = {}  # expected inference seconds of admitted, unfinished requests
        self.ready = False
        self.draining = False

    def _not_ready(self) -> None:
        if not self.ready:
            raise ServiceError(503, "not_ready", "the models are still loading", {"Retry-After": "1"})

    def model(self, name: str) -> Model:
        """A model by manifest key (`<autoencoder>.encoder`, `colorizer`) or alias (`encoder`, `decoder`)."""
        key = self.models.resolve(name)
        if key is None:
            self._not_ready()
            raise ServiceError(404, "model_not_found", f"this service has no model {name!r} (it serves {', '.join(self.models.names())})")
        return self.models[key]

    def autoencoder(self, name: str | None = None) -> Autoencoder:
        """A member of the family by name; the default one for None."""
        family = self.models.autoencoders
        name = self.models.default_autoencoder if name is None else name
        if name not in family:
            self._not_ready()
            served = ", ".join(sorted(family)) or "none"
            raise ServiceError(404, "model_not_found", f"this service has no autoencoder {name!r} (it serves: {served})")
        return family[name]

    @asynccontextmanager
    async def admit(self, need_bytes: int, need_s: float, roles: tuple[str, ...]):
        """Admit a planned request (service.admission) and yield its deadline (event-loop time). `roles`:
        the keys of the models it runs."""
        for role in roles:
            self.model(role)
        # The work admitted before this request and not finished yet, on the busiest model it needs (an
        # admitted request counts in full until it finishes: it may not have reached a queue yet).
        backlog_s = max(self.admitted_s.get(role, 0.0) for role in roles)
        try:
            with self.admission.admit(need_bytes, need_s, backlog_s):
                self.admissions += 1
                self.reserved_since_trim = max(self.reserved_since_trim, self.admission.reserved_bytes)
                for role in roles:
                    self.admitted_s[role] = self.admitted_s.get(role, 0.0) + need_s
                try:
                    yield asyncio.get_running_loop().time() + self.settings.inference_timeout_s
                finally:
                    for role in roles:
                        self.admitted_s[role] = max(0.0, self.admitted_s[role] - need_s)
        finally:
            # However the request ended (an answer, an error, a cancelled task).
            if self.reserved_since_trim > TRIM_AFTER_BYTES and self.admission.reserved_bytes == 0:
                loop = asyncio.get_running_loop()
                loop.call_later(TRIM_DELAY_S, self._trim_if_still_idle, self.admissions)

    def _trim_if_still_idle(self, admissions_then: int) -> None:
        """Large blocks went back to the kernel when freed (service.memory); once the service has stayed idle
        after large requests or a burst, this returns the free pages left in the allocator's per-thread
        arenas too (measured: 635 MB kept after a burst of 256x256 /colorize without it). Only when nothing
        was admitted meanwhile: trimming walks the arenas under their locks, and measured right after each
        request it cost the next one 0.1-0.2 s."""
        if self.admission.reserved_bytes == 0 and self.admissions == admissions_then:
            self.reserved_since_trim = 0
            asyncio.get_running_loop().run_in_executor(None, self.release_memory)

    def release_memory(self) -> None:
        """What an idle service gives back: each session's arena regions (the last large run's output kept
        one of them resident: 330 MB after a 4-megapixel /reconstruct), then the allocator's free pages."""
        for model in list(self.models.values()):
            try:
                model.release_arena()
            except Exception:  # a model that cannot do the small run keeps its regions; the service goes on
                log.exception("%s: could not give its arena back", model.key)
        trim()


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool,
# two thread hand-offs per request that cost more than the first model's whole inference.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def api_key_error(settings: Settings, authorization: str) -> ServiceError | None:
    """The 401 for a request without the right bearer token, if the service has a key (checked by the
    middleware before any body is read)."""
    key = settings.api_key
    if key is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.get_secret_value().encode()):
        return ServiceError(401, "unauthorised", "missing or wrong API key: send Authorization: Bearer <key>",
                            {"WWW-Authenticate": "Bearer"})
    return None
