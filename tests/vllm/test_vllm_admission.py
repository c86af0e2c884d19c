"""AIMD admission in front of real, overloaded vLLM engines, as real clients call (no X-Agent-Done).

Each test runs one seeded workload twice through the proxy in front of one 12-block engine (1536 KV
tokens), ``admission.controller: none`` then ``aimd`` (the tier's settings, ``AIMD`` in
scripts/vllm/harness.py), each arm from a cold prefix cache. The clients send identity headers
and never ``X-Agent-Done`` (``REAL_CLIENT``): a finished agent just stops sending.

Asserted on counters only — the engine's ``vllm:num_preemptions_total``, generated and prompt
tokens, ``vllm:iteration_tokens_total`` (sum: tokens computed, recompute included; count: engine
iterations), and the load generator's task outcomes — never on wall time. The work is bounded
(a fixed number of steps and tokens per arm), so a slower machine takes longer but asserts the same:
on this shared 2-core box the agent loop's pair takes 70-90 s, the swarm's 20-30 s.

* ``test_aimd_on_overloaded_agent_loop`` (``medium``, ``AGENT_LOOP``: 16 agents x 5 steps whose
  contexts grow to 7 of the 12 blocks): every task of both arms completes in its deadline, both arms
  send the same prompts and generate the same tokens; the bare engine is overloaded (it preempts and
  recomputes: its prefix-cache hits cover under 30% of the prompts); AIMD preempts at most a third
  as often (``MAX_PREEMPTION_SHARE``) and computes at most 65% of the bare engine's tokens. When
  the first pair misses the preemption bound (a few preemptions are timing on a shared box: 0-2
  against 8-10 bare), a second pair runs and the counters of both are pooled. Fails if admission
  lets everyone through (the same preemptions) or loses the agents' prefixes (the same recompute).
  Issue 18's target (a), 80% fewer preemptions, is met on average (measured 81-88% pooled over two
  pairs) but not with a margin a CI gate needs: at 0.2 the first pair alone passed only about half
  the time, and a CI run pooled 3 against 16 (0.19). The benchmark reports it against the target.
* ``test_decode_bound_swarm_on_tiny`` (``tiny``, ``DECODE_SWARM``: 24 agents x 3 steps of 48
  generated tokens over contexts of ~420 to ~900 tokens; the shipped AIMD defaults, what a user
  gets): where recompute is cheap, goodput is set by how full each engine iteration's batch is, so
  the engine's iteration count is the counter that shows what admission costs. Asserted: the same
  work in both arms and not more preemptions than bare beyond timing (``SWARM_PREEMPTION_SLACK``:
  a swarm preempts only a few times in either arm: measured 3 bare and 3-4 through AIMD in single
  runs, so one arm's count is not a margin). Issue 18's target (b), goodput ≥ 0.95x
  ``none``, needs the iterations within 1/0.95 of bare's; measured 2026-12-07 the defaults take
  ~2x (0.84-0.91 iterations per generated token: one or two agents at a time fit the footprint
  budget of a 1536-token cache, and the run is too short for the goodput probe to lift it). While
  that is not met the test ends as an expected failure (``xfail``) with the numbers, and passes
  once it is.

On some CPUs vLLM's CPU build prefills an order of magnitude slower while decoding about as fast
(seen 2026-12-07 on a 2-core AMD EPYC VM with AVX2 but no AVX-512, so no native bfloat16, the
dtype the tier runs: 256 prompt tokens on ``medium`` in 1.2-2.2 s, a 64-token decode 15 ms a
token): the agent loop's bare arm then completed 1 of 16 tasks in its 300 s deadline and the test
ran past its 600 s timeout. It is skipped, with the measured prefill time, where a warm 256-token
prefill on ``medium`` takes over ``SLOW_PREFILL_S``; the swarm on ``tiny`` still runs.

Goodput itself (tasks per minute, pooled over repeated pairs, with the spread) is measured by
``python -m benchmarks.vllm_admission_goodput`` (docs/vllm.md), not here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.vllm.engines import Engine
from scripts.vllm.harness import AGENT_LOOP, DECODE_SWARM, PAIR, Arm, admission_round, format_table

MIN_BARE_PREEMPTIONS = 5  # the bare engine preempts 8-9 times in this loop (12 agents: 5-7)
MAX_PREEMPTION_SHARE = 1 / 3  # aimd's preemptions over the bare engine's (measured 0.12-0.25 a pair)
TARGET_B = 0.95  # issue 18 (b): goodput >= 0.95x none
SWARM_PREEMPTION_SLACK = 3  # preemptions AIMD may have over bare in one swarm pair: timing, not admission
SLOW_PREFILL_S = 0.5  # a warm 256-token prefill on medium slower than this: the agent loop cannot finish in time


async def warm_prefill_s(url: str) -> float:
    """Seconds of the fastest of three warm one-token completions of a 256-token prompt (64 words)."""
    prompt = " ".join(f"w{j}x{j}" for j in range(64))
    best = float("inf")
    async with httpx.AsyncClient(timeout=120.0) as client:
        for _ in range(3):
            t = time.perf_counter()
            r = await client.post(url + "/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 1})
            r.raise_for_status()
            best = min(best, time.perf_counter() - t)
    return best


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(have) + ("" if "avx512_bf16" in have or "amx_bf16" in have else "; no native bfloat16")


def _same_work(arms: list[Arm], wl: dict[str, Any]) -> None:
    tokens = wl["agents"] * wl["steps"] * wl["output_tokens"]
    for arm in arms:
        failed_steps = [(s.agent_id, s.step, s.status, s.error) for s in arm.results.steps if not s.ok]
        assert arm.completed == arm.started == arm.in_deadline == wl["agents"] and arm.failed == 0, (
            arm.name, arm.summary["tasks"], failed_steps[:5],
        )  # fmt: skip
        assert arm.delta.generation_tokens == tokens, arm.name
        assert arm.delta.prompt_tokens == arms[0].delta.prompt_tokens, arm.name


async def test_aimd_on_overloaded_agent_loop(medium_engine: Engine) -> None:
    prefill_s = await warm_prefill_s(medium_engine.url)
    if prefill_s > SLOW_PREFILL_S:
        pytest.skip(
            f"vLLM's CPU build prefills 256 tokens on medium in {prefill_s:.2f} s here (> {SLOW_PREFILL_S} s; CPU: "
            f"{_cpu_flags()}): the bare arm cannot finish its agent loop in the deadline on this machine"
        )
    arms = await admission_round(medium_engine.url, AGENT_LOOP, PAIR)
    none, aimd = arms[0].delta, arms[1].delta
    if aimd.preemptions > MAX_PREEMPTION_SHARE * none.preemptions:
        # a handful of preemptions either way is timing on a shared box (measured: 0-2 under aimd against
        # 8-10 bare): one more pair, and the counters pooled over both decide
        await admission_round(medium_engine.url, AGENT_LOOP, PAIR, arms=arms)
        none, aimd = arms[0].delta + arms[2].delta, arms[1].delta + arms[3].delta
    print("\n" + format_table(arms))
    _same_work(arms, AGENT_LOOP)
    assert none.preemptions >= MIN_BARE_PREEMPTIONS * (len(arms) // 2), f"the bare engine was not overloaded: {none}"
    assert none.prefix_hits < 0.3 * none.prompt_tokens, none
    assert aimd.preemptions <= MAX_PREEMPTION_SHARE * none.preemptions, (aimd, none)
    assert aimd.computed_tokens <= 0.65 * none.computed_tokens, (aimd, none)


async def test_decode_bound_swarm_on_tiny(engine: Engine) -> None:
    # the shipped defaults (what a user gets): the tier's AIMD is tuned for the agent loop above
    arms = await admission_round(
        engine.url, DECODE_SWARM, PAIR, {"none": {"controller": "none"}, "aimd": {"controller": "aimd"}}
    )
    print("\n" + format_table(arms))
    _same_work(arms, DECODE_SWARM)
    none, aimd = arms
    ratio = aimd.delta.iterations / none.delta.iterations
    print(f"engine iterations: aimd / none = {ratio:.2f} (target (b) needs <= {1 / TARGET_B:.2f})")
    assert aimd.delta.preemptions <= none.delta.preemptions + SWARM_PREEMPTION_SLACK, (aimd.delta, none.delta)
    if ratio > 1 / TARGET_B:
        # one agent at a time takes one iteration per generated token: how close AIMD came to that
        pytest.xfail(
            f"issue 18 (b) not met: AIMD needs {ratio:.2f}x the bare engine's iterations on a decode-bound swarm "
            f"({aimd.delta.iterations / aimd.delta.generation_tokens:.2f} iterations per generated token; goodput "
            f"{aimd.goodput_per_min:.0f} vs {none.goodput_per_min:.0f} tasks/min in this pair; engine idle while "
            f"steps waited {aimd.admission.get('idle_waiting_s', 0):.1f} s)"
        )
