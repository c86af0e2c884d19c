"""Request state inside the engine, and what a step returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from concurproxy.worker.engine.stats import RequestTiming


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class RequestRejected(ValueError):
    """The request can never be served (too long, bad parameters, duplicate id)."""


@dataclass(slots=True, eq=False)
class EngineRequest:
    """One generation request. ``token_ids`` = prompt + outputs emitted so far.

    ``num_computed``: tokens whose KV is in this request's blocks.
    ``high_water``: the most tokens it ever had computed (recompute accounting).
    """

    req_id: str
    prompt_len: int
    max_tokens: int
    target_len: int
    arrival: float
    token_ids: list[int]
    planned_ids: list[int]
    planned_pieces: list[str]
    priority: int = 0  # lower is served earlier (only with scheduling_policy "priority")
    status: Status = Status.WAITING
    num_computed: int = 0
    high_water: int = 0
    blocks: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_cached_blocks: int = 0
    num_output: int = 0
    prefix_hit_tokens: int = 0  # hit on its first scheduling (OpenAI cached_tokens)
    num_preemptions: int = 0
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float = 0.0  # when its latest token was produced (inter-token latency)
    finish_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sort_key(self) -> tuple[int, float]:
        """Order under priority scheduling, as vLLM's: priority, then arrival (earlier first)."""
        return (self.priority, self.arrival)


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """Tokens a request produced in one step (or its end)."""

    req_id: str
    new_token_ids: tuple[int, ...]
    new_text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    timing: RequestTiming | None = None  # set when finished


@dataclass(frozen=True, slots=True)
class StepResult:
    """One engine iteration from ``start`` to ``start + duration`` (engine clock)."""

    start: float
    duration: float
    outputs: tuple[RequestOutput, ...]
    prefill_tokens: int
    decode_tokens: int
    num_scheduled: int
    preempted: tuple[str, ...]

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def finished(self) -> tuple[RequestOutput, ...]:
        return tuple(o for o in self.outputs if o.finished)
