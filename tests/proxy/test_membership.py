"""Replicas leaving and joining a running proxy (policy reload; DNS discovery takes the same path), as an
operator sees it through the live app: a replica that leaves takes every series with its ``replica`` label
out of /metrics and nothing of it stays in the admission windows, the dispatch stage or the poller; one that
joins has its series (dispatch included) at once. Steps caught on a leaving replica are never stranded:
one waiting for admission gets a 503 to retry elsewhere, one held at the dispatch stage is let go.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from concurproxy.config import load_policy
from concurproxy.config.models import Policy
from concurproxy.server.reload import apply_policy
from concurproxy.testing.poll import wait_until
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

CHAT = "/v1/chat/completions"
STATIC = {"controller": "static", "static": {"window": 8}}
DISPATCH = {"long_prefill_tokens": 1000, "max_prefill_hold_s": 60, "kv_reserve": 0.5, "kv_reserve_max_hold_s": 60}
ROLES = {"monitor": {"priority": "high"}}
# What a replica has from the moment it joins, before any step or pressure read (0, NaN or 1, not "no data").
JOINED = {
    "concurproxy_replica_healthy",
    "concurproxy_pressure_kv_usage_ratio",
    "concurproxy_pressure_snapshot_age_seconds",
    "concurproxy_dispatch_held_total",
    "concurproxy_dispatch_forced_total",
    "concurproxy_dispatch_waiting_steps",
    "concurproxy_dispatch_reserve_in_flight_tokens",
    "concurproxy_dispatch_reserve_limit_tokens",
    "concurproxy_routing_decisions_total",
    "concurproxy_admission_decisions_total",
}


def body(words: int) -> dict[str, Any]:
    return {"model": "stub-model", "messages": [{"role": "user", "content": "word " * words}], "max_tokens": 8}


def hdr(agent: str, role: str = "executor") -> dict[str, str]:
    return {"X-Agent-Id": agent, "X-Agent-Role": role, "X-Task-Id": "t1"}


async def series_of(h: Any, replica: str) -> dict[str, dict[str, float]]:
    """Every /metrics sample carrying ``replica="..."``: sample name -> {other labels: value}."""
    text = await (await h.session.get(h.url + "/metrics")).text()
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("replica") == replica:
                rest = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "replica")
                out.setdefault(s.name, {})[rest] = s.value
    return out


def policy_with(urls: dict[str, str], **overrides: Any) -> Policy:
    return load_policy(overrides={"upstreams": [{"url": u, "name": n} for n, u in urls.items()], **overrides}, env={})


async def test_a_replica_that_leaves_leaves_metrics_and_one_that_joins_has_every_series(proxy_factory) -> None:
    over = {"admission": STATIC, "fairness": DISPATCH, "roles": ROLES}
    async with proxy_factory(n_stubs=2, **over) as h:
        c = h.components
        urls = {r.id: r.base_url for r in c.pool}
        for agent in ("a0", "a1", "a2", "a3"):  # traffic: per-step series, windows, routing counters
            assert (await h.post(CHAT, body(5), headers=hdr(agent))).status == 200
        c.metrics.upstream_error("r1", "error")  # a counter only failures create
        before = await series_of(h, "r1")
        assert JOINED <= set(before) and "concurproxy_admission_window" in before

        assert apply_policy(c, policy_with({"r0": urls["r0"]}, **over)) == ["replica r1 removed"]
        assert await series_of(h, "r1") == {}  # gauges, counters and histograms alike
        assert "r1" not in c.admission.core.replicas and "r1" not in c.dispatch.state()
        assert c.poller is not None and "r1" not in c.poller.replica_ids
        assert await series_of(h, "r0")  # the one that stays keeps its series
        for agent in ("a0", "a1", "a2", "a3"):  # pinned to r1 or not, every agent is served by r0
            r = await h.post(CHAT, body(5), headers=hdr(agent))
            assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r0"
        assert await series_of(h, "r1") == {}

        assert apply_policy(c, policy_with(urls, **over)) == ["replica r1 added"]
        joined = await series_of(h, "r1")
        assert JOINED <= set(joined)
        for stage in ("stage=kv_reserve", "stage=prefill_gate"):
            assert joined["concurproxy_dispatch_held_total"][stage] == 0
            assert joined["concurproxy_dispatch_waiting_steps"][stage] == 0
        assert joined["concurproxy_upstream_errors_total"] == {"kind=error": 0}  # from zero, not the old count
        assert joined["concurproxy_replica_healthy"] == {"": 1}


async def test_a_step_waiting_for_admission_on_a_leaving_replica_is_answered_at_once(proxy_factory) -> None:
    release = asyncio.Event()
    one = {"controller": "static", "static": {"window": 1}, "max_queue_wait_s": 600}
    async with proxy_factory(behaviours=[StubBehaviour(release=release)], admission=one) as h:
        c = h.components
        holder = asyncio.create_task(h.post(CHAT, body(5), headers=hdr("holder")))
        await wait_until(lambda: _true(len(h.stubs[0].seen) == 1), "the first agent's step to reach the engine")
        waiter = asyncio.create_task(h.post(CHAT, body(5), headers=hdr("waiter")))
        await wait_until(lambda: _true(c.admission.waiting() == 1), "the second agent to queue")

        async with running_stub(StubBehaviour()) as other:
            apply_policy(c, policy_with({"r9": other}, admission=one))  # r0 leaves, r9 joins
            r = await waiter
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "replica_left"
            assert not holder.done()  # the step already on r0 keeps running there
            release.set()
            assert (await holder).status == 200  # and ends in the window kept out of sight until then
            core = c.admission.core
            assert "r0" not in core.replicas and "r0" not in core._leaving  # drained: nothing kept for r0
            assert await series_of(h, "r0") == {}  # its last step's samples were not exported


async def test_a_step_held_at_the_dispatch_stage_of_a_leaving_replica_is_let_go(proxy_factory) -> None:
    release = asyncio.Event()
    stub = StubBehaviour(release=release)
    fairness = {"long_prefill_tokens": 1000, "max_prefill_hold_s": 600}
    async with proxy_factory(behaviours=[stub], fairness=fairness, roles=ROLES, admission=STATIC) as h:
        c = h.components
        control = asyncio.create_task(h.post(CHAT, body(3), headers=hdr("c", "monitor")))
        await wait_until(lambda: _true(len(stub.seen) == 1), "the control step to reach the engine")
        long = asyncio.create_task(h.post(CHAT, body(1500), headers=hdr("l")))
        await wait_until(lambda: _true(c.dispatch.state().get("r0", {}).get("waiting") == 1), "the gate to hold")

        async with running_stub(StubBehaviour()) as other:
            apply_policy(c, policy_with({"r9": other}, fairness=fairness, roles=ROLES, admission=STATIC))
            await wait_until(lambda: _true(len(stub.seen) == 2), "the held step to be sent when r0 left")
            assert "r0" not in c.dispatch.state()
            release.set()
            assert [r.status for r in await asyncio.gather(control, long)] == [200, 200]
            assert "r0" not in c.dispatch.state()  # steps that ended there brought no core back
            assert await series_of(h, "r0") == {}


async def _true(value: bool) -> bool:
    return value
