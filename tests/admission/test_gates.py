"""The admission seam: every gate is an `AdmissionGate` handing out the one `AdmissionTicket`.

The open gate (controller ``none``) admits at once and tracks nothing; the shared gate is the
window gate's ticket plus a lease step, which never leaks the local slot (a lost race, or a
cancellation while the lease is being claimed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from concurproxy.config import load_policy
from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.control.admission import AdmissionCore
from concurproxy.control.types import StepInfo, StepOutcome
from concurproxy.decision import DecisionCore
from concurproxy.server.admission import AdmissionTicket, OpenGate, WindowGate, build_gate
from concurproxy.server.admission.leases import SharedWindowGate


def step(agent: str, last: bool = False) -> StepInfo:
    return StepInfo(tenant="t", role="r", agent_id=agent, task_id="k", est_prompt_tokens=10, last_step=last)


def ctx(agent: str, replica: str = "r0") -> Any:
    return SimpleNamespace(
        step=step(agent), replica=SimpleNamespace(id=replica), usage=None, route_decision=None, identity=None
    )


def test_build_gate_follows_the_policy_s_decision_core() -> None:
    open_gate = build_gate(DecisionCore.from_policy(load_policy(overrides={"admission.controller": "none"}, env={})))
    assert isinstance(open_gate, OpenGate)
    core = DecisionCore.from_policy(load_policy(overrides={}, env={}))
    gate = build_gate(core)
    assert isinstance(gate, WindowGate) and gate.core is core.admission


async def test_the_open_gate_admits_at_once_and_tracks_nothing() -> None:
    gate = OpenGate()
    async with gate.acquire(ctx("a")) as ticket:
        assert type(ticket) is AdmissionTicket and ticket.queue_wait_s == 0.0 and ticket.core is None
        ticket.set_outcome(StepOutcome.error)
    assert gate.state() == {"controller": "none"}
    assert gate.window_room("r0") is None and not gate.release_agent("a")
    gate.forget_replica("r0")
    await gate.run()  # nothing to keep: returns at once


@dataclass
class FakeShare:
    members: set[str] = field(default_factory=set)
    mine: set[str] = field(default_factory=set)
    global_window: int | None = 1


class FakeShared:
    """The parts of `RedisState` the shared gate uses; ``claim`` waits for the test to answer."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[bool] = asyncio.Queue()
        self.claims = 0
        self.pins = SimpleNamespace(moved=lambda agent: None)

    def share(self, replica: str) -> FakeShare:
        return FakeShare()

    async def claim(self, replica: str, agent: str, window: int) -> bool:
        self.claims += 1
        return await self.answers.get()

    def publish_pin(self, agent: str, replica: str | None) -> None:
        return None


def shared_gate() -> tuple[SharedWindowGate, FakeShared]:
    cfg = AdmissionConfig(controller="static", static=StaticConfig(window=4), starvation_timeout_s=1000)
    state = FakeShared()
    return SharedWindowGate(AdmissionCore(cfg), state, clock=lambda: 100.0), state  # type: ignore[arg-type]


async def test_a_new_agent_claims_its_lease_an_admitted_one_does_not() -> None:
    gate, state = shared_gate()
    entering = asyncio.ensure_future(gate.acquire(ctx("a")).__aenter__())
    await asyncio.sleep(0)
    assert state.claims == 1 and not entering.done()
    state.answers.put_nowait(True)
    first = await entering
    assert first.core is not None and first.core.reason == "new"
    first.close(None)
    async with gate.acquire(ctx("a")) as again:  # in the window: no lease step, no await
        assert again.core is not None and again.core.reason == "in-window"
    assert state.claims == 1 and gate.core.window("r0").counters.ended == {"success": 2}


async def test_a_lost_lease_gives_the_slot_back_and_queues_again() -> None:
    gate, state = shared_gate()
    entering = asyncio.ensure_future(gate.acquire(ctx("a")).__aenter__())
    await asyncio.sleep(0)
    state.answers.put_nowait(False)  # another instance took the last slot
    await asyncio.sleep(0)
    assert state.claims == 2  # given back, admitted locally again, claiming again
    state.answers.put_nowait(True)
    ticket = await entering
    ticket.close(None)
    assert gate.core.window("r0").counters.ended == {"cancelled": 1, "success": 1}
    assert gate.core.window("r0").open_tickets() == 0


async def test_a_cancelled_lease_claim_does_not_leak_the_local_slot() -> None:
    gate, state = shared_gate()
    entering = asyncio.ensure_future(gate.acquire(ctx("a")).__aenter__())
    await asyncio.sleep(0)
    assert state.claims == 1
    entering.cancel()  # the client went away while the lease was being claimed
    await asyncio.gather(entering, return_exceptions=True)
    w = gate.core.window("r0")
    assert w.open_tickets() == 0 and w.counters.ended == {"cancelled": 1}
    assert not any(gate.arriving.values())
