"""Steps waiting for admission on one replica: a ``WaitQueue`` plus arrival-order bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from concurproxy.control.types import StepInfo, WaitQueue


@dataclass(frozen=True, slots=True)
class Waiter:
    waiter_id: int
    step: StepInfo
    since: float
    resume: bool = False  # its agent was paused (lost its slot between steps)


class WaiterSet:
    """The pluggable ``WaitQueue`` decides who is served next (fifo, vtc, …); this
    wrapper also keeps waiters in arrival order (for anti-starvation and timeouts,
    which must not depend on the fairness policy) and indexes them by agent (so
    when one step of an agent is admitted, its other waiting steps pass too).

    Steps of *paused* agents (they lost their slot when the window shrank) form
    a resume lane, in arrival order, that the window serves before the queue.

    Contract assumed of the queue: ``pop(now)`` returns what ``peek(now)`` just
    returned; if a queue breaks it, the peeked item is still the one taken.
    """

    def __init__(self, queue: WaitQueue[int]) -> None:
        self.queue = queue
        self.by_id: dict[int, Waiter] = {}  # insertion order = arrival order (read-only outside)
        self._by_agent: dict[str, list[int]] = {}
        self._resume: dict[int, Waiter] = {}  # paused agents' steps, arrival order
        self._by_role: dict[str, dict[int, Waiter]] = {}  # arrival order per role (window shares)
        self._by_tenant: dict[str, dict[int, Waiter]] = {}  # arrival order per tenant (tenant slot shares)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self.by_id.values()))

    def push(self, waiter_id: int, step: StepInfo, now: float, *, resume: bool = False) -> None:
        w = Waiter(waiter_id, step, now, resume)
        self.by_id[waiter_id] = w
        if resume:
            self._resume[waiter_id] = w
        self._by_agent.setdefault(step.agent_id, []).append(waiter_id)
        self._by_role.setdefault(step.role, {})[waiter_id] = w
        self._by_tenant.setdefault(step.tenant, {})[waiter_id] = w
        self.queue.push(waiter_id, step, now)

    def oldest(self) -> Waiter | None:
        return next(iter(self.by_id.values()), None)

    def oldest_resume(self) -> Waiter | None:
        return next(iter(self._resume.values()), None)

    def oldest_of_roles(self, wanted: Callable[[str], bool]) -> Waiter | None:
        """The longest-waiting step whose role satisfies ``wanted`` (one call per waiting role)."""
        heads = [next(iter(ws.values())) for role, ws in self._by_role.items() if wanted(role)]
        return min(heads, key=lambda w: (w.since, w.waiter_id), default=None)

    def tenants(self) -> list[str]:
        """Tenants with a waiting step."""
        return list(self._by_tenant)

    def tenant_heads(self) -> list[Waiter]:
        """Each waiting tenant's longest-waiting step, oldest first."""
        heads = [next(iter(ws.values())) for ws in self._by_tenant.values()]
        heads.sort(key=lambda w: (w.since, w.waiter_id))
        return heads

    def next_in_queue(self, now: float) -> Waiter | None:
        wid = self.queue.peek(now)
        return None if wid is None else self.by_id.get(wid)

    def take(self, w: Waiter, via_queue: bool, now: float) -> None:
        """Remove ``w`` because it is being admitted (``via_queue``: it is the queue's head)."""
        if via_queue:
            popped = self.queue.pop(now)
            if popped is not None and popped != w.waiter_id:
                self.queue.remove(w.waiter_id)
                other = self.by_id[popped]
                self.queue.push(popped, other.step, other.since)
        else:
            self.queue.remove(w.waiter_id)
        self._forget(w)

    def remove(self, waiter_id: int) -> Waiter | None:
        """Drop a waiter that gave up or timed out; None if it was not waiting."""
        w = self.by_id.get(waiter_id)
        if w is None:
            return None
        self.queue.remove(waiter_id)
        self._forget(w)
        return w

    def remove_agent(self, agent_id: str) -> list[Waiter]:
        """Take every waiting step of ``agent_id`` (its agent has just been admitted)."""
        return [w for wid in list(self._by_agent.get(agent_id, [])) if (w := self.remove(wid)) is not None]

    def _forget(self, w: Waiter) -> None:
        del self.by_id[w.waiter_id]
        self._resume.pop(w.waiter_id, None)
        for index, key in ((self._by_role, w.step.role), (self._by_tenant, w.step.tenant)):
            same = index[key]
            del same[w.waiter_id]
            if not same:
                del index[key]
        ids = self._by_agent.get(w.step.agent_id)
        if ids is not None:
            ids.remove(w.waiter_id)
            if not ids:
                del self._by_agent[w.step.agent_id]
