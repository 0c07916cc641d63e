"""What every request passes through, as plain ASGI (no per-request task or body copy):

- the API key, checked before any of the body is read (401), and no key-less service on a public address (403);
- the body, read whole before admission: 413 when Content-Length says too much or, for chunked bodies,
  as soon as the bytes received pass the limit; 408 when it does not arrive within CAE_BODY_TIMEOUT_S;
- admission: at most `max_concurrency` requests in progress or queued; beyond, 503 with Retry-After,
  so an overloaded service sheds load instead of queueing without bound;
- which of these a route gets is declared on the route (service.routing.Access: probes and docs skip
  all of them, V2 metadata skips the key);
- a JSON 503 for a request still running when the server's shutdown grace period ends;
- metrics: status and latency per route, labelled with the route's path template.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time

from service.deps import api_key_error
from service.errors import error_body
from service.metrics import Metrics
from service.routing import Access, RouteTable
from service.settings import Settings

async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class ServiceMiddleware:
    def __init__(self, app, metrics: Metrics, settings: Settings, routes: list, retry_after_s: int = 1):
        self.app, self.metrics, self.settings = app, metrics, settings
        self.routes = RouteTable(routes)
        self.max_body_bytes, self.max_concurrency = settings.max_body_bytes, settings.max_concurrency
        self.retry_after = str(retry_after_s).encode()
        # Bodies being read are held in memory before admission: a quarter of the budget at most, so many
        # clients sending large bodies slowly cannot exhaust it (503 beyond).
        self.max_reading_bytes = max(settings.max_body_bytes, (settings.memory_budget_mb << 20) // 4)
        self.reading_bytes = 0
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route = self.routes.lookup(scope)
        label = route.label
        status_holder = [500]
        response_started = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                response_started[0] = True
            await send(message)

        async def refuse(status: int, reason: str | None, code: str, message: str, headers=()):
            if reason:
                self.metrics.rejections.labels(reason).inc()
            await _send_json(send_wrapper, status, error_body(status, code, message, scope["path"]), headers)

        admitted = False
        try:
            if route.access is Access.PROBE:
                return await self.app(scope, receive, send_wrapper)
            if route.access is Access.PROTECTED:
                # Before anything of the body is read: an unauthenticated client costs nothing.
                if not self.settings.insecure and self.settings.api_key is None and _arrived_from_network(scope):
                    return await refuse(403, "unauthorised", "api_key_required", "this service has no API key and "
                                        "only answers on loopback: set CAE_API_KEY, or CAE_INSECURE=true behind an "
                                        "authenticating proxy")
                error = api_key_error(self.settings, _header(scope, b"authorization"))
                if error is not None:
                    self.metrics.rejections.labels("unauthorised").inc()
                    return await refuse(error.status, None, error.code, error.message,
                                        [(k.lower().encode(), v.encode()) for k, v in error.headers.items()])
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                return await refuse(413, "body_too_large", "body_too_large", _too_large(self.max_body_bytes))
            # The whole body first, admission after: a slow sender holds no admission slot meanwhile.
            body = await self._read_body(receive, refuse)
            if body is None:
                return
            if self.in_flight >= self.max_concurrency:
                return await refuse(503, "overload", "overloaded", f"the service is at its limit of {self.max_concurrency} "
                                    "concurrent requests (CAE_MAX_CONCURRENCY); retry shortly", [(b"retry-after", self.retry_after)])
            admitted = True
            self.in_flight += 1
            self.metrics.in_flight.inc()
            await self.app(scope, _replay(body, receive), send_wrapper)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when its shutdown grace period ends: answer in JSON.
            if response_started[0]:
                raise
            status_holder[0] = 503
            await _send_json(send, 503, error_body(503, "shutting_down", "the service shut down before this request "
                                                   "finished; retry", scope["path"]), [(b"retry-after", self.retry_after)])
        finally:
            if admitted:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
            self.metrics.requests.labels(label, str(status_holder[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def _read_body(self, receive, refuse) -> bytes | None:
        """The request body, or None once answered 408 (too slow), 413 (too large) or 503 (reading budget)."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None  # nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await refuse(413, "body_too_large", "body_too_large", _too_large(self.max_body_bytes))
                        return None
                    if self.reading_bytes + len(chunk) > self.max_reading_bytes:
                        await refuse(503, "overload", "overloaded", "too many request bodies are being received at once; "
                                     "retry shortly", [(b"retry-after", self.retry_after)])
                        return None
                    self.reading_bytes += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await refuse(408, "body_timeout", "request_timeout", f"the request body did not arrive within "
                         f"{self.settings.body_timeout_s:g} s (CAE_BODY_TIMEOUT_S)", [(b"connection", b"close")])
            return None
        finally:
            self.reading_bytes -= sum(len(c) for c in chunks)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive() that gives the app the body already read, then waits for the disconnect as usual."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _arrived_from_network(scope) -> bool:
    """True when the connection's local address is an IP other than loopback (the server was bound to a
    public interface); unix sockets and in-process test transports count as local."""
    server = scope.get("server")
    if not server:
        return False
    try:
        return not ipaddress.ip_address(server[0]).is_loopback
    except ValueError:
        return False


def _header(scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


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
