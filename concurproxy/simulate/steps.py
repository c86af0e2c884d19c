"""Bookkeeping types of the simulation loop: tasks, step attempts, event kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from concurproxy.control.admission import Ticket
from concurproxy.control.types import StepInfo
from concurproxy.simulate.workload import AgentTokens, TaskTokens
from loadgen.plan import Chain, StepSpec, TaskPlan
from loadgen.results import StepResult


class Ev(IntEnum):
    """Event kinds; at equal times events run in insertion order (a sequence number)."""

    arrival = 0  # a task arrives (open loop) or starts (closed loop)
    step = 1  # a step is ready to be sent (first attempt or a retry)
    engine = 2  # a replica's engine finishes its current iteration / starts the next
    tick = 3  # control interval: pressure → controllers, expiry, grants


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


@dataclass(slots=True)
class StepRun:
    """One step of one agent, across its attempts (a retried 429/503 is a new attempt)."""

    task: SimTask
    chain: Chain
    pos: int
    info: StepInfo
    prompt: list[int]
    hashes: list[int]
    attempt: int = 1
    start: float = 0.0  # start of the current attempt
    max_tokens: int = 0
    reservation: Any = None
    decision: Any = None
    replica: Any = None  # SimReplica
    ticket: Ticket | None = None
    wait_s: float = 0.0
    ttft: float | None = None

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
