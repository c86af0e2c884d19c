"""The node agent's own Prometheus exposition, built on demand from :class:`AgentState`.

A custom collector registered in a registry the agent creates (no globals): every scrape
reads the current state, so nothing can go stale between updates. All names are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from concurproxy.nodeagent.state import AgentState

P = "concurproxy_node_"


class AgentCollector(Collector):
    def __init__(self, state: AgentState, clock: Callable[[], float]):
        self._state = state
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        st, now = self._state, self._clock()
        snap = st.tracker.snapshot_at(now)
        yield GaugeMetricFamily(
            P + "engine_up",
            "1 when the engine's newest metrics are fresh and parsed.",
            value=1.0 if snap.ok else 0.0,
        )
        yield GaugeMetricFamily(
            P + "engine_data_age_seconds", "Age of the newest engine data.", value=max(now - snap.ts, 0.0)
        )
        yield CounterMetricFamily(P + "engine_scrapes", "Engine /metrics reads.", value=st.scrapes)
        yield CounterMetricFamily(
            P + "engine_scrape_failures", "Failed engine /metrics reads.", value=st.scrape_failures
        )
        gauges: list[tuple[str, str, float | int | None]] = [
            ("engine_kv_usage_ratio", "KV cache usage, 0..1.", snap.kv_usage),
            ("engine_requests_running", "Requests in the running batch.", snap.running),
            ("engine_requests_waiting", "Requests waiting in the engine.", snap.waiting),
            (
                "engine_preemptions_per_second",
                "Preemption rate over the rate window.",
                snap.preemptions_per_s,
            ),
            (
                "engine_prefix_hit_ratio",
                "Prefix-cache hit rate over the rate window, 0..1.",
                snap.prefix_hit_rate,
            ),
            ("engine_kv_capacity_tokens", "Tokens the KV cache can hold.", snap.kv_capacity_tokens),
        ]
        for name, doc, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(P + name, doc, value=float(value))
        yield GaugeMetricFamily(P + "nvml_available", "1 when NVML answers.", value=1.0 if st.gpu.available else 0.0)
        used = GaugeMetricFamily(P + "gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
        total = GaugeMetricFamily(P + "gpu_memory_total_bytes", "GPU memory in total.", labels=["gpu", "name"])
        util = GaugeMetricFamily(P + "gpu_utilization_ratio", "SM busy fraction.", labels=["gpu", "name"])
        mutil = GaugeMetricFamily(
            P + "gpu_memory_utilization_ratio", "Memory controller busy fraction.", labels=["gpu", "name"]
        )
        for g in st.gpu.gpus:
            labels = [str(g.index), g.name]
            used.add_metric(labels, g.memory_used_bytes)
            total.add_metric(labels, g.memory_total_bytes)
            if g.utilization_pct is not None:
                util.add_metric(labels, g.utilization_pct / 100.0)
            if g.memory_utilization_pct is not None:
                mutil.add_metric(labels, g.memory_utilization_pct / 100.0)
        yield from (used, total, util, mutil)


def build_registry(state: AgentState, clock: Callable[[], float]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(state, clock))
    return registry
