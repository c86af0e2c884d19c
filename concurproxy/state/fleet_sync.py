"""Budgets and fairness counters shared through the sync pipeline (no Redis call on the request path).

Each part adds its scripts to the pipeline ``RedisState.sync_once`` already sends every
``sync_interval_s`` (heartbeat + leases), so sharing them costs no extra round trip:

* `BudgetSync` — one ``BUDGETS`` script for all the token buckets this instance has used:
  pushes the net tokens it took since the last sync, gets the fleet levels back and resets
  each local bucket to its share (``control/budgets/fleet.py`` has the model and the bound).
* `FairnessSync` — one ``VTC`` script per replica queue: pushes the tenant service charged
  here, gets the fleet totals back and adds the other instances' part to the local counters.

Outage: a failed or skipped sync leaves the local state as it is (the budget shares stay
conservative); budget spends made meanwhile are dropped (bounded by the share, see `fleet`),
fairness service is carried over and pushed when Redis returns, so the counters converge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from concurproxy.control.admission.core import QueueMaker
from concurproxy.control.budgets import BudgetEngine
from concurproxy.control.budgets.decision import BucketKey
from concurproxy.control.fairness.base import FairQueue
from concurproxy.control.types import WaitQueue

if TYPE_CHECKING:
    from concurproxy.state.redis_state import RedisState

BUDGET_TTL_MS = 600_000  # a fleet bucket untouched this long is full again anyway (refill: 60 s)
VTC_TTL_MS = 3_600_000  # fleet service totals of a replica nobody charged for an hour are forgotten


class SyncPart(Protocol):
    async def enqueue(self, pipe: Any) -> int:
        """Add this part's commands to the sync pipeline; returns how many results are its own."""
        ...

    def apply(self, results: list[Any], live_instances: int) -> None: ...

    def failed(self) -> None:
        """The pipeline failed, or was skipped because Redis is away."""
        ...

    def view(self) -> dict[str, Any]:
        """JSON-ready entries for /admin/state."""
        ...

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool: drop what the part keeps for it."""
        ...


def budget_key(prefix: str, key: BucketKey) -> str:
    tenant, role = key
    return f"{prefix}budget:t:{tenant}" if role is None else f"{prefix}budget:r:{tenant}/{role}"


class BudgetSync:
    def __init__(self, engine: BudgetEngine, state: RedisState, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.state = state
        self.clock = clock
        self.ledger = engine.share_with_fleet()
        self.levels: dict[BucketKey, float] = {}  # fleet levels at the last sync (for /admin/state)
        self._keys: list[BucketKey] = []
        self._peers, self._peers_until = 1, 0.0

    def peers(self, live_instances: int, now: float) -> int:
        """Live instances to split the bucket over: the most seen within one heartbeat TTL, so a
        peer not yet re-registered (Redis restarted empty, a slow heartbeat) still counts."""
        if live_instances >= self._peers or now >= self._peers_until:
            self._peers, self._peers_until = live_instances, now + self.state.settings.leader_ttl_s
        return self._peers

    async def enqueue(self, pipe: Any) -> int:
        budgeted = self.engine.budgeted()
        self._keys = list(budgeted)
        spent = self.ledger.take()
        if not self._keys:
            return 0
        args: list[float | int] = [BUDGET_TTL_MS]
        for k in self._keys:
            tpm = budgeted[k]
            args += [tpm, tpm / 60_000, spent.get(k, 0.0)]
        prefix = self.state.settings.key_prefix
        await self.state.budget_script(keys=[budget_key(prefix, k) for k in self._keys], args=args, client=pipe)
        return 1

    def apply(self, results: list[Any], live_instances: int) -> None:
        now = self.clock()
        share = 1.0 / max(1, self.peers(live_instances, now))
        self.engine.fleet_share = share
        if not results:
            return
        for k, level in zip(self._keys, results[0], strict=True):
            self.levels[k] = float(level)
            self.engine.apply_fleet_level(k, float(level), share, now)

    def failed(self) -> None:
        self.ledger.take()  # spent against the local share while Redis is away: not charged later

    def forget_replica(self, replica: str) -> None:
        return None  # budgets are per tenant and role

    def view(self) -> dict[str, Any]:
        fleet = {f"{t}/{r or '*'}": round(v, 3) for (t, r), v in self.levels.items()}
        return {"budget_share": self.engine.fleet_share, "budget_levels": fleet}


class FairnessSync:
    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.queues: dict[str, FairQueue[Any]] = {}
        self._seen: dict[str, dict[str, float]] = {}  # replica -> fleet totals at the last sync
        self._carry: dict[str, dict[str, float]] = {}  # service not pushed yet (a failed sync)
        self._pushed: list[tuple[str, dict[str, float]]] = []

    def track(self, maker: QueueMaker) -> QueueMaker:
        """Wrap the admission core's queue maker: every queue with VTC counters is shared."""

        def make(replica: str) -> WaitQueue[int]:
            q = maker(replica)
            if isinstance(q, FairQueue) and q.shares_counters:
                q.take_service()  # starts recording
                self.queues[replica] = q
            return q

        return make

    async def enqueue(self, pipe: Any) -> int:
        self._pushed = []
        prefix = self.state.settings.key_prefix
        for replica, q in self.queues.items():
            mine = self._carry.pop(replica, {})
            for tenant, amount in q.take_service().items():
                mine[tenant] = mine.get(tenant, 0.0) + amount
            args: list[str | float | int] = [VTC_TTL_MS]
            for tenant, amount in mine.items():
                args += [tenant, amount]
            await self.state.vtc_script(keys=[f"{prefix}vtc:{replica}"], args=args, client=pipe)
            self._pushed.append((replica, mine))
        return len(self._pushed)

    def apply(self, results: list[Any], live_instances: int) -> None:
        for (replica, mine), flat in zip(self._pushed, results, strict=True):
            totals = {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}
            seen = self._seen.setdefault(replica, {})
            others: dict[str, float] = {}
            for tenant, total in totals.items():
                extra = total - seen.get(tenant, 0.0) - mine.get(tenant, 0.0)
                if extra > 1e-9:  # < 0: the totals were lost (Redis restarted empty); start over from them
                    others[tenant] = extra
                seen[tenant] = total
            q = self.queues.get(replica)
            if q is not None:  # (None: the replica left while the sync was in flight)
                q.absorb_service(others)
        self._pushed = []

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool: its queue and counters go (its unpushed service with them)."""
        for d in (self.queues, self._seen, self._carry):
            d.pop(replica, None)

    def failed(self) -> None:
        for replica, mine in self._pushed:
            if replica not in self.queues:
                continue
            carry = self._carry.setdefault(replica, {})
            for tenant, amount in mine.items():
                carry[tenant] = carry.get(tenant, 0.0) + amount
        self._pushed = []

    def view(self) -> dict[str, Any]:
        return {"vtc_service": {r: {t: round(v, 3) for t, v in s.items()} for r, s in self._seen.items()}}
