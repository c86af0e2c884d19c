"""ProxyMetrics: declarations, typed recording methods, cardinality bounds, exposition."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from concurproxy.control.types import PressureSnapshot
from concurproxy.telemetry.catalog import LATENCY_BUCKETS, SPECS
from concurproxy.telemetry.exposition import render
from concurproxy.telemetry.labels import OTHER, BoundedLabel
from concurproxy.telemetry.metrics import ProxyMetrics

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(clock: Clock | None = None) -> tuple[CollectorRegistry, ProxyMetrics]:
    reg = CollectorRegistry()
    return reg, ProxyMetrics(reg, clock=clock or Clock())


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_declarations_follow_conventions() -> None:
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names))
    for s in SPECS:
        assert re.fullmatch(r"concurproxy_[a-z_]+", s.name), s.name
        assert s.help.strip()
        assert (s.kind == "counter") == s.name.endswith("_total"), s.name
        if s.kind == "histogram":
            assert s.name.endswith("_seconds")
        for label in s.labels:
            assert label not in {"agent", "agent_id", "task", "task_id", "request_id", "session"}
        assert set(s.prime) <= set(s.labels)
    assert LATENCY_BUCKETS[0] <= 0.001 and LATENCY_BUCKETS[-1] >= 600
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_registry_is_not_global_two_instances_coexist() -> None:
    r1, m1 = make()
    r2, _m2 = make()
    m1.ticket_ended("success")
    assert value(r1, "concurproxy_tickets_ended_total", outcome="success") == 1
    assert value(r2, "concurproxy_tickets_ended_total", outcome="success") is None


def test_observe_step_records_counters_histograms_and_tokens() -> None:
    reg, m = make()
    m.observe_step(
        route=CHAT,
        tenant="t",
        role="planner",
        status=200,
        duration_s=0.4,
        replica="r0",
        ttft_s=0.05,
        upstream_s=0.3,
        prompt_tokens=100,
        completion_tokens=7,
    )
    m.observe_step(route=CHAT, tenant="t", role="planner", status=429, duration_s=0.001)
    assert value(reg, "concurproxy_requests_total", route=CHAT, tenant="t", role="planner", status="200") == 1
    assert value(reg, "concurproxy_requests_total", route=CHAT, tenant="t", role="planner", status="429") == 1
    assert value(reg, "concurproxy_step_duration_seconds_count", replica="r0", role="planner") == 1
    assert value(reg, "concurproxy_step_duration_seconds_count", replica="none", role="planner") == 1
    assert value(reg, "concurproxy_time_to_first_token_seconds_sum", replica="r0", role="planner") == 0.05
    assert value(reg, "concurproxy_upstream_duration_seconds_bucket", replica="r0", role="planner", le="0.5") == 1
    assert value(reg, "concurproxy_tokens_total", tenant="t", role="planner", direction="input") == 100
    assert value(reg, "concurproxy_tokens_total", tenant="t", role="planner", direction="output") == 7


def test_in_flight_and_admission_state() -> None:
    reg, m = make()
    m.request_started(CHAT)
    m.request_started(CHAT)
    m.request_finished(CHAT)
    assert value(reg, "concurproxy_requests_in_flight", route=CHAT) == 1
    m.set_admission_state("r0", window=8, active=5, queued=3)
    m.admission_decision("r0", "queue", "window_full")
    m.observe_queue_wait("r0", "coder", 1.5)
    assert value(reg, "concurproxy_admission_window", replica="r0") == 8
    assert value(reg, "concurproxy_admission_queued_agents", replica="r0") == 3
    assert (
        value(reg, "concurproxy_admission_decisions_total", replica="r0", decision="queue", reason="window_full") == 1
    )
    assert value(reg, "concurproxy_queue_wait_seconds_count", replica="r0", role="coder") == 1


def test_window_changes_count_direction_and_skip_no_change() -> None:
    reg, m = make()
    m.window_changed("r0", 8, 9, "healthy")
    m.window_changed("r0", 9, 6.3, "thrash")
    m.window_changed("r0", 6.3, 6.3, "cooldown")
    assert value(reg, "concurproxy_admission_window_changes_total", replica="r0", direction="up", reason="healthy") == 1
    assert (
        value(reg, "concurproxy_admission_window_changes_total", replica="r0", direction="down", reason="thrash") == 1
    )
    assert value(reg, "concurproxy_admission_window", replica="r0") == 6.3


def test_enum_label_values_use_their_value() -> None:
    from enum import Enum, StrEnum

    class Reason(StrEnum):
        full = "window_full"

    class Outcome(Enum):
        ok = "success"

    reg, m = make()
    m.admission_decision("r0", "queue", Reason.full)
    m.ticket_ended(Outcome.ok)
    assert (
        value(reg, "concurproxy_admission_decisions_total", replica="r0", decision="queue", reason="window_full") == 1
    )
    assert value(reg, "concurproxy_tickets_ended_total", outcome="success") == 1


def test_pressure_gauges_nan_for_unknown_and_age_computed_at_scrape() -> None:
    clock = Clock(100.0)
    reg, m = make(clock)
    m.observe_pressure(
        "r0",
        PressureSnapshot(ts=99.0, kv_usage=0.93, running=12, waiting=4, preemptions_per_s=2.5, prefix_hit_rate=None),
    )
    assert value(reg, "concurproxy_pressure_kv_usage_ratio", replica="r0") == 0.93
    assert value(reg, "concurproxy_pressure_waiting_requests", replica="r0") == 4
    assert math.isnan(value(reg, "concurproxy_pressure_prefix_hit_ratio", replica="r0") or 0.0)
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 1.0
    clock.t = 110.0  # the poller died: age keeps growing without any call
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 11.0
    m.observe_pressure("r0", PressureSnapshot(ts=109.0, ok=False, error="boom"))  # failed read: no change
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 11.0
    m.observe_pressure("r0", PressureSnapshot(ts=105.0, kv_usage=0.5))  # out-of-order read: age keeps newest
    m.observe_pressure("r0", PressureSnapshot(ts=104.0, kv_usage=0.5))
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 5.0
    m.pressure_poll_error("r0", "timeout")
    assert value(reg, "concurproxy_pressure_poll_errors_total", replica="r0", kind="timeout") == 1


def test_prime_creates_zero_series_and_age_counts_from_start() -> None:
    clock = Clock(50.0)
    reg, m = make(clock)
    m.prime(replicas=["r0", "r1"], tenants=["t"], roles=["planner"], routes=[CHAT])
    for r in ("r0", "r1"):
        assert value(reg, "concurproxy_upstream_errors_total", replica=r, kind="error") == 0
        assert value(reg, "concurproxy_replica_healthy", replica=r) == 1
        assert value(reg, "concurproxy_step_duration_seconds_count", replica=r, role="planner") == 0
    assert (
        value(
            reg,
            "concurproxy_budget_rejections_total",
            tenant="t",
            role="planner",
            reason="role_tokens_per_min",
        )
        == 0
    )
    assert value(reg, "concurproxy_requests_in_flight", route=CHAT) == 0
    clock.t = 60.0  # never got a snapshot: stale since start-up, so the alert can fire
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 10.0
    m.observe_pressure("r0", PressureSnapshot(ts=40.0, kv_usage=0.1))  # first real one replaces the prime time
    assert value(reg, "concurproxy_pressure_snapshot_age_seconds", replica="r0") == 20.0


def test_budgets_fairness_routing_upstream() -> None:
    reg, m = make()
    m.budget_consumed("t", "coder", 300)
    m.budget_rejected("t", "coder", "tokens_per_min")
    m.set_fairness_counter("t", 1234.5)
    m.routing_decision("r1", "prefix", pin_hit=False, prefix_match_tokens=512)
    m.routing_decision("r1", "pin", pin_hit=True)
    m.repinned("unhealthy")
    m.upstream_error("r1", "timeout")
    m.upstream_retry("r1", "connect")
    m.set_replica_health("r1", False)
    m.ticket_error("double_release")
    assert value(reg, "concurproxy_budget_consumed_tokens_total", tenant="t", role="coder") == 300
    assert value(reg, "concurproxy_budget_rejections_total", tenant="t", role="coder", reason="tokens_per_min") == 1
    assert value(reg, "concurproxy_fairness_virtual_tokens", tenant="t") == 1234.5
    assert value(reg, "concurproxy_routing_decisions_total", replica="r1", reason="prefix") == 1
    assert value(reg, "concurproxy_routing_pin_hits_total", replica="r1") == 1
    assert value(reg, "concurproxy_routing_prefix_match_tokens_total", replica="r1") == 512
    assert value(reg, "concurproxy_routing_repins_total", reason="unhealthy") == 1
    assert value(reg, "concurproxy_upstream_errors_total", replica="r1", kind="timeout") == 1
    assert value(reg, "concurproxy_upstream_retries_total", replica="r1", kind="connect") == 1
    assert value(reg, "concurproxy_replica_healthy", replica="r1") == 0
    assert value(reg, "concurproxy_ticket_errors_total", kind="double_release") == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=80), max_size=200))
def test_role_cardinality_is_bounded_whatever_clients_send(roles: list[str]) -> None:
    reg, m = make()
    m.prime(roles=["planner"])
    for role in roles:
        m.observe_step(route=CHAT, tenant="t", role=role, status=200, duration_s=0.1)
    seen = {
        s.labels["role"]
        for f in reg.collect()
        if f.name == "concurproxy_requests"
        for s in f.samples
        if "role" in s.labels
    }
    assert len(seen) <= 1 + 32 + 1  # declared + first new ones + "other"
    assert all(re.fullmatch(r"[A-Za-z0-9_.:/\-]{1,64}", r) for r in seen)


def test_bounded_label_folds_overflow_and_unsafe_values() -> None:
    b = BoundedLabel(known=["a"], max_new=2)
    assert [b.bound(v) for v in ["a", "b", "c", "d", "b", "bad value\n", None]] == [
        "a",
        "b",
        "c",
        OTHER,
        "b",
        OTHER,
        "unknown",
    ]


def test_exposition_parses_in_text_and_openmetrics() -> None:
    reg, m = make()
    m.prime(replicas=["r0"], tenants=["t"], roles=["planner"], routes=[CHAT])
    m.observe_step(route=CHAT, tenant="t", role="planner", status=200, duration_s=0.2, replica="r0")
    body, ctype = render(reg, None)
    assert ctype.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {s.name.removesuffix("_total") for s in SPECS} <= names
    body, ctype = render(reg, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


async def test_metrics_handler_serves_registry() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from concurproxy.telemetry.exposition import metrics_handler

    reg, m = make()
    m.ticket_ended("success")
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(reg))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert 'concurproxy_tickets_ended_total{outcome="success"} 1.0' in await resp.text()


def test_text_only_exposition_keeps_engine_style_colon_names() -> None:
    from prometheus_client import Gauge

    reg = CollectorRegistry()
    Gauge("vllm:kv_cache_usage_perc", "kv", registry=reg).set(0.5)
    prometheus_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    body, ctype = render(reg, prometheus_accept, text_only=True)
    assert ctype.startswith("text/plain") and b"\nvllm:kv_cache_usage_perc 0.5" in body


def test_docs_metrics_table_is_generated_from_the_catalog() -> None:
    from pathlib import Path

    from concurproxy.telemetry.docgen import splice

    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    assert splice(doc) == doc, "run: python -m concurproxy.telemetry.docgen --write"
