"""Prometheus metrics (GET /metrics), in a registry per app so tests and several apps do not mix."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cae_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("cae_request_seconds", "HTTP request latency, first byte in to last byte out",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("cae_inference_seconds", "onnxruntime session run time per batch", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("cae_batch_size", "images per session run", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("cae_queue_wait_seconds", "time from a request's arrival at the batcher to its session run",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.rejections = Counter("cae_rejections", "requests refused before inference", ["reason"], registry=r)
        self.in_flight = Gauge("cae_requests_in_flight", "admitted requests in progress or queued", registry=r)
        self.reserved_bytes = Gauge("cae_memory_reserved_bytes", "memory reserved by admitted requests (estimated)", registry=r)
        self.resident_bytes = Gauge("cae_resident_memory_bytes", "the process's resident set size", registry=r)
        self.tiles = Counter("cae_tiles", "session runs on one tile of an image too large for one run", ["model"], registry=r)
