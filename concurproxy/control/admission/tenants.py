"""Slots shared between tenants (and priorities) at step boundaries.

An admitted agent keeps its slot for its whole life (its prefix is hot there), so when few agents
fit a replica, the tenant that arrived first holds every slot and a light tenant's steps wait
for a heavy tenant's agents to *finish*: measured with two tenants of equal weight on one
``tiny`` worker (default policy, VTC fairness), the light tenant's step p99 went from 0.13 s
alone to 115 s. VTC orders the *queue*; it cannot help a waiter when no slot ever frees.

Rule (``admission.tenant_slots``): the slots of a replica are split between the tenants that want
them (holding or waiting) by weighted max-min fairness (`fair_shares`: each tenant gets at most
what it asks for; what it leaves is split among the others by weight). A waiting step of a tenant
below its share may **claim** the slot of an agent of a tenant above its share, once that agent
has taken ``quantum_steps`` steps since it got its slot (so its prefix was reused, not churned):
an idle one gives its slot at once (longest idle first), else the one running longest in its
slot gives it when its current step ends (never mid-step). The agent that gave its slot waits
in the resume lane and, like any resuming agent, goes first among *its own tenant's* waiters;
it does not pass a waiter of a tenant below its share. A waiting step of a strictly higher
priority class (``X-Priority``, capped per tenant by ``max_priority``) may claim a lower class's
slot the same way.

Pure: plain data in, a decision out; single caller (the replica's window).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from concurproxy.control.types import PriorityClass


class Holder(Protocol):
    @property
    def agent_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def priority(self) -> PriorityClass: ...

    @property
    def running(self) -> int: ...

    @property
    def steps(self) -> int: ...

    @property
    def last_seen(self) -> float: ...


def fair_shares(slots: int, demand: Mapping[str, int], weight: Callable[[str], float]) -> dict[str, float]:
    """Weighted max-min fair split of ``slots`` between tenants asking for ``demand[t]`` slots each."""
    shares = {t: 0.0 for t in demand}
    left = float(slots)
    open_ = {t for t, d in demand.items() if d > 0}
    while open_ and left > 1e-9:
        total = sum(weight(t) for t in open_)
        offer = {t: left * weight(t) / total for t in open_}
        left = 0.0
        for t in list(open_):
            want = demand[t] - shares[t]
            if offer[t] >= want:
                shares[t] += want
                left += offer[t] - want
                open_.discard(t)
            else:
                shares[t] += offer[t]
    return shares


class TenantSlots:
    def __init__(self, quantum_steps: int = 4, weight: Callable[[str], float] | None = None) -> None:
        self.quantum_steps = quantum_steps
        self.weight: Callable[[str], float] = weight or (lambda _tenant: 1.0)

    def shares(self, slots: int, holders: Iterable[Holder], waiting: Iterable[str]) -> dict[str, float]:
        demand: dict[str, int] = {}
        for h in holders:
            demand[h.tenant] = demand.get(h.tenant, 0) + 1
        for t in waiting:
            demand[t] = demand.get(t, 0) + 1
        return fair_shares(slots, demand, self.weight)

    def below(self, tenant: str, held: Mapping[str, int], shares: Mapping[str, float]) -> bool:
        """The tenant holds fewer slots than the floor of its fair share."""
        return held.get(tenant, 0) + 1 <= shares.get(tenant, 0.0) + 1e-9

    def victim(
        self,
        tenant: str,
        priority: PriorityClass,
        holders: Sequence[Holder],
        shares: Mapping[str, float],
    ) -> Holder | None:
        """The holder whose slot a waiter of ``tenant``/``priority`` may claim, or None: past its quantum, of a
        lower priority class, or — while ``tenant`` is below its share — of another tenant above its share;
        idle ones first (longest idle), else the one with the most steps in its slot (it gives the slot when
        its step ends)."""
        held: dict[str, int] = {}
        for h in holders:
            held[h.tenant] = held.get(h.tenant, 0) + 1
        share_claim = self.below(tenant, held, shares)
        over = [
            h
            for h in holders
            if h.steps >= self.quantum_steps
            and (
                h.priority > priority  # a lower class (larger value) gives way to a higher one
                or (share_claim and h.tenant != tenant and held[h.tenant] > shares.get(h.tenant, 0.0) + 1e-9)
            )
        ]
        idle = [h for h in over if h.running == 0]
        if idle:
            return min(idle, key=lambda h: h.last_seen)
        return max(over, key=lambda h: h.steps, default=None)
