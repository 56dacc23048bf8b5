"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("aftershock_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("aftershock_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("aftershock_http_errors", "error responses (4xx/5xx) by route and error code",
                              ["route", "code"], registry=r)
        self.in_flight = Gauge("aftershock_http_requests_in_flight", "requests being served", registry=r)
        self.search = Histogram("aftershock_search_duration_seconds", "index search time per request (queueing "
                                "for the index included)", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.encode = Histogram("aftershock_encode_duration_seconds", "text query encoding time per request",
                                buckets=LATENCY_BUCKETS, registry=r)
        self.queries = Counter("aftershock_queries", "queries searched, by form", ["form"], registry=r)
        self.ready = Gauge("aftershock_ready", "1 once the index is loaded and the kernels are warm", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
