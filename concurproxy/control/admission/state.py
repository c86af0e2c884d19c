"""Plain, JSON-ready state dumps of the admission core for ``GET /admin/state``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AgentState:
    agent_id: str
    tenant: str
    role: str
    running_steps: int
    steps: int
    admitted_s_ago: float
    idle_s: float  # 0 while a step runs
    footprint_tokens: int
    releasing: bool
    small: bool = False  # admitted by the small-agent lane (holds no slot of the window)


@dataclass(slots=True)
class Counters:
    """Monotonic decision counters of one replica (mutated by the window, copied into dumps)."""

    admitted_new: int = 0
    admitted_steps: int = 0
    admitted_starvation: int = 0
    admitted_small: int = 0  # new agents admitted by the small-agent lane (aimd.small_agent_tokens)
    share_reclaims: int = 0  # slots taken back from burst agents for a role below its window_share
    tenant_claims: int = 0  # slots given by agents over their tenant's share (or of a lower class) to a waiter
    queued: int = 0
    rejected: int = 0
    timeouts: int = 0
    cancelled_waits: int = 0
    paused: int = 0
    yielded: int = 0  # idle slot holders that gave their slot to a waiter (dormant, or work conservation)
    expired: int = 0
    released: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    double_end: int = 0
    window_increases: int = 0
    window_decreases: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaState:
    replica: str
    controller: str
    window: int
    window_reason: str
    saturated: bool
    saturated_reason: str | None
    active_agents: int
    running_steps: int
    paused_agents: int
    waiting: int
    oldest_wait_s: float
    footprint_tokens: int
    footprint_budget_tokens: int | None
    pressure_age_s: float | None
    kv_usage: float | None
    counters: Counters
    agents: list[AgentState]
    slots: int = 0  # agents that may hold slots now: W × probe_multiplier (W for static/none)
    probe_multiplier: float = 1.0  # the goodput probe's multiplier of W and the footprint budget (inf: lifted)
    return_bound_s: float = 0.0  # idle agents past this are dormant: they yield their slot to waiting steps
    idle_waiting_s: float = 0.0  # seconds with no step running here while steps waited (work conservation)
    # idle_waiting_s split by the cause charged when each idle period began (`SlotGate.idle_cause`)
    idle_waiting_by_cause: dict[str, float] = field(default_factory=dict)
    pressure_source: str = "kv"  # kv | stale | latency | static: the signal deciding W (see source.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
