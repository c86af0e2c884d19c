"""Dispatch stage → metrics: holds, forced sends, waits and the reserve's KV, as a scrape reads them."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry

from concurproxy.control.dispatch import DispatchCores, DispatchParams
from concurproxy.control.types import PressureSnapshot, PriorityClass, StepInfo
from concurproxy.identity import Identity
from concurproxy.server.hooks import StepContext
from concurproxy.server.stages.dispatch import DispatchStage
from concurproxy.telemetry.dispatch import prime_replica, watch_dispatch
from concurproxy.telemetry.metrics import ProxyMetrics


def ctx(prompt: int, priority: PriorityClass, max_tokens: int = 0) -> StepContext:
    step = StepInfo("t", "r", "a", "k", priority=priority, est_prompt_tokens=prompt, max_tokens=max_tokens)
    return StepContext("id", "chat", Identity("t", "a", "k", "r", None, False, False), step, {}, "m", True, 0.0)


class Scrape:
    def __init__(self, stage: DispatchStage, replicas: tuple[str, ...] = ("r0",)) -> None:
        self.registry = CollectorRegistry()
        self.metrics = ProxyMetrics(self.registry)
        stage.on_wait = self.metrics.dispatch_waited
        watch_dispatch(self.metrics, stage, replicas)

    def __call__(self, name: str, replica: str = "r0", stage: str | None = None) -> float | None:
        labels = {"replica": replica} if stage is None else {"replica": replica, "stage": stage}
        return self.registry.get_sample_value(name, labels)  # a collection: the refreshers run first


async def spin() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_configured_replicas_read_zero_before_any_step_and_the_reserve_only_when_on() -> None:
    gate_only = Scrape(DispatchStage(DispatchCores(DispatchParams())), ("r0", "r1"))
    for r in ("r0", "r1"):
        assert gate_only("concurproxy_dispatch_held_total", r, "prefill_gate") == 0
        assert gate_only("concurproxy_dispatch_wait_seconds_count", r, "prefill_gate") == 0
        assert gate_only("concurproxy_dispatch_held_total", r, "kv_reserve") is None
        # the reserve is off (the default policy): its gauges exist all the same (issue 21 item 13)
        assert gate_only("concurproxy_dispatch_reserve_in_flight_tokens", r) == 0
        off_limit = gate_only("concurproxy_dispatch_reserve_limit_tokens", r)
        assert off_limit is not None and math.isnan(off_limit)
    both = Scrape(DispatchStage(DispatchCores(DispatchParams(kv_reserve=0.2))))
    assert both("concurproxy_dispatch_forced_total", "r0", "kv_reserve") == 0
    assert both("concurproxy_dispatch_reserve_in_flight_tokens") == 0
    limit = both("concurproxy_dispatch_reserve_limit_tokens")
    assert limit is not None and math.isnan(limit)  # capacity not read yet


async def test_holds_waits_and_reserve_tokens_reach_the_scrape() -> None:
    snaps = {"r0": PressureSnapshot(ts=0.0, kv_capacity_tokens=10_000)}
    params = DispatchParams(long_prefill_tokens=5000, max_hold_s=60.0, kv_reserve=0.2, reserve_max_hold_s=60.0)
    stage = DispatchStage(DispatchCores(params), snapshots=snaps.get)
    scrape = Scrape(stage)
    order: list[str] = []

    async def send(step: StepContext, name: str) -> None:
        async with stage.hold(step, "r0"):
            order.append(name)

    long, small = ctx(6000, PriorityClass.normal, 500), ctx(2000, PriorityClass.normal)
    async with stage.hold(ctx(300, PriorityClass.high), "r0"):
        held_long = asyncio.create_task(send(long, "long"))  # passes the reserve (alone), held by the gate
        await spin()
        held_small = asyncio.create_task(send(small, "small"))  # 6,500 + 2,000 > 8,000: held by the reserve
        await spin()
        assert order == []
        for stage_name in ("prefill_gate", "kv_reserve"):
            assert scrape("concurproxy_dispatch_held_total", stage=stage_name) == 1
            assert scrape("concurproxy_dispatch_waiting_steps", stage=stage_name) == 1
            assert scrape("concurproxy_dispatch_wait_seconds_count", stage=stage_name) == 0  # not sent yet
        assert scrape("concurproxy_dispatch_reserve_in_flight_tokens") == 6500
        assert scrape("concurproxy_dispatch_reserve_limit_tokens") == 8000
    await asyncio.gather(held_long, held_small)
    assert order == ["long", "small"] and long.dispatch_wait_s > 0 and small.dispatch_wait_s > 0
    for stage_name in ("prefill_gate", "kv_reserve"):
        assert scrape("concurproxy_dispatch_wait_seconds_count", stage=stage_name) == 1
        assert scrape("concurproxy_dispatch_waiting_steps", stage=stage_name) == 0
        assert scrape("concurproxy_dispatch_held_total", stage=stage_name) == 1  # repeated scrapes do not recount
        assert scrape("concurproxy_dispatch_forced_total", stage=stage_name) == 0
    assert scrape("concurproxy_dispatch_reserve_in_flight_tokens") == 0


async def test_a_step_sent_at_its_bound_counts_as_forced() -> None:
    now = [0.0]
    stage = DispatchStage(DispatchCores(DispatchParams(long_prefill_tokens=2048, max_hold_s=0.0)), clock=lambda: now[0])
    scrape = Scrape(stage)
    async with stage.hold(ctx(300, PriorityClass.critical), "r0"):
        async with stage.hold(ctx(9000, PriorityClass.normal), "r0"):  # max_hold 0: sent at once, forced
            pass
    assert scrape("concurproxy_dispatch_held_total", stage="prefill_gate") == 1
    assert scrape("concurproxy_dispatch_forced_total", stage="prefill_gate") == 1
    assert scrape("concurproxy_dispatch_wait_seconds_count", stage="prefill_gate") == 1
    assert scrape("concurproxy_dispatch_wait_seconds_sum", stage="prefill_gate") == 0.0  # the clock did not move


def test_counters_follow_the_core_totals_and_survive_a_reset() -> None:
    m = ProxyMetrics(CollectorRegistry())
    m.set_dispatch_state("r0", "kv_reserve", waiting=2, held=5, forced=1)
    m.set_dispatch_state("r0", "kv_reserve", waiting=0, held=7, forced=1)
    m.set_dispatch_state("r0", "kv_reserve", waiting=0, held=2, forced=0)  # a rebuilt core counts from zero
    value = m.registry.get_sample_value
    assert value("concurproxy_dispatch_held_total", {"replica": "r0", "stage": "kv_reserve"}) == 9
    assert value("concurproxy_dispatch_forced_total", {"replica": "r0", "stage": "kv_reserve"}) == 1
    assert value("concurproxy_dispatch_waiting_steps", {"replica": "r0", "stage": "kv_reserve"}) == 0


def test_without_a_dispatch_stage_its_series_read_zero() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    prime_replica(metrics, None, "r0")
    assert registry.get_sample_value("concurproxy_dispatch_held_total", {"replica": "r0", "stage": "prefill_gate"}) == 0
    assert registry.get_sample_value("concurproxy_dispatch_reserve_in_flight_tokens", {"replica": "r0"}) == 0
