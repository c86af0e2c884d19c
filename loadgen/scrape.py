"""Scrape Prometheus endpoints (proxy, workers) during a run and keep selected series.

Every ``interval_s`` each URL is fetched; samples whose name matches one of the
glob ``patterns`` (histogram buckets excluded) become points ``[t_s, value]``
of a ``Series`` keyed by (url, name, labels). Failed scrapes are counted, not
raised: a metrics endpoint going away must not end the load test.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadgen.results import Series

DEFAULT_SERIES: tuple[str, ...] = (
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:prefix_cache_hits_total",
    "vllm:prefix_cache_queries_total",
    "concurproxy_admission_window",
    "concurproxy_admission_active_agents",
    "concurproxy_admission_queued_agents",
    "concurproxy_pressure_kv_usage_ratio",
    "concurproxy_requests_in_flight",
)


class Scraper:
    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: Iterable[str],
        patterns: Iterable[str] = DEFAULT_SERIES,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client, self.urls, self.patterns = client, list(urls), tuple(patterns)
        self.interval_s, self.clock = interval_s, clock
        self.series: dict[tuple[str, str, tuple[tuple[str, str], ...]], Series] = {}
        self.errors = 0
        self.t0 = clock()

    def _wanted(self, name: str) -> bool:
        return not name.endswith("_bucket") and any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def ingest(self, url: str, text: str, t: float) -> None:
        """Parse one exposition text and append its wanted samples at time ``t`` (pure)."""
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if not self._wanted(s.name):
                    continue
                labels = tuple(sorted(s.labels.items()))
                key = (url, s.name, labels)
                ser = self.series.get(key)
                if ser is None:
                    ser = self.series[key] = Series(url=url, name=s.name, labels=dict(labels))
                ser.points.append([round(t, 3), float(s.value)])

    async def scrape_once(self) -> None:
        for url in self.urls:
            t = self.clock() - self.t0
            try:
                r = await self.client.get(url, timeout=max(0.5, self.interval_s))
                r.raise_for_status()
                self.ingest(url, r.text, t)
            except (httpx.HTTPError, ValueError):
                self.errors += 1

    async def run(self) -> None:
        """Scrape until cancelled."""
        while True:
            started = self.clock()
            await self.scrape_once()
            await asyncio.sleep(max(0.0, self.interval_s - (self.clock() - started)))

    def result(self) -> list[Series]:
        return list(self.series.values())
