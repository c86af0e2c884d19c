"""What the generators produce and the runner executes: typed task plans.

A ``TaskPlan`` is fully determined before it runs (the critic's send-backs are
drawn up front), so the same seed gives the same requests in the same order.
``phases`` run one after another; the chains of a phase run concurrently (the
K executor branches); the steps of a chain run in order, each step's tool
pause (``pause_after_s``) elapsing before the chain's next step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loadgen.text import Message


@dataclass(frozen=True, slots=True)
class StepSpec:
    task_id: str
    agent_id: str
    role: str
    index: int  # step number within its agent, from 0
    messages: tuple[Message, ...]  # the agent's whole context so far + the new input
    max_tokens: int
    est_prompt_tokens: int  # exact under concurproxy.tokens
    priority: str = "normal"
    pause_after_s: float = 0.0  # tool pause before the chain's next step
    agent_done: bool = False  # last step of this agent: X-Agent-Done: 1 when the client sends done signals
    at_s: float | None = None  # trace replay: earliest start, seconds after the run start

    def body(self, model: str, stream: bool) -> dict[str, Any]:
        """The /v1/chat/completions body (``ignore_eos`` makes outputs exactly ``max_tokens`` long)."""
        b: dict[str, Any] = {
            "model": model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": stream,
        }
        if stream:
            b["stream_options"] = {"include_usage": True}
        return b

    def identity_headers(self) -> dict[str, str]:
        """The agent identity a client may send (``client.identity: headers``)."""
        return {
            "X-Task-Id": self.task_id,
            "X-Agent-Id": self.agent_id,
            "X-Agent-Role": self.role,
            "X-Priority": self.priority,
        }


Chain = tuple[StepSpec, ...]


@dataclass(frozen=True, slots=True)
class TaskPlan:
    index: int
    task_id: str
    tenant: str
    api_key: str
    arrival_s: float | None  # seconds after the run start; None in closed loop
    deadline_s: float | None
    phases: tuple[tuple[Chain, ...], ...] = field(default=())

    def steps(self) -> Iterator[StepSpec]:
        """Every step in a fixed static order (phase, chain, step)."""
        for phase in self.phases:
            for chain in phase:
                yield from chain

    @property
    def n_steps(self) -> int:
        return sum(len(c) for p in self.phases for c in p)
