"""Prometheus metrics: the server's own series in a registry per app, vLLM's `vllm:` series from
prometheus_client's global registry (where the engine registers them), served together."""
from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """The HTTP and request-level series this server exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("guardchat_http_requests", "HTTP requests by route and status.",
                                     ["method", "route", "status"], registry=r)
        self.http_latency = Histogram("guardchat_http_request_duration_seconds",
                                      "Time from request to the last byte of the response.",
                                      ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("guardchat_http_requests_in_flight", "HTTP requests being served.", registry=r)
        self.completion_tokens = Counter("guardchat_completion_tokens", "Tokens generated for clients.", registry=r)
        self.client_disconnects = Counter("guardchat_client_disconnects",
                                          "Streams whose client went away; their engine requests were aborted.",
                                          registry=r)
        self.engine_ready = Gauge("guardchat_engine_ready", "1 once the engine serves requests.", registry=r)
        self.guard_decisions = Counter("guardchat_guard_decisions", "Guard decisions.",
                                       ["direction", "category", "action"], registry=r)
        self.guard_latency = Histogram("guardchat_guard_latency_seconds", "Time of one guard check.", ["direction"],
                                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
                                       registry=r)
        self.guard_errors = Counter("guardchat_guard_errors", "Guard checks that failed (blocked when failing "
                                    "closed).", ["direction"], registry=r)
        self.stream_blocks = Counter("guardchat_guard_stream_blocks", "Streamed replies cut by the output guard.",
                                     registry=r)
        self.feedback = Counter("guardchat_feedback", "Feedback received: ratings (like/dislike) and preferences.",
                                ["kind", "value"], registry=r)
        self.holdback = Histogram("guardchat_guard_holdback_seconds",
                                  "How long streamed text was held back for the output check before release.",
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class HTTPMetricsMiddleware:
    """Counts requests and times them until the response's last byte (streams included).
    Routes are labelled by their template ('/v1/chat/completions'), unknown paths as 'unmatched'."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_latency.labels(scope["method"], route).observe(time.perf_counter() - start)
