"""A short real run: loadgen → concurproxy → the bundled simulated worker (all in-process)."""

from __future__ import annotations

import hashlib
from collections import Counter

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.worker.fleet import run_workers
from loadgen.runner import run_scenario
from loadgen.scenario import parse_scenario

SCENARIO = {
    "name": "through-proxy",
    "model": "concurworker-tiny",
    "max_tasks": 3,
    "arrivals": {"mode": "closed", "concurrency": 3},
    "task": {"system_prompt_tokens": 40, "task_prompt_tokens": 20, "branches": 2, "branch_steps": 2,
             "critic_reject_p": 0.0, "deadline_s": 120,
             "roles": {"executor": {"growth_tokens": 30, "output_tokens": 8},
                       "planner": {"output_tokens": 8}, "critic": {"output_tokens": 4},
                       "summary": {"output_tokens": 8}}},
    "tenants": [{"name": "alpha", "api_key": "sk-alpha"}, {"name": "beta", "api_key": "sk-beta"}],
}  # fmt: skip


async def test_run_through_proxy_to_bundled_worker() -> None:
    sc = parse_scenario(SCENARIO)
    async with run_workers("tiny", 1, time_scale=20.0) as urls:
        tenants = [{"name": t.name, "key_sha256": [hashlib.sha256(t.api_key.encode()).hexdigest()]} for t in sc.tenants]
        policy = load_policy(overrides={"upstreams": [{"url": urls[0], "name": "r0"}], "tenants": tenants}, env={})
        async with running_proxy(policy) as proxy:
            res = await run_scenario(sc, proxy, scrape=[urls[0] + "/metrics"], scrape_interval_s=0.05)
    summ = res.summary()
    assert summ["steps"]["errors"] == 0, [s.error for s in res.steps if not s.ok][:3]
    assert summ["tasks"]["completed"] == 3
    assert all(s.completion_tokens == s.max_tokens for s in res.steps)  # ignore_eos honoured
    assert all(s.ttft_s is not None and s.ttft_s <= s.total_s for s in res.steps)
    assert Counter(s.replica for s in res.steps) == {"r0": len(res.steps)}
    assert all(s.queue_wait_ms is not None for s in res.steps)
    assert any(s.name == "vllm:kv_cache_usage_perc" for s in res.series)
