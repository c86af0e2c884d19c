"""The policy stages in the live request path: budgets, tenants, admission, routing, admin, metrics."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from concurproxy.testing.poll import wait_until
from concurproxy.testing.stub_upstream import StubBehaviour

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "plan the work"}], "max_tokens": 8}


def hdr(agent: str, role: str = "executor", task: str = "t1", **extra: str) -> dict[str, str]:
    return {"X-Agent-Id": agent, "X-Agent-Role": role, "X-Task-Id": task, **extra}


async def admin_state(h) -> dict:
    return await (await h.session.get(h.url + "/admin/state")).json()


async def test_max_tokens_is_clamped_and_said_so(proxy_factory):
    async with proxy_factory(roles={"monitor": {"max_output_tokens": 4}}) as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "max_tokens": 100}, headers=hdr("m1", "monitor"))
        assert r.status == 200
        assert r.headers["x-concurproxy-max-tokens-clamped"] == "4"
        assert h.stubs[0].seen[-1]["max_tokens"] == 4


async def test_step_limit_per_task_gives_429_with_remaining_steps(proxy_factory):
    async with proxy_factory(roles={"planner": {"max_steps_per_task": 2}}) as h:
        for left in ("1", "0"):
            r = await h.post("/v1/chat/completions", CHAT, headers=hdr("p1", "planner"))
            assert r.status == 200 and r.headers["x-concurproxy-budget-remaining-steps"] == left
        r = await h.post("/v1/chat/completions", CHAT, headers=hdr("p1", "planner"))
        assert r.status == 429
        assert r.headers["x-concurproxy-budget-remaining-steps"] == "0"
        assert (await r.json())["error"]["code"] == "max_steps_per_task"
        assert len(h.stubs[0].seen) == 2  # the refused step never reached the engine
        # another task has its own counter
        assert (await h.post("/v1/chat/completions", CHAT, headers=hdr("p1", "planner", task="t2"))).status == 200


async def test_prompt_over_limit_is_413(proxy_factory):
    async with proxy_factory(roles={"critic": {"max_prompt_tokens": 5}}) as h:
        body = {**CHAT, "messages": [{"role": "user", "content": "word " * 50}]}
        r = await h.post("/v1/chat/completions", body, headers=hdr("c1", "critic"))
        assert r.status == 413 and (await r.json())["error"]["code"] == "prompt_too_large"


async def test_token_budget_exhaustion_has_retry_after_and_settles_from_usage(proxy_factory):
    async with proxy_factory(roles={"executor": {"tokens_per_min": 60}}) as h:
        statuses = []
        for _ in range(6):
            r = await h.post("/v1/chat/completions", {**CHAT, "max_tokens": 10}, headers=hdr("e1"))
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert "x-concurproxy-budget-remaining-tokens" in r.headers
                break
        assert statuses[0] == 200 and statuses[-1] == 429


async def test_tenant_keys_and_anonymous_off(proxy_factory):
    digest = hashlib.sha256(b"sk-research").hexdigest()
    async with proxy_factory(
        tenants=[{"name": "research", "key_sha256": [digest]}], auth={"allow_anonymous": False}
    ) as h:
        ok = await h.post("/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-research"})
        assert ok.status == 200
        assert h.listener.steps[-1].step.tenant == "research"
        bad = await h.post("/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-other"})
        assert bad.status == 401 and (await bad.json())["error"]["code"] == "invalid_api_key"
        none = await h.post("/v1/chat/completions", CHAT)
        assert none.status == 401 and (await none.json())["error"]["code"] == "missing_api_key"


async def test_agent_waits_for_a_slot_and_gets_it_when_another_agent_finishes(proxy_factory):
    async with proxy_factory(admission={"controller": "static", "static": {"window": 1}}) as h:
        assert (await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))).status == 200
        waiting = asyncio.create_task(h.post("/v1/chat/completions", CHAT, headers=hdr("B")))

        async def b_queued() -> bool:
            st = await admin_state(h)
            return st["admission"]["waiting_steps"] == 1

        await wait_until(b_queued, "agent B to queue")
        # A's next step passes at once: it holds the slot across steps
        assert (await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))).status == 200
        r = await h.session.delete(h.url + "/v1/agents/A")
        assert (await r.json())["released"] is True
        r = await waiting
        assert r.status == 200
        assert float(r.headers["x-concurproxy-queue-wait-ms"]) > 0
        st = await admin_state(h)
        rep = st["admission"]["replicas"]["r0"]
        assert rep["running_steps"] == 0 and rep["waiting"] == 0  # no leaked slot


async def test_queue_wait_is_bounded_then_503_with_retry_after(proxy_factory):
    async with proxy_factory(admission={"controller": "static", "static": {"window": 1}, "max_queue_wait_s": 0.2}) as h:
        assert (await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))).status == 200
        r = await h.post("/v1/chat/completions", CHAT, headers=hdr("B"))
        assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
        assert h.stubs[0].seen and len(h.stubs[0].seen) == 1


async def test_last_step_header_frees_the_slot(proxy_factory):
    async with proxy_factory(admission={"controller": "static", "static": {"window": 1}}) as h:
        r = await h.post("/v1/chat/completions", CHAT, headers=hdr("A", **{"X-Agent-Done": "1"}))
        assert r.status == 200
        assert (await h.post("/v1/chat/completions", CHAT, headers=hdr("B"))).status == 200


async def test_stale_pressure_admits_nothing_new(proxy_factory):
    stub = StubBehaviour(metrics_status=500)  # without a fallback controller: no signal = saturated
    async with proxy_factory(behaviours=[stub], admission={"max_queue_wait_s": 0.2, "fallback_controller": None}) as h:
        r = await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))
        assert r.status == 503
        st = await admin_state(h)
        assert st["admission"]["replicas"]["r0"]["saturated"] is True
        assert stub.seen == []


async def test_aimd_admits_with_fresh_pressure(proxy_factory):
    async with proxy_factory() as h:  # default policy: aimd
        r = await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))
        assert r.status == 200
        st = await admin_state(h)
        assert st["admission"]["controller"] == "aimd"
        assert st["replicas"][0]["pressure"]["kv_usage"] == pytest.approx(0.1)


async def test_sessions_stay_on_their_replica(proxy_factory):
    async with proxy_factory(n_stubs=3) as h:
        placed = {}
        for step in range(3):
            for agent in ("a1", "a2", "a3", "a4"):
                body = {**CHAT, "messages": [{"role": "user", "content": f"agent {agent} " + "ctx " * (20 * step)}]}
                r = await h.post("/v1/chat/completions", body, headers=hdr(agent))
                placed.setdefault(agent, set()).add(r.headers["x-concurproxy-replica"])
        assert all(len(v) == 1 for v in placed.values()), placed
        assert len({next(iter(v)) for v in placed.values()}) >= 2  # pins spread over replicas


async def test_drained_replica_gets_no_new_steps(proxy_factory):
    async with proxy_factory(n_stubs=2) as h:
        r = await h.session.post(h.url + "/admin/replicas/r0/drain")
        assert (await r.json())["draining"] is True
        for i in range(4):
            r = await h.post("/v1/chat/completions", CHAT, headers=hdr(f"x{i}"))
            assert r.headers["x-concurproxy-replica"] == "r1"
        assert (await h.session.post(h.url + "/admin/replicas/nope/drain")).status == 404


async def test_admin_key_protects_admin_endpoints(proxy_factory):
    digest = hashlib.sha256(b"admin-secret").hexdigest()
    async with proxy_factory(auth={"admin_key_sha256": [digest]}) as h:
        assert (await h.session.get(h.url + "/admin/state")).status == 401
        r = await h.session.get(h.url + "/admin/state", headers={"Authorization": "Bearer admin-secret"})
        assert r.status == 200


async def test_metrics_can_require_the_admin_key(proxy_factory):
    digest = hashlib.sha256(b"admin-secret").hexdigest()
    async with proxy_factory(auth={"admin_key_sha256": [digest], "metrics_require_admin_key": True}) as h:
        r = await h.session.get(h.url + "/metrics")
        assert r.status == 401 and (await r.json())["error"]["code"] == "admin_key_required"
        r = await h.session.get(h.url + "/metrics", headers={"Authorization": "Bearer admin-secret"})
        assert r.status == 200 and "concurproxy_" in await r.text()
    async with proxy_factory(auth={"admin_key_sha256": [digest]}) as h:  # default: scrapers need no key
        assert (await h.session.get(h.url + "/metrics")).status == 200


async def test_metrics_exposition(proxy_factory):
    async with proxy_factory() as h:
        await h.post("/v1/chat/completions", CHAT, headers=hdr("A"))
        text = await (await h.session.get(h.url + "/metrics")).text()
        assert "concurproxy_requests_total{" in text
        assert "concurproxy_admission_window" in text
        assert "concurproxy_pressure_kv_usage" in text or "concurproxy_pressure" in text


async def test_prompt_estimates_are_calibrated_to_the_engines_token_counts(proxy_factory):
    """An engine whose tokenizer counts 3x more: after a few steps the proxy's estimate follows it."""
    from concurproxy.server.stages.calibration import TokenCalibration

    cal = TokenCalibration(alpha=0.5)
    async with proxy_factory() as h:
        h.components.calibration = cal
        h.components.listeners.insert(0, cal)
        body = {**CHAT, "messages": [{"role": "user", "content": "word " * 60}]}
        h.stubs[0].prompt_token_factor = 3.0
        for _ in range(8):
            assert (await h.post("/v1/chat/completions", body, headers=hdr("cal"))).status == 200
        last = h.listener.steps[-1]
        assert last.step.est_prompt_tokens == pytest.approx(3 * last.local_prompt_tokens, rel=0.05)
