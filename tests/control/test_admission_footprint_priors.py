"""The replica's learned footprint priors: growth seen on other agents, and the size agents finish at."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, DormancyConfig
from concurproxy.control.admission import Admitted, EventKind, FifoQueue, Outcome, Queued, ReplicaWindow, Ticket
from concurproxy.control.admission.footprint import Footprint, FootprintPriors
from concurproxy.control.limits import AIMDController
from concurproxy.control.types import PressureSnapshot, StepInfo


def step(agent: str, prompt: int, *, last_step: bool = False) -> StepInfo:
    return StepInfo(
        tenant="t", role="r", agent_id=agent, task_id="k", est_prompt_tokens=prompt, max_tokens=100, last_step=last_step
    )


def window(capacity: int, **aimd: float) -> ReplicaWindow:
    cfg = AdmissionConfig(  # the footprint rules alone: idle agents hold their slots, no work-conserving admission
        aimd=AIMDConfig(initial=64, max=64, stale_after_ms=60_000, **aimd),  # type: ignore[arg-type]
        dormancy=DormancyConfig(enabled=False),
        work_conserving=False,
    )
    w = ReplicaWindow("r0", AIMDController(cfg.aimd), cfg, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, kv_capacity_tokens=capacity), 0)
    return w


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


def finish_two_step_agent(w: ReplicaWindow, agent: str, first: int, second: int, output: int, t0: float = 0) -> None:
    """An agent whose prompt grows first → second, then finishes with ``second + output`` tokens."""
    t = admitted(w.try_admit(step(agent, first), t0))
    w.end(t, Outcome.success, t0 + 0.5, prompt_tokens=first, output_tokens=output)
    t = admitted(w.try_admit(step(agent, second), t0 + 1))
    w.end(t, Outcome.success, t0 + 1.5, prompt_tokens=second, output_tokens=output, release=True)


def test_a_new_agent_starts_with_the_growth_seen_here_not_its_max_tokens() -> None:
    w = window(1_000_000)
    finish_two_step_agent(w, "a", 100, 400, 20)  # grew 300 between steps (tool result + output)
    admitted(w.try_admit(step("b", 200), 2))
    # 200 + 4 × 300 (without the prior: 200 + 4 × min(max_tokens 100, 512) = 600); the floor 0.75 × 420 is lower
    assert w.state(2).agents[0].footprint_tokens == 1400


def test_an_agent_is_charged_at_least_a_share_of_the_size_agents_finish_at() -> None:
    w = window(10_000, footprint_peak_share=0.75, footprint_headroom=1.0, growth_lookahead_steps=0)
    finish_two_step_agent(w, "a", 1000, 4000, 0)  # finished at 4000 tokens: peak prior 4000
    for i in range(3):  # 3 × max(500, 0.75 × 4000) = 9000 ≤ 10000
        admitted(w.try_admit(step(f"n{i}", 500), 2))
    assert w.state(2).footprint_tokens == 9000
    q = w.try_admit(step("n3", 500), 2)  # a fourth would make 12000
    assert isinstance(q, Queued)
    assert w.drain_events()[-1].reason == "footprint"


def test_the_floor_and_the_lookahead_add_up_as_a_maximum() -> None:
    w = window(10_000, footprint_peak_share=0.75)
    finish_two_step_agent(w, "a", 1000, 4000, 0)  # growth prior 3000, peak prior 4000
    admitted(w.try_admit(step("x", 500), 2))  # an empty window always admits one agent
    assert w.state(2).agents[0].footprint_tokens == max(500 + 4 * 3000, 3000)


def test_peak_share_zero_turns_the_floor_off() -> None:
    w = window(10_000, footprint_peak_share=0.0, growth_lookahead_steps=0)
    finish_two_step_agent(w, "a", 1000, 4000, 0)
    admitted(w.try_admit(step("b", 500), 2))
    assert w.state(2).agents[0].footprint_tokens == 500


def test_one_step_agents_neither_get_the_floor_nor_teach_it() -> None:
    w = window(10_000, growth_lookahead_steps=0)
    t = admitted(w.try_admit(step("one", 50, last_step=True), 0))
    w.end(t, Outcome.success, 1, prompt_tokens=50, output_tokens=10, release=True)  # one step: no peak learned
    admitted(w.try_admit(step("b", 500), 2))
    assert w.state(2).agents[0].footprint_tokens == 500
    finish_two_step_agent(w, "a", 1000, 4000, 0, t0=3)
    admitted(w.try_admit(step("single", 100, last_step=True), 5))
    charged = {a.agent_id: a.footprint_tokens for a in w.state(5).agents}
    assert charged == {"b": 3000, "single": 100}


def test_priors_are_moving_averages() -> None:
    p = FootprintPriors(peak_share=1.0, initial_growth=512, lookahead=1)
    fp = p.new(100, max_tokens=64, single_step=False)
    assert fp.tokens() == 100 + 64  # nothing seen yet: min(max_tokens, initial_growth)
    p.on_step(fp, 300)
    p.on_step(fp, 400)
    assert p.growth == pytest.approx(0.9 * 200 + 0.1 * 100)
    p.on_finished(Footprint(1000, 0.0, 1000), steps=2)
    p.on_finished(Footprint(2000, 0.0, 2000), steps=3)
    p.on_finished(Footprint(9000, 0.0, 9000), steps=1)  # one-step: ignored
    assert p.peak == pytest.approx(0.9 * 1000 + 0.1 * 2000)


@pytest.mark.parametrize(
    "field,value",
    [
        ("footprint_peak_share", 1.5),
        ("footprint_peak_share", -0.1),
        ("growth_lookahead_steps", -1),
        ("kv_peak_samples", 0),
        ("min_utilisation", 0),
        ("hit_rate_drop", 0),
        ("initial_growth_tokens", -5),
    ],
)
def test_tuning_fields_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        AIMDConfig(**{field: value})  # type: ignore[arg-type]


def test_contexts_that_outgrew_the_budget_pause_the_longest_idle_agent() -> None:
    w = window(1000, footprint_headroom=1.0, growth_lookahead_steps=0, footprint_peak_share=0.0)
    tickets = {a: admitted(w.try_admit(step(a, 100), 0)) for a in ("a", "b", "c")}  # 300 of 1000
    w.end(tickets["a"], Outcome.success, 1, prompt_tokens=100, output_tokens=300)  # a holds 400
    w.end(tickets["b"], Outcome.success, 1, prompt_tokens=100, output_tokens=300)  # b holds 400: 900 fits
    assert w.active == 3
    w.end(tickets["c"], Outcome.success, 2, prompt_tokens=100, output_tokens=300)  # 1200 > 1000
    # b idle since 1, c since 2: b goes (the engine's own LRU order; a, the first kept, always stays)
    assert [a.agent_id for a in w.state(2).agents] == ["a", "c"]
    paused = [e for e in w.drain_events() if e.kind is EventKind.paused]
    assert [(e.agent_id, e.reason) for e in paused] == [("b", "over-budget")]
    assert isinstance(w.try_admit(step("b", 420), 3), Queued)  # its next step waits to resume


def test_a_running_agent_is_not_paused_and_the_oldest_keeps_its_slot() -> None:
    w = window(1000, footprint_headroom=1.0, growth_lookahead_steps=0, footprint_peak_share=0.0)
    ta = admitted(w.try_admit(step("a", 100), 0))
    tb = admitted(w.try_admit(step("b", 100), 0))
    w.end(ta, Outcome.success, 1, prompt_tokens=100, output_tokens=1100)  # a alone outgrows the budget
    assert w.active == 2  # b is running: it finishes its step first; a is the oldest
    w.end(tb, Outcome.success, 2, prompt_tokens=100, output_tokens=10)
    assert [a.agent_id for a in w.state(2).agents] == ["a"]
