"""`cae serve`: uvicorn with the service's own checks (no open port without an API key) and draining."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from service.main import create_app
from service.settings import Settings


class InsecureBindError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    settings = settings or Settings()
    if not is_loopback(host) and settings.api_key is None and not insecure:
        raise InsecureBindError(f"refusing to bind {host} without an API key: set CAE_API_KEY, or pass --insecure "
                                "to serve without one (e.g. behind an authenticating proxy)")
    logging.basicConfig(level=workers_log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=workers_log_level, timeout_graceful_shutdown=graceful_timeout_s,
                            access_log=False)
    DrainingServer(config, app.state.runtime).run()
