"""What every request passes through, as plain ASGI (no per-request task or body copy):

- admission: at most `max_concurrency` requests in progress or queued; beyond, 503 with Retry-After,
  so an overloaded service sheds load instead of queueing without bound (health, metrics, docs exempt);
- body limit: 413 when Content-Length says too much, and also mid-stream for chunked bodies;
- metrics: status and latency per route.
"""

from __future__ import annotations

import json
import time

from service.errors import error_body
from service.metrics import Metrics

# Answered even under overload: probes and scrapes must not be shed.
EXEMPT = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json", "/", "/favicon.ico"}
ROUTES = {"/reconstruct", "/colorize", "/encode", "/decode", "/v1/models", "/v2", "/healthz", "/readyz", "/metrics", "/"}


class BodyTooLarge(Exception):
    pass


def route_label(path: str) -> str:
    """A bounded set of labels: unknown paths must not create a time series each."""
    if path in ROUTES or path in EXEMPT:
        return path
    if path.startswith("/v2/models/"):
        return "/v2/models/{name}" + ("/infer" if path.endswith("/infer") else "/ready" if path.endswith("/ready") else "")
    return "other"


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class ServiceMiddleware:
    def __init__(self, app, metrics: Metrics, max_body_bytes: int, max_concurrency: int, retry_after_s: int = 1):
        self.app, self.metrics = app, metrics
        self.max_body_bytes, self.max_concurrency, self.retry_after = max_body_bytes, max_concurrency, str(retry_after_s).encode()
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        label = route_label(path)
        status_holder = [500]
        response_started = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                response_started[0] = True
            await send(message)

        admitted = path not in EXEMPT
        try:
            if admitted:
                if self.in_flight >= self.max_concurrency:
                    self.metrics.rejections.labels("overload").inc()
                    status_holder[0] = 503
                    await _send_json(send, 503, error_body(503, "overloaded", f"the service is at its limit of {self.max_concurrency} "
                                                           "concurrent requests (CAE_MAX_CONCURRENCY); retry shortly"),
                                     [(b"retry-after", self.retry_after)])
                    return
                length = _content_length(scope)
                if length is not None and length > self.max_body_bytes:
                    self.metrics.rejections.labels("body_too_large").inc()
                    status_holder[0] = 413
                    await _send_json(send, 413, error_body(413, "body_too_large", _too_large(self.max_body_bytes)))
                    return
                self.in_flight += 1
                self.metrics.in_flight.inc()
            try:
                await self.app(scope, self._limited(receive) if admitted else receive, send_wrapper)
            except BodyTooLarge:
                self.metrics.rejections.labels("body_too_large").inc()
                if not response_started[0]:
                    status_holder[0] = 413
                    await _send_json(send, 413, error_body(413, "body_too_large", _too_large(self.max_body_bytes)))
            finally:
                if admitted:
                    self.in_flight -= 1
                    self.metrics.in_flight.dec()
        finally:
            self.metrics.requests.labels(label, str(status_holder[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    def _limited(self, receive):
        received = 0
        limit = self.max_body_bytes

        async def wrapper():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        return wrapper


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit:,} bytes (CAE_MAX_BODY_BYTES)"
