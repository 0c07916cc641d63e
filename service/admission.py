"""Admission by memory and time, decided before any pixel is decoded.

Every image or tensor request is planned from its headers (sizes, models, tiles) into an estimate of the
memory it will hold at its peak and the inference seconds it needs, from the costs each model measured at
warm-up. Then:

- more memory than the whole budget (CAE_MEMORY_BUDGET_MB), or more seconds than the deadline allows
  even on an idle service: 413, with both numbers (it can never be served here as sent);
- more memory than what is free of the budget now, or a deadline its queue position cannot meet: 503
  with Retry-After (it could be served later), at once rather than as a 504 thirty seconds later;
- otherwise its estimate is reserved until its response is built.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from service.errors import ServiceError
from service.metrics import Metrics

MB = 1 << 20


class Admission:
    def __init__(self, budget_bytes: int, timeout_s: float, metrics: Metrics):
        self.budget_bytes, self.timeout_s, self.metrics = budget_bytes, timeout_s, metrics
        self.reserved_bytes = 0

    def _refuse(self, status: int, reason: str, code: str, message: str, retry_after_s: float | None = None) -> ServiceError:
        self.metrics.rejections.labels(reason).inc()
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s is not None else None
        return ServiceError(status, code, message, headers)

    @contextmanager
    def admit(self, need_bytes: int, need_s: float, backlog_s: float):
        """Reserve `need_bytes` of the budget for the block, or refuse (module docstring)."""
        if need_bytes > self.budget_bytes:
            raise self._refuse(413, "memory_budget", "request_too_large",
                               f"this request needs an estimated {need_bytes / MB:,.0f} MB, more than the service's whole "
                               f"memory budget of {self.budget_bytes / MB:,.0f} MB (CAE_MEMORY_BUDGET_MB); send fewer or smaller images")
        if need_s > self.timeout_s:
            raise self._refuse(413, "deadline", "request_too_slow",
                               f"this request needs an estimated {need_s:,.1f} s of inference, more than the {self.timeout_s:g} s "
                               "limit (CAE_INFERENCE_TIMEOUT_S); send fewer or smaller images, or ask fewer refine steps")
        if backlog_s + need_s > self.timeout_s:
            raise self._refuse(503, "deadline", "overloaded",
                               f"the work queued ahead ({backlog_s:,.1f} s) and this request ({need_s:,.1f} s) would not finish "
                               f"within {self.timeout_s:g} s (CAE_INFERENCE_TIMEOUT_S); retry later", backlog_s + need_s - self.timeout_s)
        if self.reserved_bytes + need_bytes > self.budget_bytes:
            raise self._refuse(503, "memory_budget", "overloaded",
                               f"this request needs an estimated {need_bytes / MB:,.0f} MB and {self.reserved_bytes / MB:,.0f} of "
                               f"the {self.budget_bytes / MB:,.0f} MB memory budget (CAE_MEMORY_BUDGET_MB) are in use; retry "
                               "shortly", max(1.0, backlog_s))
        self.reserved_bytes += need_bytes
        self.metrics.reserved_bytes.set(self.reserved_bytes)
        try:
            yield
        finally:
            self.reserved_bytes -= need_bytes
            self.metrics.reserved_bytes.set(self.reserved_bytes)
