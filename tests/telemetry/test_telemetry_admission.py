"""Admission events and live window state reach the Prometheus registry."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, StaticConfig
from concurproxy.control.admission import AdmissionEvent, EventKind
from concurproxy.control.types import PressureSnapshot, StepInfo
from concurproxy.server.admission import AdmissionRejected, WindowGate
from concurproxy.telemetry.admission import AdmissionMetricsListener, watch_admission
from concurproxy.telemetry.metrics import ProxyMetrics


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def step(agent: str) -> StepInfo:
    return StepInfo(tenant="t", role="coder", agent_id=agent, task_id="task", est_prompt_tokens=100)


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_event_mapping_table() -> None:
    reg = CollectorRegistry()
    listener = AdmissionMetricsListener(ProxyMetrics(reg))
    for kind, reason, v in [
        (EventKind.admitted, "new", 0.0),
        (EventKind.queued, "window-full", 3),
        (EventKind.window, "thrash-preemption", 5),  # first change seen: inferred down
        (EventKind.window, "increase", 6),
        (EventKind.window, "thrash-hit-rate", 4),
        (EventKind.ended, "success", 1.0),
        (EventKind.double_end, "success", None),
    ]:
        listener.on_admission_event(AdmissionEvent(kind, "r0", 1.0, reason, value=v))
    assert value(reg, "concurproxy_admission_decisions_total", replica="r0", decision="admitted", reason="new") == 1
    assert value(reg, "concurproxy_admission_decisions_total", replica="r0", decision="queued",
                 reason="window-full") == 1  # fmt: skip
    changes = "concurproxy_admission_window_changes_total"
    assert value(reg, changes, replica="r0", direction="down", reason="thrash-preemption") == 1
    assert value(reg, changes, replica="r0", direction="up", reason="increase") == 1
    assert value(reg, changes, replica="r0", direction="down", reason="thrash-hit-rate") == 1
    assert value(reg, "concurproxy_admission_window", replica="r0") == 4
    assert value(reg, "concurproxy_tickets_ended_total", outcome="success") == 1
    assert value(reg, "concurproxy_ticket_errors_total", kind="double_release") == 1


async def test_real_admission_service_feeds_counters_and_scrape_time_gauges() -> None:
    reg, clock = CollectorRegistry(), Clock()
    metrics = ProxyMetrics(reg, clock=clock)
    cfg = AdmissionConfig(controller="static", static=StaticConfig(window=1), max_queue_length=1,
                          max_queue_wait_s=60, starvation_timeout_s=1000)  # fmt: skip
    svc = WindowGate.for_config(cfg, clock=clock, listeners=[AdmissionMetricsListener(metrics)])
    watch_admission(metrics, svc)
    async with await svc.admit(step("a"), "r0"):
        waiter = asyncio.ensure_future(svc.admit(step("b"), "r0"))
        for _ in range(3):
            await asyncio.sleep(0)
        with pytest.raises(AdmissionRejected):
            await svc.admit(step("c"), "r0")
        assert value(reg, "concurproxy_admission_window", replica="r0") == 1  # read at scrape time
        assert value(reg, "concurproxy_admission_active_agents", replica="r0") == 1
        assert value(reg, "concurproxy_admission_queued_agents", replica="r0") == 1
    svc.release_agent("a")
    (await waiter).end()
    decisions = {s.labels["decision"] for f in reg.collect() if f.name == "concurproxy_admission_decisions"
                 for s in f.samples if s.value and s.name.endswith("_total")}  # fmt: skip
    assert {"admitted", "queued", "rejected"} <= decisions
    assert value(reg, "concurproxy_tickets_ended_total", outcome="success") == 2


def test_aimd_thrash_becomes_a_down_change() -> None:
    reg, clock = CollectorRegistry(), Clock()
    metrics = ProxyMetrics(reg, clock=clock)
    cfg = AdmissionConfig(controller="aimd", aimd=AIMDConfig(initial=8, cooldown_intervals=0))
    svc = WindowGate.for_config(cfg, clock=clock, listeners=[AdmissionMetricsListener(metrics)])
    watch_admission(metrics, svc)
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.5, waiting=0, preemptions_per_s=0.0,
                                           prefix_hit_rate=0.9))  # fmt: skip
    clock.t += 1
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.97, waiting=10, preemptions_per_s=50.0,
                                           prefix_hit_rate=0.1))  # fmt: skip
    downs = sum(s.value for f in reg.collect() if f.name == "concurproxy_admission_window_changes"
                for s in f.samples if s.name.endswith("_total") and s.labels["direction"] == "down"
                )  # fmt: skip
    assert downs == 1
    assert (value(reg, "concurproxy_admission_window", replica="r0") or 99) < 8


async def test_handler_refreshes_on_the_loop_and_encodes_in_a_thread() -> None:
    import threading

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from concurproxy.telemetry.exposition import metrics_handler

    metrics = ProxyMetrics(CollectorRegistry())
    seen: list[int] = []

    def refresher() -> None:
        seen.append(threading.get_ident())
        metrics.set_admission_state("r0", window=3, active=2, queued=1)

    metrics.add_refresher(refresher)
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.registry, before=metrics.refresh))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        text = await (await client.get("/metrics")).text()
    assert 'concurproxy_admission_queued_agents{replica="r0"} 1.0' in text
    assert seen == [threading.get_ident()]  # once, on the loop thread; the encoding thread skipped it
