"""Prometheus metrics of one server: requests, latency per route and per component, batching.

Each app owns a private registry (several apps can live in one process, as in tests). With
``--workers N`` the worker processes write to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
aggregates every worker, so a scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from mmedge.serve.batcher import BatchRecord

__all__ = ["MULTIPROC_ENV", "Metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets from 0.5 ms (tiny encoders) to 10 s (big batches on slow CPUs).
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metric families and the text exposition of them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mmedge_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "mmedge_request_seconds", "HTTP request latency by route", ["route"], buckets=_SECONDS, registry=r
        )
        self.component_seconds = Histogram(
            "mmedge_component_seconds",
            "Latency per component (encoders, head) and per pipeline step (preprocess, execute, "
            "postprocess; 'pipeline' = one whole pipeline call)",
            ["component"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "mmedge_queue_seconds", "Time a request waited for its batch to start", buckets=_SECONDS, registry=r
        )
        self.batch_rows = Histogram("mmedge_batch_rows", "Rows per pipeline call", ["task"], buckets=_ROWS, registry=r)
        self.batch_requests = Histogram(
            "mmedge_batch_requests", "Requests merged per pipeline call", ["task"], buckets=_ROWS, registry=r
        )
        self.batch_splits = Counter(
            "mmedge_batch_splits", "Merged batches that failed and were re-run request by request", registry=r
        )
        self.queue_depth = Gauge(
            "mmedge_queue_depth", "Requests accepted and not yet started", multiprocess_mode="livesum", registry=r
        )

    def observe_batch(self, record: BatchRecord) -> None:
        task = str(record.task)
        self.batch_rows.labels(task).observe(record.rows)
        self.batch_requests.labels(task).observe(record.requests)
        self.component_seconds.labels("pipeline").observe(record.run_seconds)
        for wait in record.queue_seconds:
            self.queue_seconds.observe(wait)
        if record.split:
            self.batch_splits.inc()

    def trace(self, kind: str, name: str, start_ns: int, end_ns: int) -> None:
        """``Pipeline(trace=...)`` hook: a component's run, or a whole step (preprocess, ...)."""
        label = name if kind == "component" else kind
        self.component_seconds.labels(label).observe((end_ns - start_ns) / 1e9)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The text format of every metric, summed over worker processes when there are several."""
        if os.environ.get(MULTIPROC_ENV):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
