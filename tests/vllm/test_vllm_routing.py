"""Prefix-affinity routing over two real vLLM engines keeps each agent's prefix hot.

Four agents, one after another (so round-robin's alternation is deterministic: an agent's
consecutive steps land on different engines), each 3 steps whose prompt grows by ~2 blocks
per step. Round-robin finds an agent's previous step on the other engine (only the shared
system block and the step before last hit); prefix-affinity pins the agent, so each step hits
the whole previous prompt. Asserted on the engines' summed ``vllm:prefix_cache_hits_total``
(counted per full 128-token block), with both prefix caches emptied before each arm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from concurproxy.server.app import running_proxy
from scripts.vllm.engines import Engine
from scripts.vllm.harness import ROUTE, agent_swarm, format_table, run_arm


async def test_prefix_affinity_raises_prefix_hits(engines: list[Engine], make_policy: Callable[..., Any]) -> None:
    urls = [e.url for e in engines]
    arms = []
    for name in ("round-robin", "prefix-affinity"):
        policy = make_policy(urls, admission={"controller": "none"}, routing={"policy": name})
        async with running_proxy(policy) as url:
            arms.append(await run_arm(name, agent_swarm(**ROUTE), url, urls))
    rr, pa = arms
    print("\n" + format_table(arms))
    for arm in arms:
        assert arm.completed == arm.started == ROUTE["agents"], (arm.name, arm.summary["tasks"])
    assert rr.delta.prefix_queries == pa.delta.prefix_queries  # the same prompts in both arms
    assert pa.delta.prefix_hits >= 1.5 * rr.delta.prefix_hits > 0
