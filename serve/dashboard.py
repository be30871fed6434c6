"""Live figures for the UI's Dashboard tab, from the same exposition text `/metrics` serves (so the tab
and a Prometheus + Grafana stack show the same numbers): a sampler keeps the last few minutes of
scrapes; each figure is a rate, a ratio or a histogram quantile over them, as the Grafana panels
in deploy/ compute with PromQL."""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Series = dict[tuple[str, Labels], float]


def parse(exposition: str) -> Series:
    """{(sample name, sorted labels): value} for every sample in Prometheus text format."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition) for s in family.samples}


def total(series: Series, name: str, **match: str) -> float:
    """Sum of one metric's samples whose labels include `match` (PromQL `sum(name{match})`)."""
    return sum(v for (n, labels), v in series.items()
               if n == name and all(dict(labels).get(k) == want for k, want in match.items()))


def by_label(series: Series, name: str, label: str, **match: str) -> dict[str, float]:
    """`sum by (label) (name{match})`."""
    out: dict[str, float] = {}
    for (n, labels), v in series.items():
        tags = dict(labels)
        if n == name and all(tags.get(k) == want for k, want in match.items()):
            out[tags.get(label, "")] = out.get(tags.get(label, ""), 0.0) + v
    return out


def quantile(q: float, buckets: dict[float, float]) -> float:
    """`histogram_quantile` over cumulative bucket counts {upper bound: count}, linear within a bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # as Prometheus does: the highest finite bound
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def bucket_counts(series: Series, name: str, **match: str) -> dict[float, float]:
    return {float(le): v for le, v in by_label(series, f"{name}_bucket", "le", **match).items()}


@dataclass
class Scrape:
    t: float
    series: Series


class MetricsHistory:
    """The last `window_s` seconds of scrapes of `render()` (the app's own `/metrics` body)."""

    def __init__(self, render: Callable[[], bytes], interval_s: float = 2.0, window_s: float = 600.0):
        self.render = render
        self.interval_s = interval_s
        self.window_s = window_s
        self.scrapes: deque[Scrape] = deque()

    def sample(self, now: float | None = None) -> Scrape:
        scrape = Scrape(time.time() if now is None else now, parse(self.render().decode()))
        self.scrapes.append(scrape)
        while self.scrapes and self.scrapes[0].t < scrape.t - self.window_s:
            self.scrapes.popleft()
        return scrape

    async def run(self) -> None:
        """Samples every `interval_s` until cancelled (a task of the app's lifespan)."""
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def _pairs(self, step: int = 1):
        scrapes = list(self.scrapes)
        return [(a, b) for a, b in zip(scrapes[:-step], scrapes[step:]) if b.t > a.t]

    def rates(self, name: str, **match: str) -> list[tuple[float, float]]:
        """Per-second increase of a counter between consecutive scrapes (resets read as 0)."""
        return [(b.t, max(total(b.series, name, **match) - total(a.series, name, **match), 0.0) / (b.t - a.t))
                for a, b in self._pairs()]

    def gauge(self, name: str, **match: str) -> list[tuple[float, float]]:
        return [(s.t, total(s.series, name, **match)) for s in self.scrapes]

    def quantiles(self, name: str, qs: tuple[float, ...], span_s: float = 60.0,
                  **match: str) -> list[tuple[float, float, float]]:
        """(time, q, value): the histogram's quantiles over the `span_s` before each scrape (seconds)."""
        out = []
        scrapes = list(self.scrapes)
        for i, now in enumerate(scrapes):
            then = next((s for s in scrapes[:i] if s.t >= now.t - span_s), None)
            if then is None:
                continue
            new, old = bucket_counts(now.series, name, **match), bucket_counts(then.series, name, **match)
            delta = {le: new[le] - old.get(le, 0.0) for le in new}
            for q in qs:
                value = quantile(q, delta)
                if not math.isnan(value):
                    out.append((now.t, q, value))
        return out

    def frames(self) -> dict[str, pd.DataFrame]:
        """One long-format table per Dashboard plot (columns: time, value, series)."""
        def table(rows: list[tuple[float, float]], series: str) -> pd.DataFrame:
            return pd.DataFrame({"time": pd.to_datetime([t for t, _ in rows], unit="s"),
                                 "value": [v for _, v in rows], "series": series})

        def join(*tables: pd.DataFrame) -> pd.DataFrame:
            return pd.concat(tables, ignore_index=True)

        def quantile_tables(name: str, scale: float, label: str, **match: str) -> list[pd.DataFrame]:
            rows = self.quantiles(name, (0.5, 0.99), **match)
            return [table([(t, v * scale) for t, q, v in rows if q == want], f"{label} p{int(want * 100)}")
                    for want in (0.5, 0.99)]

        last = self.scrapes[-1].series if self.scrapes else {}
        blocks = by_label(last, "guardchat_guard_decisions_total", "category", action="block")
        likes = total(last, "guardchat_feedback_total", kind="rating", value="like")
        ratings = total(last, "guardchat_feedback_total", kind="rating")
        return {
            "requests": join(table(self.rates("guardchat_http_requests_total", route="/v1/chat/completions"), "API"),
                             table(self.rates("guardchat_guard_decisions_total", direction="input"),
                                   "input checks (API + UI)")),
            "blocks": join(*[table(self.rates("guardchat_guard_decisions_total", action="block", direction=d),
                                   f"{d} blocks") for d in ("input", "output")]),
            "blocks_by_category": pd.DataFrame({"category": list(blocks) or ["none"],
                                                "blocks": list(blocks.values()) or [0.0]}),
            "guard_latency": join(*quantile_tables("guardchat_guard_latency_seconds", 1000, "input", direction="input"),
                                  *quantile_tables("guardchat_guard_latency_seconds", 1000, "output",
                                                   direction="output")),
            "ttft": join(*quantile_tables("vllm:time_to_first_token_seconds", 1000, "TTFT")),
            "tokens": table(self.rates("vllm:generation_tokens_total"), "generated tokens/s"),
            "requests_engine": join(table(self.gauge("vllm:num_requests_running"), "running"),
                                    table(self.gauge("vllm:num_requests_waiting"), "waiting")),
            "kv_cache": table([(t, v * 100) for t, v in self.gauge("vllm:kv_cache_usage_perc")], "KV cache use %"),
            "feedback": pd.DataFrame({"metric": ["likes", "dislikes", "preferences", "like ratio %"],
                                      "value": [likes, ratings - likes,
                                                total(last, "guardchat_feedback_total", kind="preference"),
                                                round(100 * likes / ratings, 1) if ratings else 0.0]}),
        }
