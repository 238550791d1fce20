"""Prometheus metrics of the ingest API: requests, bytes, rejections by reason, latency.

One registry per app, so tests and several apps in one process never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgeloop_ingest_requests", "HTTP requests answered", ["method", "path", "status"], registry=self.registry
        )
        self.bytes_received = Counter(
            "edgeloop_ingest_request_bytes", "Request body bytes received", ["path"], registry=self.registry
        )
        self.rejections = Counter(
            "edgeloop_ingest_rejections", "Requests refused, by reason", ["reason"], registry=self.registry
        )
        self.captures = Counter(
            "edgeloop_ingest_captures", "Captures accepted", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "edgeloop_ingest_request_seconds",
            "Time from first byte of the request to the response",
            ["path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
