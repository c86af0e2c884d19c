"""Batched metric samples read exactly like direct prometheus_client calls, from any thread."""

from __future__ import annotations

import math
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from concurproxy.telemetry.batch import PendingCounter, PendingHistogram
from concurproxy.telemetry.catalog import LATENCY_BUCKETS
from concurproxy.telemetry.metrics import ProxyMetrics

values = st.one_of(
    st.floats(min_value=-1.0, max_value=1000.0, allow_nan=False),
    st.sampled_from([*LATENCY_BUCKETS, 0.0, math.inf]),  # exactly on a bound: same bucket as observe
)


def samples(reg: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in reg.collect()
        if f.name == name
        for s in f.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), values), max_size=40))
def test_batched_histogram_equals_direct_observe(obs: list[tuple[str, float]]) -> None:
    direct_reg, batched_reg = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h_seconds", "h", ["k"], registry=direct_reg, buckets=LATENCY_BUCKETS)
    batched = Histogram("h_seconds", "h", ["k"], registry=batched_reg, buckets=LATENCY_BUCKETS)
    pending = PendingHistogram(batched.labels, LATENCY_BUCKETS)
    for k, v in obs:
        direct.labels(k).observe(v)
        pending.observe((k,), v)
    pending.flush()
    assert samples(batched_reg, "h_seconds") == samples(direct_reg, "h_seconds")


def test_batched_counter_sums_per_key_and_flushes_when_full() -> None:
    reg = CollectorRegistry()
    c = Counter("c", "c", ["k"], registry=reg)
    pending = PendingCounter(c.labels, max_pending=2)
    pending.add(("a",))
    pending.add(("a",), 2.5)
    pending.add(("b",))
    assert reg.get_sample_value("c_total", {"k": "a"}) is None  # still pending
    pending.add(("c",))  # a third key: the table is full, so everything is applied now
    assert reg.get_sample_value("c_total", {"k": "a"}) == 3.5
    assert reg.get_sample_value("c_total", {"k": "c"}) == 1


def test_proxy_metrics_scrape_sees_batched_samples_even_from_another_thread() -> None:
    reg = CollectorRegistry()
    m = ProxyMetrics(reg, clock=lambda: 0.0)
    m.observe_step(route="/v1/chat/completions", tenant="t", role="r", status=200, duration_s=0.003, replica="r0")
    m.ticket_ended("success")
    seen: dict[str, float | None] = {}

    def scrape() -> None:  # like metrics_handler: collection in a worker thread, no refresh first
        seen["requests"] = reg.get_sample_value(
            "concurproxy_requests_total", {"route": "/v1/chat/completions", "tenant": "t", "role": "r", "status": "200"}
        )
        seen["step_le_5ms"] = reg.get_sample_value(
            "concurproxy_step_duration_seconds_bucket", {"replica": "r0", "role": "r", "le": "0.005"}
        )
        seen["ended"] = reg.get_sample_value("concurproxy_tickets_ended_total", {"outcome": "success"})

    t = threading.Thread(target=scrape)
    t.start()
    t.join()
    assert seen == {"requests": 1.0, "step_le_5ms": 1.0, "ended": 1.0}
