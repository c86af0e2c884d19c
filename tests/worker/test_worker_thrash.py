"""Middle-phase thrashing on the tiny profile, asserted on engine counters (virtual time)."""

from __future__ import annotations

from concurproxy.worker.agents import AgentSpec, AgentTask
from concurproxy.worker.profile import load_profile
from concurproxy.worker.thrash import PRESETS, format_table, run_closed_loop


def test_agent_context_grows_by_output_plus_tool_each_step() -> None:
    spec = AgentSpec(steps=3, system_tokens=4, task_tokens=4, tool_tokens=5, output_tokens=2)
    t = AgentTask(0, spec, seed=1)
    p0 = t.prompt()
    assert len(p0) == 8
    t.on_output([9, 9])
    p1 = t.prompt()
    assert p1[:8] == p0 and p1[8:10] == [9, 9] and len(p1) == 15
    t.on_output([8, 8])
    t.on_output([7, 7])
    assert t.done and len(t.context) == spec.final_context()
    assert AgentTask(0, spec, seed=1).prompt() == p0  # deterministic
    assert AgentTask(1, spec, seed=1).prompt()[:4] == p0[:4]  # shared system prompt


def test_throughput_collapses_past_capacity_on_tiny() -> None:
    cfg = load_profile("tiny").engine_config()
    spec = PRESETS["tiny"][0]
    knee = run_closed_loop(cfg, spec, agents=3, duration_s=30.0)
    over = run_closed_loop(cfg, spec, agents=12, duration_s=30.0)
    ks, os_ = knee.stats, over.stats
    # the engine is busy all the time, but does less useful work
    assert over.busy_frac > 0.95
    assert os_.generation_tokens < 0.8 * ks.generation_tokens
    # ... because it recomputes evicted histories and preempts
    assert os_.evicted_prefix_recompute_tokens > 5 * max(ks.evicted_prefix_recompute_tokens, 1)
    assert os_.preemptions > ks.preemptions
    assert os_.recomputed_prefill_tokens > ks.recomputed_prefill_tokens
    assert over.prefix_hit_rate < 0.5 * knee.prefix_hit_rate
    prefill_per_out_knee = ks.prefill_tokens_computed / ks.generation_tokens
    prefill_per_out_over = os_.prefill_tokens_computed / os_.generation_tokens
    assert prefill_per_out_over > 2 * prefill_per_out_knee
    table = format_table([knee, over])
    assert "agents" in table and "\n     3" in table


def test_closed_loop_is_deterministic() -> None:
    cfg = load_profile("tiny").engine_config()
    spec = PRESETS["tiny"][0]
    a = run_closed_loop(cfg, spec, agents=4, duration_s=5.0, seed=2)
    b = run_closed_loop(cfg, spec, agents=4, duration_s=5.0, seed=2)
    assert a.stats == b.stats and a.output_tok_s == b.output_tok_s
