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
    # 200 + 300 (the growth seen here; without the prior: min(max_tokens 100, 512)); the 4-step lookahead
    # (200 + 4 × 300) stops at the 420 tokens agents end at here, but one step of growth is always reserved
    assert w.state(2).agents[0].footprint_tokens == 500


def test_lookahead_growth_counts_until_the_size_agents_end_at() -> None:
    w = window(1_000_000)
    finish_two_step_agent(w, "a", 100, 2000, 20)  # grew 1900; ended at 2020 tokens
    admitted(w.try_admit(step("b", 100), 2))
    assert w.state(2).agents[0].footprint_tokens == 2020  # not 100 + 4 × 1900
    admitted(w.try_admit(step("c", 1900), 2))
    assert w.state(2).agents[1].footprint_tokens == 1900 + 1900  # past the peak: one step of growth


def test_agents_that_go_quiet_teach_the_size_agents_end_at() -> None:
    """No client says it is done: a 3-step agent that went dormant counts as finished, so the agents after it
    are not each charged 4 steps of growth (which on a small cache serialised a decode-bound swarm)."""
    cfg = AdmissionConfig(aimd=AIMDConfig(initial=8, max=64, stale_after_ms=60_000), work_conserving=False)
    w = ReplicaWindow("r0", AIMDController(cfg.aimd), cfg, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, kv_capacity_tokens=1600), 0)
    now = 0.0
    t = admitted(w.try_admit(step("a", 130), now))
    for prompt in (330, 530):  # grows 200 a step; never says it is done
        w.end(t, Outcome.success, now + 0.4, prompt_tokens=prompt - 200, output_tokens=48)
        now += 0.5
        t = admitted(w.try_admit(step("a", prompt), now))
    w.end(t, Outcome.success, now + 0.4, prompt_tokens=530, output_tokens=48)
    # b would be charged 130 + 4 × 200 = 930 beside a's 530 + 800: over the 1520 budget, it waits for a
    assert isinstance(w.try_admit(step("b", 130), now + 0.5), Queued)
    bound = w.state(now + 0.5).return_bound_s
    (g,) = w.grant(now + 0.5 + bound + 0.01)  # a went quiet past its return bound: it yields, and it ended at 578
    assert g.admitted.ticket.agent_id == "b"
    assert w.state(now + 1 + bound).agents[0].footprint_tokens == 578  # min(930, max(330, 578))
    admitted(w.try_admit(step("c", 130), now + 1 + bound))  # 578 + 578 ≤ 1520: two run together now


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
    # lookahead 500 + 4 × 3000 capped at the peak 4000, the floor 0.75 × 4000 under it
    assert w.state(2).agents[0].footprint_tokens == max(min(500 + 4 * 3000, 4000), 3000)


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
