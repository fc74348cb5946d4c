"""Prometheus metrics of a server: requests by path and status, their latency, the sizes
of the batches the model ran, and the predicted classes (a shift in the class mix shows
there: the notes' monitoring in production).

The HTTP server and the inference workers are separate processes, so the metrics use
prometheus_client's multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` must name an empty
folder before this module is first imported in any of them (visionlab.serve.server sets
it; spawned workers inherit it).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATHS = ("/predict", "/health", "/metrics", "/", "/info")  # other paths count as "other": bounded labels
DISCONNECTED = 499  # the status a request is counted with when its client left before sending it all (nginx's)

REQUESTS = Counter("visionlab_requests", "HTTP requests by path and status code", ["path", "status"])
LATENCY = Histogram(
    "visionlab_request_seconds",
    "Time from request to the last byte of its response",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "visionlab_batch_size", "Images per model call (dynamic batching)", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
PREDICTED = Counter("visionlab_predicted", "Answers by top-1 class", ["class_name"])


class RequestMetrics:
    """ASGI middleware counting each HTTP request once, before its last byte is sent, so a
    client that has its answer finds it counted. A client that disconnects while sending
    its request is no server error: counted as 499, without a traceback or a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in PATHS else "other"
        start, status = time.perf_counter(), 500

        def record() -> None:
            LATENCY.labels(path).observe(time.perf_counter() - start)
            REQUESTS.labels(path, str(status)).inc()

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except ClientDisconnect:
            status = DISCONNECTED
            record()
        except Exception:
            record()  # the 500 Starlette answers for an error nobody handled
            raise


def observe_batch(top1: list[str]) -> None:
    """Record one model call: its size and each image's top-1 class."""
    BATCH_SIZE.observe(len(top1))
    for name in top1:
        PREDICTED.labels(name).inc()


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the Prometheus text of all processes of this server."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metric_value(text: str, name: str, **labels: Any) -> float:
    """The value of sample `name{labels}` in Prometheus text, 0 when absent (tests, loadtest)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == str(v) for k, v in labels.items()):
                total += sample.value
    return total
