"""``vtc``: Virtual Token Counter fair queuing (Sheng et al., OSDI'24), two levels, priorities, bypass.

Flows and counters
  Level 1 flows are tenants, level 2 flows are the roles within a tenant. Each
  keeps a virtual counter of the service it received, in weighted tokens:
  ``cost = prompt_tokens * input_weight + output_tokens * output_weight``;
  a tenant's counter grows by ``cost / tenant_weight``, a role's by ``cost``.
  The prompt estimate is charged when a step is popped (VTC charges input at
  dispatch); ``charge`` later adds the reported usage minus that estimate.

Order of ``pop``
  1. the backlogged tenant with the smallest counter (ties: backlogged first);
  2. within it, the highest priority class present (critical > high > normal > low);
  3. within that class, the backlogged role with the smallest counter;
  4. within that lane, FIFO where short steps may pass long prefills for at
     most ``max_bypass_s`` (see `lanes.Lane.choose`).

Lifting
  A flow that becomes backlogged gets ``counter = max(own, min over backlogged
  flows of its level)`` (``floor``, the last such minimum, when none is
  backlogged), so idleness banks no credit. Consequence (VTC, Thm. 4.3): two
  continuously backlogged tenants' weighted service differs by at most about
  ``2 * max step cost``.

Several instances (``state.backend: redis``)
  Tenant counters are fleet-wide: with the ledger on, every service charge to a
  tenant (already divided by its weight) is also recorded in
  ``VTCState.ledger``; the sync hands it to the shared state (`take_service`)
  and adds the other instances' service since the last sync to the local
  counters (`absorb_service`). Lifting stays local (it is relative to this
  queue's backlog), so instances agree on the service part of each counter and
  so on the order of any two tenants that neither lifted. Role counters within
  a tenant stay per instance.

Memory: counters of idle flows are kept for lifting; beyond
``max_idle_flows`` those at or below the floor (lifting would erase them
anyway) and then the oldest are dropped. Cost: O(log n) per operation.
Not thread-safe: one owner. Pure: ``now`` is only compared with enqueue times.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from concurproxy.control.fairness.base import FairnessParams
from concurproxy.control.fairness.keyed_heap import KeyedHeap
from concurproxy.control.fairness.lanes import Entry, Lane
from concurproxy.control.types import PriorityClass, StepInfo

LaneKey = tuple[int, str]  # (priority class, role)
FlightKey = tuple[str, str, str, str]  # (tenant, role, agent_id, task_id): robust to a re-built StepInfo


def _flight_key(step: StepInfo) -> FlightKey:
    return (step.tenant, step.role, step.agent_id, step.task_id)


MAX_PRECHARGED = 65_536


@dataclass(slots=True)
class FlowCounters:
    """Counters of one level: backlogged flows in a heap by counter, idle ones remembered."""

    value: dict[str, float] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)  # seq at which the flow became backlogged
    backlog: KeyedHeap[str] = field(default_factory=KeyedHeap)
    floor: float = 0.0

    def lift(self, flow: str, seq: int) -> None:
        top = self.backlog.peek()
        low = top[1][0] if top is not None else self.floor
        self.value[flow] = max(self.value.get(flow, low), low)
        self.since[flow] = seq
        self.backlog.set(flow, (self.value[flow], seq))

    def add(self, flow: str, amount: float) -> None:
        self.value[flow] = self.value.get(flow, self.floor) + amount
        if flow in self.backlog:
            self.backlog.set(flow, (self.value[flow], self.since[flow]))

    def idle(self, flow: str, max_idle: int) -> None:
        self.backlog.discard(flow)
        self.since.pop(flow, None)
        if len(self.value) > 2 * max_idle + len(self.backlog):
            for f in [f for f, v in self.value.items() if v <= self.floor and f not in self.backlog]:
                del self.value[f]
            for f in [f for f in self.value if f not in self.backlog][: max(0, len(self.value) - max_idle)]:
                del self.value[f]


@dataclass(slots=True)
class TenantQueue:
    roles: FlowCounters = field(default_factory=FlowCounters)
    lanes: dict[LaneKey, Lane] = field(default_factory=dict)
    lane_order: KeyedHeap[LaneKey] = field(default_factory=KeyedHeap)  # (class, role counter, since)
    role_items: dict[str, int] = field(default_factory=dict)
    live: int = 0


@dataclass(slots=True)
class VTCState:
    tenants: FlowCounters = field(default_factory=FlowCounters)
    queues: dict[str, TenantQueue] = field(default_factory=dict)
    entries: dict[Hashable, Entry] = field(default_factory=dict)
    # estimate charged at pop, per step in flight, until `charge` settles it (oldest dropped beyond the cap)
    precharged: OrderedDict[FlightKey, list[float]] = field(default_factory=OrderedDict)
    seq: int = 0
    ledger: dict[str, float] | None = None  # tenant -> weighted service since the last sync (when shared)


class VTCPolicy:
    name: ClassVar[str] = "vtc"

    def __init__(self, params: FairnessParams | None = None) -> None:
        self.params = params or FairnessParams()

    @property
    def shared_counters(self) -> VTCPolicy:
        return self  # take_service / absorb_service below

    def new_state(self) -> VTCState:
        return VTCState()

    def size(self, state: VTCState) -> int:
        return len(state.entries)

    def push(self, state: VTCState, item: Hashable, step: StepInfo, now: float) -> None:
        if item in state.entries:
            raise ValueError(f"item already queued: {item!r}")
        state.seq += 1
        lane_key: LaneKey = (int(step.priority), step.role)
        e = Entry(item, step, state.seq, now, step.est_prompt_tokens > self.params.long_prefill_tokens, lane_key)
        state.entries[item] = e
        tq = state.queues.get(step.tenant)
        if tq is None:
            tq = state.queues[step.tenant] = TenantQueue()
        if tq.live == 0:
            state.tenants.lift(step.tenant, state.seq)
        if tq.role_items.get(step.role, 0) == 0:
            tq.roles.lift(step.role, state.seq)
        tq.role_items[step.role] = tq.role_items.get(step.role, 0) + 1
        tq.live += 1
        lane = tq.lanes.get(lane_key)
        if lane is None:
            lane = tq.lanes[lane_key] = Lane()
        if lane.live == 0:
            tq.lane_order.set(lane_key, (lane_key[0], tq.roles.value[step.role], state.seq))
        lane.add(e)

    def peek(self, state: VTCState, now: float) -> Hashable | None:
        e = self._select(state, now)
        return None if e is None else e.item

    def pop(self, state: VTCState, now: float) -> Hashable | None:
        e = self._select(state, now)
        if e is None:
            return None
        tenant, role = e.step.tenant, e.step.role
        state.tenants.floor = max(state.tenants.floor, state.tenants.value[tenant])
        tq = state.queues[tenant]
        tq.roles.floor = max(tq.roles.floor, tq.roles.value[role])
        self._unlink(state, e)
        # VTC charges the prompt at dispatch; `charge` settles the rest from reported usage.
        self._add(state, e.step, self.params.cost(e.step.est_prompt_tokens, 0))
        state.precharged.setdefault(_flight_key(e.step), []).append(self.params.cost(e.step.est_prompt_tokens, 0))
        if len(state.precharged) > MAX_PRECHARGED:
            state.precharged.popitem(last=False)
        return e.item

    def remove(self, state: VTCState, item: Hashable) -> bool:
        e = state.entries.get(item)
        if e is None:
            return False
        self._unlink(state, e)
        return True

    def charge(self, state: VTCState, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None:
        amount = self.params.cost(max(0, prompt_tokens), max(0, output_tokens))
        key = _flight_key(step)
        pre = state.precharged.get(key)
        if pre:  # popped from this queue: its prompt estimate is already counted
            amount -= pre.pop(0)
            if not pre:
                del state.precharged[key]
        self._add(state, step, amount)

    # -- shared with other instances (shared_counters) -------------------------------------------
    def take_service(self, state: VTCState) -> dict[str, float]:
        """Tenant service recorded since the last call (the first call turns recording on)."""
        out, state.ledger = state.ledger or {}, {}
        return out

    def absorb_service(self, state: VTCState, service: Mapping[str, float]) -> None:
        """Add other instances' tenant service (already weighted) to the local counters."""
        for tenant, amount in service.items():
            if amount:
                state.tenants.add(tenant, amount)

    # -- internals -----------------------------------------------------------------------------
    def _select(self, state: VTCState, now: float) -> Entry | None:
        top = state.tenants.backlog.peek()
        if top is None:
            return None
        tq = state.queues[top[0]]
        lane_top = tq.lane_order.peek()
        assert lane_top is not None  # a backlogged tenant has a non-empty lane
        return tq.lanes[lane_top[0]].choose(now, self.params.max_bypass_s)

    def _add(self, state: VTCState, step: StepInfo, amount: float) -> None:
        if amount == 0:
            return
        service = amount / self.params.weight(step.tenant)
        state.tenants.add(step.tenant, service)
        if state.ledger is not None:
            state.ledger[step.tenant] = state.ledger.get(step.tenant, 0.0) + service
        tq = state.queues.get(step.tenant)
        if tq is None:
            return
        tq.roles.add(step.role, amount)
        if step.role in tq.roles.backlog:
            value = tq.roles.value[step.role]
            for lane_key in self._lanes_of(tq, step.role):
                prio = tq.lane_order.get(lane_key)
                if prio is not None:
                    tq.lane_order.set(lane_key, (prio[0], value, prio[2]))

    @staticmethod
    def _lanes_of(tq: TenantQueue, role: str) -> list[LaneKey]:
        return [(int(p), role) for p in PriorityClass if (int(p), role) in tq.lane_order]

    def _unlink(self, state: VTCState, e: Entry) -> None:
        del state.entries[e.item]
        tenant, role = e.step.tenant, e.step.role
        tq = state.queues[tenant]
        lane = tq.lanes[e.lane]
        lane.kill(e)
        if lane.live == 0:
            tq.lane_order.discard(e.lane)
            del tq.lanes[e.lane]
        tq.live -= 1
        tq.role_items[role] -= 1
        if tq.role_items[role] == 0:
            del tq.role_items[role]
            tq.roles.idle(role, self.params.max_idle_flows)
        if tq.live == 0:
            state.tenants.idle(tenant, self.params.max_idle_flows)
            if not tq.roles.value or len(state.queues) > self.params.max_idle_flows:
                del state.queues[tenant]
