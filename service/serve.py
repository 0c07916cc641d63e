"""`python -m service` / `cae serve`: uvicorn with the service's own checks and limits.

- settings and the model folder checked before uvicorn starts (StartupError: one line);
- no open port without an API key (InsecureBindError), and no empty key (SettingsError);
- request headers must arrive within CAE_HEADER_TIMEOUT_S of the connection opening or the previous
  response, or the connection gets a JSON 408 and is closed (uvicorn itself waits forever);
- SIGTERM: /readyz turns 503 at once, in-flight requests get the grace period to finish.
"""

from __future__ import annotations

import json
import logging
import socket

import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import error_body
from service.main import create_app
from service.models import ModelLoadError, load_models
from service.settings import Settings


class StartupError(ValueError):
    """The service cannot start as configured; the message says why in one line."""


class InsecureBindError(StartupError):
    pass


class SettingsError(StartupError):
    """A CAE_* variable is invalid; the message is one line per problem."""


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(f"CAE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors())
        raise SettingsError(problems) from None


def check_port_free(host: str, port: int, setting: str) -> None:
    """A port another process holds is one line before anything starts (the lifespan would print a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise StartupError(f"cannot bind {host}:{port} ({setting}): {e.strerror}") from None


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers (slow-header clients hold no connection)."""

    header_timeout_s = 10.0
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        if not self._in_request():
            self._arm()  # bytes of a new request: its headers are on the clock
        super().data_received(data)
        if self._in_request():
            self._disarm()  # headers complete: the body has its own deadline (CAE_BODY_TIMEOUT_S)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_request() or self.transport.is_closing():
            return
        body = json.dumps(error_body(408, "request_timeout", f"the request headers did not arrive within "
                                     f"{self.header_timeout_s:g} s (CAE_HEADER_TIMEOUT_S)")).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: /readyz turns 503 at once (load balancers stop sending), in-flight requests finish."""

    def __init__(self, config: uvicorn.Config, runtime):
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig, frame):
        self.runtime.draining = True
        super().handle_exit(sig, frame)


def serve(host: str = "127.0.0.1", port: int = 8000, insecure: bool = False, workers_log_level: str = "info",
          graceful_timeout_s: float = 30.0, settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    if insecure and not settings.insecure:
        settings = settings.model_copy(update={"insecure": True})
    if settings.grpc_port and settings.grpc_host is None:
        settings = settings.model_copy(update={"grpc_host": host})  # gRPC beside HTTP, on the same address
    for address in [host] + ([settings.grpc_host] if settings.grpc_port else []):
        if settings.exposed_without_key(address):
            raise InsecureBindError(f"refusing to bind {address} without an API key: set CAE_API_KEY, or pass --insecure "
                                    "to serve without one (e.g. behind an authenticating proxy)")
    if settings.grpc_port:
        check_port_free(settings.grpc_host, settings.grpc_port, "CAE_GRPC_PORT")
    logging.basicConfig(level=workers_log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Loaded before uvicorn starts (it would run the lifespan before binding anyway), so a folder that
        # cannot be served is one line and exit status 2, not a lifespan traceback.
        models = load_models(settings.model_dir, settings.providers, settings.intra_op_threads, settings.served_models)
    except ModelLoadError as e:
        raise StartupError(str(e)) from None
    app = create_app(settings, models=models)
    protocol = type("CaeH11Protocol", (HeaderTimeoutProtocol,), {"header_timeout_s": settings.header_timeout_s})
    config = uvicorn.Config(app, host=host, port=port, log_level=workers_log_level, timeout_graceful_shutdown=graceful_timeout_s,
                            access_log=False, http=protocol)
    DrainingServer(config, app.state.runtime).run()
