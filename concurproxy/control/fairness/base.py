"""The fairness plugin protocol, its parameters, and the `WaitQueue` adapter handed to admission.

A `FairnessPolicy` is pure ordering logic with frozen parameters; every
mutable thing (queued entries, counters) lives in a state object the policy
creates with ``new_state()`` (the llm-d split: policy logic, state created
separately). `FairQueue` binds one policy to one state and is what admission
and the per-replica dispatch queues hold: it satisfies
``concurproxy.control.types.WaitQueue`` exactly.

Items must be hashable and are queued at most once at a time (pushing a queued
item again raises ValueError). Not thread-safe: one owner (the event loop).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, cast

from concurproxy.config.budgets import FairnessConfig, TenantConfig
from concurproxy.control.types import StepInfo

T = TypeVar("T", bound=Hashable)
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class FairnessParams:
    """Policy parameters, resolved from the ``fairness`` and ``tenants`` sections."""

    input_weight: float = 1.0
    output_weight: float = 2.0
    long_prefill_tokens: int = 4096
    max_bypass_s: float = 5.0
    tenant_weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    default_weight: float = 1.0  # tenants not in the policy (e.g. "anonymous")
    max_idle_flows: int = 4096  # memory bound on counters of idle flows (see vtc)

    @classmethod
    def from_policy(cls, fairness: FairnessConfig, tenants: Sequence[TenantConfig]) -> FairnessParams:
        return cls(
            input_weight=fairness.input_weight,
            output_weight=fairness.output_weight,
            long_prefill_tokens=fairness.long_prefill_tokens,
            max_bypass_s=fairness.max_bypass_s,
            tenant_weights=MappingProxyType({t.name: t.weight for t in tenants}),
        )

    def weight(self, tenant: str) -> float:
        return self.tenant_weights.get(tenant, self.default_weight)

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return prompt_tokens * self.input_weight + output_tokens * self.output_weight


class FairnessPolicy(Protocol[S]):
    """Ordering logic over a separately created state ``S``. Register implementations by name."""

    @property
    def name(self) -> str: ...

    def new_state(self) -> S: ...

    def push(self, state: S, item: Hashable, step: StepInfo, now: float) -> None: ...

    def peek(self, state: S, now: float) -> Hashable | None:
        """The item `pop` would return at ``now``, without removing it."""
        ...

    def pop(self, state: S, now: float) -> Hashable | None: ...

    def remove(self, state: S, item: Hashable) -> bool: ...

    def charge(self, state: S, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None: ...

    def size(self, state: S) -> int: ...

    @property
    def shared_counters(self) -> SharedCounters[S] | None:
        """The policy's counters as several proxy instances share them (``vtc`` returns itself),
        or None for a policy without counters (``fifo``). A capability is a member of the
        protocol, not something the caller probes for with isinstance."""
        ...


class SharedCounters(Protocol[S_contra]):
    """Capability of a policy whose counters several proxy instances share (``vtc``).

    ``take_service`` returns the per-flow service charged here since the last call (and starts
    recording on the first call); ``absorb_service`` adds the service other instances charged."""

    def take_service(self, state: S_contra) -> dict[str, float]: ...

    def absorb_service(self, state: S_contra, service: Mapping[str, float]) -> None: ...


class FairQueue(Generic[T]):
    """A `WaitQueue[T]`: one policy bound to one state. O(log n) per operation for the built-ins."""

    __slots__ = ("policy", "state")

    def __init__(self, policy: FairnessPolicy[Any], state: Any | None = None) -> None:
        self.policy = policy
        self.state = policy.new_state() if state is None else state

    @property
    def name(self) -> str:
        return self.policy.name

    def push(self, item: T, step: StepInfo, now: float) -> None:
        self.policy.push(self.state, item, step, now)

    def pop(self, now: float) -> T | None:
        return cast("T | None", self.policy.pop(self.state, now))

    def peek(self, now: float) -> T | None:
        return cast("T | None", self.policy.peek(self.state, now))

    def remove(self, item: T) -> bool:
        return self.policy.remove(self.state, item)

    def charge(self, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None:
        self.policy.charge(self.state, step, prompt_tokens, output_tokens, now)

    def __len__(self) -> int:
        return self.policy.size(self.state)

    @property
    def shares_counters(self) -> bool:
        return self.policy.shared_counters is not None

    def take_service(self) -> dict[str, float]:
        """This queue's counter service since the last call ({} for a policy without counters)."""
        counters = self.policy.shared_counters
        return counters.take_service(self.state) if counters is not None else {}

    def absorb_service(self, service: Mapping[str, float]) -> None:
        counters = self.policy.shared_counters
        if counters is not None:
            counters.absorb_service(self.state, service)
