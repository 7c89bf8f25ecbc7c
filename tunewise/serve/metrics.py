"""The Prometheus metrics of one server (its own CollectorRegistry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("tunewise_requests", "chat completions", ["model", "status"], registry=self.registry)
        self.latency = Histogram("tunewise_request_seconds", "chat completion latency", ["model"],
                                 registry=self.registry)
        self.tokens = Counter("tunewise_tokens", "tokens processed", ["model", "kind"], registry=self.registry)
        self.feedback = Counter("tunewise_feedback", "feedback received", ["rating"], registry=self.registry)
        self.adapters = Gauge("tunewise_loaded_adapters", "adapters in memory", registry=self.registry)
        self.batch_size = Histogram("tunewise_batch_size", "requests per generate call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
