"""The dispatch stage as an operator sees it, through the live app: /admin/state's `dispatch` and /metrics.

A control step is kept in flight by the stub (it answers once `release` is set), so a long step is held by
the prefill gate and a step that would eat the KV headroom by the reserve, deterministically.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from concurproxy.testing.poll import wait_until
from concurproxy.testing.stub_upstream import StubBehaviour

CHAT = "/v1/chat/completions"
STATIC = {"controller": "static", "static": {"window": 8}}
ROLES = {"monitor": {"priority": "high"}}


def body(words: int) -> dict[str, Any]:
    return {"model": "stub-model", "messages": [{"role": "user", "content": "word " * words}], "max_tokens": 8}


def hdr(agent: str, role: str = "executor") -> dict[str, str]:
    return {"X-Agent-Id": agent, "X-Agent-Role": role, "X-Task-Id": "t1"}


async def dispatch_state(h) -> Any:
    return (await (await h.session.get(h.url + "/admin/state")).json())["dispatch"]


async def scrape(h) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await h.session.get(h.url + "/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("concurproxy_dispatch_")
    }


def at(samples: dict, name: str, stage: str | None = None) -> float | None:
    labels = {"replica": "r0"} if stage is None else {"replica": "r0", "stage": stage}
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_gate_and_reserve_holds_show_in_admin_state_and_metrics(proxy_factory) -> None:
    release = asyncio.Event()
    stub = StubBehaviour(kv_capacity_tokens=4000, release=release)  # reserve 0.5: others hold <= 2,000 tokens
    fairness = {"long_prefill_tokens": 1000, "max_prefill_hold_s": 60, "kv_reserve": 0.5, "kv_reserve_max_hold_s": 60}
    async with proxy_factory(behaviours=[stub], fairness=fairness, roles=ROLES, admission=STATIC) as h:
        assert await dispatch_state(h) == {}  # on, nothing dispatched yet
        before = await scrape(h)
        assert at(before, "concurproxy_dispatch_held_total", "prefill_gate") == 0  # primed: 0, not "no data"
        assert at(before, "concurproxy_dispatch_held_total", "kv_reserve") == 0

        control = asyncio.create_task(h.post(CHAT, body(3), headers=hdr("c", "monitor")))

        async def at_stub() -> bool:
            return len(stub.seen) == 1

        await wait_until(at_stub, "the control step to reach the engine")
        long = asyncio.create_task(h.post(CHAT, body(1500), headers=hdr("l")))  # passes the reserve alone

        async def gate_holds() -> bool:
            st = await dispatch_state(h)
            return bool(st) and st["r0"]["waiting"] == 1

        await wait_until(gate_holds, "the long step to be held by the prefill gate")
        small = asyncio.create_task(h.post(CHAT, body(800), headers=hdr("s")))  # ~1,510 + ~810 > 2,000

        async def reserve_holds() -> bool:
            return (await dispatch_state(h))["r0"]["reserve_waiting"] == 1

        await wait_until(reserve_holds, "the small step to be held by the KV reserve")
        st = (await dispatch_state(h))["r0"]
        in_flight = st["reserve_in_flight_tokens"]
        assert 1500 < in_flight < 1600 and st["reserve_limit_tokens"] == 2000
        assert st == {
            "waiting": 1, "held": 1, "forced": 0,
            "reserve_waiting": 1, "reserve_held": 1, "reserve_forced": 0,
            "reserve_in_flight_tokens": in_flight, "reserve_limit_tokens": 2000,
        }  # fmt: skip
        held = await scrape(h)
        for stage in ("prefill_gate", "kv_reserve"):
            assert at(held, "concurproxy_dispatch_held_total", stage) == 1
            assert at(held, "concurproxy_dispatch_waiting_steps", stage) == 1
            assert at(held, "concurproxy_dispatch_forced_total", stage) == 0
        assert at(held, "concurproxy_dispatch_reserve_in_flight_tokens") == in_flight
        assert at(held, "concurproxy_dispatch_reserve_limit_tokens") == 2000
        assert len(stub.seen) == 1  # neither held step reached the engine

        release.set()
        responses = await asyncio.gather(control, long, small)
        assert [r.status for r in responses] == [200, 200, 200]
        waited = {s.identity.agent_id: s.dispatch_wait_s for s in h.listener.steps}
        assert waited["c"] == 0 and waited["l"] > 0 and waited["s"] > 0
        done = await scrape(h)
        for stage in ("prefill_gate", "kv_reserve"):
            assert at(done, "concurproxy_dispatch_wait_seconds_count", stage) == 1
            assert at(done, "concurproxy_dispatch_waiting_steps", stage) == 0
            assert at(done, "concurproxy_dispatch_held_total", stage) == 1
        assert at(done, "concurproxy_dispatch_reserve_in_flight_tokens") == 0


async def test_the_hold_bound_shows_as_forced(proxy_factory) -> None:
    release = asyncio.Event()
    stub = StubBehaviour(release=release)
    fairness = {"long_prefill_tokens": 1000, "max_prefill_hold_s": 0}  # a held long step goes at once
    async with proxy_factory(behaviours=[stub], fairness=fairness, roles=ROLES, admission=STATIC) as h:
        control = asyncio.create_task(h.post(CHAT, body(3), headers=hdr("c", "monitor")))

        async def seen(n: int) -> bool:
            return len(stub.seen) == n

        await wait_until(lambda: seen(1), "the control step to reach the engine")
        long = asyncio.create_task(h.post(CHAT, body(1500), headers=hdr("l")))
        await wait_until(lambda: seen(2), "the long step to be sent at its bound")
        assert (await dispatch_state(h))["r0"] == {"waiting": 0, "held": 1, "forced": 1}
        samples = await scrape(h)
        assert at(samples, "concurproxy_dispatch_forced_total", "prefill_gate") == 1
        assert at(samples, "concurproxy_dispatch_wait_seconds_count", "prefill_gate") == 1
        assert at(samples, "concurproxy_dispatch_held_total", "kv_reserve") is None  # the reserve is off
        release.set()
        assert [r.status for r in await asyncio.gather(control, long)] == [200, 200]


async def test_dispatch_is_null_and_its_series_read_zero_when_the_stage_is_off(proxy_factory) -> None:
    """The stage is off: /admin/state says so, and every dispatch series a dashboard queries reads 0
    (the reserve's limit NaN), not "No data" (issue 21 item 13)."""
    fairness = {"protect_priority": None, "long_prefills_per_replica": 0}
    async with proxy_factory(fairness=fairness, admission=STATIC) as h:
        assert (await h.post(CHAT, body(1500), headers=hdr("l"))).status == 200
        assert await dispatch_state(h) is None
        samples = await scrape(h)
        limit = samples.pop(("concurproxy_dispatch_reserve_limit_tokens", (("replica", "r0"),)))
        assert math.isnan(limit)
        values = {v for (name, _), v in samples.items() if not name.endswith("_created")}
        assert samples and values == {0.0}
