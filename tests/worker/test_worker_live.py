"""Live closed-loop agents over HTTP against an in-process worker."""

from __future__ import annotations

from dataclasses import replace

import aiohttp

from concurproxy.worker.fleet import run_fleet
from concurproxy.worker.live import format_live_table, render, run_live
from concurproxy.worker.thrash import PRESETS


def test_render_is_one_token_per_id() -> None:
    from concurproxy.tokens import count_tokens

    ids = [0, 7, 123456789, 2**31 - 1]
    assert count_tokens(render(ids)) == len(ids)


async def test_live_agents_thrash_the_tiny_worker_over_http() -> None:
    spec = replace(PRESETS["tiny"][0], tool_pause_s=0.001)
    async with run_fleet("tiny", 1, time_scale=20.0) as [w], aiohttp.ClientSession() as http:
        one = await run_live(http, w.url, spec, agents=1, duration_s=0.8)
        many = await run_live(http, w.url, spec, agents=8, duration_s=0.8, first_task=1000)
    assert one.errors == 0 and many.errors == 0
    assert one.agent_steps > 0 and many.agent_steps > 0
    assert one.preemptions is not None and many.evicted_prefix_tokens is not None
    assert one.prefix_hit_rate is not None and many.prefix_hit_rate is not None
    assert one.prefix_hit_rate > 0.5  # a lone agent finds its history every step
    assert many.prefix_hit_rate < one.prefix_hit_rate
    assert many.evicted_prefix_tokens > 0
    assert "hit rate" in format_live_table([one, many])


async def test_live_against_a_server_without_vllm_metrics_reports_unknowns() -> None:
    spec = replace(PRESETS["tiny"][0], tool_pause_s=0.001, steps=2)
    async with run_fleet("tiny", 1, time_scale=50.0) as [w], aiohttp.ClientSession() as http:
        p = await run_live(http, w.url, spec, agents=1, duration_s=0.3, metrics_url=w.url + "/nope")
    assert p.agent_steps > 0 and p.preemptions is None and p.prefix_hit_rate is None
    assert "-" in format_live_table([p])
