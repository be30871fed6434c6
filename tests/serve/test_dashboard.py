"""The Dashboard tab's arithmetic on real exposition text: histogram quantiles as Prometheus computes
them, counter rates, and the figures' tables."""
from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serve.dashboard import MetricsHistory, quantile


def test_quantile_interpolates_within_a_bucket_as_prometheus_does():
    buckets = {0.1: 50.0, 0.5: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.3)
    assert quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 10.0}) == 1.0  # beyond the last finite bound
    assert math.isnan(quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def test_history_rates_and_quantiles_from_scrapes():
    registry = CollectorRegistry()
    decisions = Counter("guardchat_guard_decisions", "", ["direction", "category", "action"], registry=registry)
    latency = Histogram("guardchat_guard_latency_seconds", "", ["direction"], buckets=(0.001, 0.01, 0.1),
                        registry=registry)
    history = MetricsHistory(lambda: generate_latest(registry), interval_s=1, window_s=100)
    history.sample(now=0)
    decisions.labels("input", "hate", "block").inc(4)
    decisions.labels("input", "none", "allow").inc(6)
    for _ in range(10):
        latency.labels("input").observe(0.005)
    history.sample(now=2)
    assert history.rates("guardchat_guard_decisions_total", direction="input") == [(2, 5.0)]
    assert history.rates("guardchat_guard_decisions_total", action="block") == [(2, 2.0)]
    (t, q, value), = [row for row in history.quantiles("guardchat_guard_latency_seconds", (0.5,), direction="input")]
    assert t == 2 and q == 0.5 and 0.001 < value <= 0.01
    frames = history.frames()
    assert frames["blocks_by_category"].to_dict("list") == {"category": ["hate"], "blocks": [4.0]}
    assert set(frames["guard_latency"]["series"]) == {"input p50", "input p99"}
    history.sample(now=200)  # older scrapes fall out of the window
    assert [s.t for s in history.scrapes] == [200]
