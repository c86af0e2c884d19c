"""Bookkeeping types of the simulation loop: event kinds, a step as the proxy carries it, and the
load generator's tasks and step attempts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from concurproxy.control.admission import Ticket
from concurproxy.control.types import StepInfo
from concurproxy.simulate.workload import AgentTokens, TaskTokens
from concurproxy.worker.engine.request import EngineRequest
from loadgen.plan import Chain, StepSpec, TaskPlan
from loadgen.results import StepResult


class Ev(IntEnum):
    """Event kinds; at equal times events run in insertion order (a sequence number)."""

    arrival = 0  # a task arrives (open loop) or starts (closed loop)
    step = 1  # a step is ready to be sent (first attempt or a retry)
    engine = 2  # a replica's engine finishes its current iteration / starts the next
    tick = 3  # control interval: pressure → controllers, expiry, grants
    dispatch = 4  # a dispatch core's deadline on a replica: held steps let go
    admission = 5  # the admission core's deadline (an idle agent turns dormant while steps wait): grants


@dataclass(slots=True)
class SimStep:
    """One attempt of one step as the simulated proxy carries it (``SimProxy.send``)."""

    info: StepInfo
    prompt: list[int]  # token ids sent to the engine
    hashes: list[int]  # the router's prefix keys
    start: float = 0.0  # start of the current attempt
    max_tokens: int = 0  # after a budget clamp
    reservation: Any = None
    decision: Any = None
    replica: Any = None  # SimReplica
    ticket: Ticket | None = None
    wait_s: float = 0.0  # waited for admission
    ttft: float | None = None
    key: int = 0  # at the dispatch cores (0: not there)
    stream: bool = True  # the client reads a stream (its first token ends the prefill at the gate)
    request: EngineRequest | None = None  # in the engine (its token ids, outputs included)

    def live(self) -> bool:
        """False once whoever sent it stopped waiting (a grant then ends its ticket as cancelled)."""
        return True


@dataclass(slots=True)
class SimTask:
    plan: TaskPlan
    tenant: str | None
    tokens: TaskTokens
    start: float
    agents: dict[str, AgentTokens] = field(default_factory=dict)
    phase: int = 0
    chains_left: int = 0
    status: str = "running"  # running | ok | failed


@dataclass(slots=True, kw_only=True)
class StepRun(SimStep):
    """One step of one agent of a load-generator task, across its attempts (a retried 429/503 is a new
    attempt)."""

    task: SimTask
    chain: Chain
    pos: int
    attempt: int = 1

    def live(self) -> bool:
        return self.task.status == "running"

    @property
    def spec(self) -> StepSpec:
        return self.chain[self.pos]

    def result(
        self,
        now: float,
        status: int,
        *,
        replica: str | None = None,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        max_tokens: int | None = None,
        error: str | None = None,
    ) -> StepResult:
        """This attempt as the load generator records a step (same format as a real run)."""
        spec = self.spec
        return StepResult(
            spec.task_id, spec.agent_id, spec.role, self.task.plan.tenant, spec.index, self.attempt,
            self.start, now, status, self.ttft if status == 200 else None, self.wait_s * 1000.0, replica,
            prompt_tokens, output_tokens, spec.max_tokens if max_tokens is None else max_tokens, error,
        )  # fmt: skip
