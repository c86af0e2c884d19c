"""Value types shared by the decision cores and the I/O shell around them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol, TypeVar


class PriorityClass(IntEnum):
    """Lower value = served first."""

    critical = 0
    high = 1
    normal = 2
    low = 3


class StepOutcome(StrEnum):
    """How one step ended: the one outcome of a step, set where the fact is known (the relay for an
    answered step, the request path for a refused, failed or cancelled one), ended with on the admission
    ticket (``AdmissionCore.end``) and read by the listeners as is. No string is parsed back."""

    success = "success"
    error = "error"  # upstream or proxy failure after the request was accepted
    cancelled = "cancelled"  # the client went away / the task was cancelled
    timeout = "timeout"  # upstream silence past a timeout
    rejected = "rejected"  # refused before admission (401, 413, 429): never ends a ticket

    @classmethod
    def of_status(cls, status: int) -> StepOutcome:
        """The outcome of a step answered with an error ``status`` by the proxy itself."""
        return cls.rejected if status in (401, 413, 429) else cls.error

    @classmethod
    def of_exception(cls, exc: BaseException | None) -> StepOutcome:
        """The outcome of a step that left its ticket with ``exc`` and no outcome set (None: normally).
        Not an ``Exception`` (a cancellation, ``GeneratorExit``, ``KeyboardInterrupt``): cancelled."""
        if exc is None:
            return cls.success
        if not isinstance(exc, Exception):
            return cls.cancelled
        return cls.timeout if isinstance(exc, TimeoutError) else cls.error


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What the core needs to know about one step (one model call of one agent)."""

    tenant: str
    role: str
    agent_id: str
    task_id: str
    priority: PriorityClass = PriorityClass.normal
    est_prompt_tokens: int = 0
    max_tokens: int = 0
    last_step: bool = False  # the client says the agent ends with this step (X-Agent-Done, or no identity)
    resident_prefix_tokens: int = 0  # leading prompt tokens already cached on the chosen replica (shared prefix)

    def with_resident_prefix(self, tokens: int) -> StepInfo:
        """This step with ``resident_prefix_tokens`` set (per step on the hot path: positional, about twice
        as cheap as ``dataclasses.replace``; a test checks every other field is carried over)."""
        return StepInfo(
            self.tenant,
            self.role,
            self.agent_id,
            self.task_id,
            self.priority,
            self.est_prompt_tokens,
            self.max_tokens,
            self.last_step,
            tokens,
        )


@dataclass(frozen=True, slots=True)
class PressureSnapshot:
    """One replica's pressure as read at time ``ts`` (seconds, same clock as ``now``).

    Rates come from counter deltas between two reads; ``None`` means unknown
    (first read, or the engine does not export it). ``ok`` is False when the
    read failed; a failed or stale snapshot must count as saturated.
    """

    ts: float
    ok: bool = True
    kv_usage: float | None = None  # 0..1
    running: int | None = None
    waiting: int | None = None
    preemptions_per_s: float | None = None
    prefix_hit_rate: float | None = None  # hits/queries over the last interval, 0..1
    kv_capacity_tokens: int | None = None  # total KV tokens the engine can hold, when known
    prefill_iterations: float | None = None  # a prefill's cost in decode iterations (signals/cost.py), when known
    source: str = "engine-metrics"
    error: str | None = None

    def age(self, now: float) -> float:
        return now - self.ts


T = TypeVar("T")


class WaitQueue(Protocol[T]):
    """Ordering of waiting items (agents waiting for admission, steps waiting for dispatch).

    Implementations are pure: ``fifo`` and the fairness policies (``vtc``) implement it.
    """

    def push(self, item: T, step: StepInfo, now: float) -> None: ...

    def pop(self, now: float) -> T | None:
        """Remove and return the item to serve next, or None when empty."""
        ...

    def peek(self, now: float) -> T | None: ...

    def remove(self, item: T) -> bool:
        """Drop an item that gave up (timeout, client gone). True if it was queued."""
        ...

    def charge(self, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None:
        """Account service actually given to the step's flow (fairness counters)."""
        ...

    def __len__(self) -> int: ...
