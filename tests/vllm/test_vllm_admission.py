"""AIMD admission in front of a real, overloaded vLLM engine, on one seeded agent workload.

One engine with 12 KV blocks (1536 tokens) serving the tier's ``medium`` model; ``AGENT_LOOP``
(scripts/vllm/harness.py): 16 agents start at once, each 5 steps over its own long context (~340
growing to ~900 tokens), 24 generated tokens a step (``ignore_eos``). Straight through
(``admission.controller: none``) the engine runs every agent whose prompt fits: running requests
that grow into a new block find the cache full and are preempted, and every agent's context is
evicted before its next step and prefilled again. Through AIMD the engine is kept near what fits.
Same seed, same prompts, a cold prefix cache for each arm; the arms run none, aimd, aimd, none.

Asserted on counters only (the engine's ``vllm:num_preemptions_total``, generated and prompt
tokens, ``vllm:iteration_tokens_total_sum``; the load generator's task outcomes), never on wall
time: every task of every arm completes within its deadline, all arms send the same prompts and
generate the same tokens, AIMD preempts at least 80% less than the bare engine and computes at
most 60% of its tokens. The comparison only means something when the bare engine is overloaded
(how hard it thrashes depends on how fast this shared machine's API server feeds it: 6-9
preemptions per run measured), so the whole round is run again, once, only when the two bare
arms preempted fewer than ``OVERLOAD`` times together.

Goodput (tasks within deadline per minute, pooled over the two arms of each controller) is
printed, not asserted (wall time): on ``medium`` it is 1.27-1.37x higher through AIMD, because
the tokens it saves are prefill that costs more than the decode steps it gives up. On the
``tiny`` model, where recompute is nearly free, it was 0.7-0.9x (docs/vllm.md).
"""

from __future__ import annotations

from scripts.vllm.engines import Engine
from scripts.vllm.harness import AGENT_LOOP, admission_round, format_table, of, pooled_line

OVERLOAD = 10  # preemptions of the two bare arms together that make the comparison meaningful
ROUNDS = 2


async def test_aimd_on_overloaded_agent_loop(engine: Engine) -> None:
    wl = AGENT_LOOP
    agents, tokens = wl["agents"], wl["agents"] * wl["steps"] * wl["output_tokens"]
    for _round in range(ROUNDS):
        arms = await admission_round(engine.url, wl)
        print("\n" + format_table(arms) + "\n" + pooled_line(arms))
        for arm in arms:
            assert arm.completed == arm.started == arm.in_deadline == agents and arm.failed == 0, (
                arm.name, arm.summary["tasks"],
            )  # fmt: skip
            assert arm.delta.generation_tokens == tokens, arm.name
            assert arm.delta.prompt_tokens == arms[0].delta.prompt_tokens, arm.name
        none, aimd = of(arms, "none"), of(arms, "aimd")
        bare = sum(a.delta.preemptions for a in none)
        if bare >= OVERLOAD:
            break
    assert bare >= OVERLOAD, f"the bare engine never preempted {OVERLOAD} times in a round ({ROUNDS} rounds)"
    assert sum(a.delta.preemptions for a in aimd) <= 0.2 * bare
    for n, a in zip(none, aimd, strict=True):
        assert a.delta.computed_tokens <= 0.6 * n.delta.computed_tokens, (a.delta, n.delta)
