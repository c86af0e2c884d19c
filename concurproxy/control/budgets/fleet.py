"""One token bucket shared by N proxy instances: each spends from its share between syncs (pure).

Model
  The fleet bucket (capacity ``C = tokens_per_min``, refill ``r = C/60`` per
  second) lives in the shared state. Every instance keeps its local
  ``TokenBucket`` for the hot path (no round trip per step) and a ``SpendLedger``
  of the net tokens it took from each bucket since its last sync (reservations
  minus settlement refunds). Every sync interval one atomic script per instance
  refills the fleet bucket from its own clock and subtracts the ledger::

      L = min(C, L + (now - t) * r) - spent_i          (t = now)

  and the instance resets its local bucket to its share ``s = 1/n`` of the
  fleet (``n`` live instances at that sync): capacity ``s*C``, rate ``s*r``,
  level ``s*L`` minus what it took while the script was in flight
  (`apply_share`). A bucket first used between syncs starts full at its share.

Consistency bound
  Shares sum to one, so with syncs in phase the fleet spends what one bucket
  allows. Out of phase, a share is computed from a level that does not yet
  hold the other instances' spends since their own last sync; in a burst on a
  full bucket the fleet can take up to ``(n-1)/n * C`` more than one bucket
  would (plus one step's settlement overrun per instance, as a single bucket
  also allows). The excess is charged to the fleet bucket as debt (the level
  goes negative and every share with it), so over a minute or more the rate is
  exact. ``tests/control/test_budget_fleet.py`` simulates this bound (measured:
  about half of it, e.g. 0.32 C for n = 3). When an instance joins, the others
  learn of it at their next sync: for up to one interval the shares sum to
  ``1 + 1/n``.

Uneven load
  A share is an equal split, not a demand-weighted one: an instance that gets
  all of a tenant's traffic still spends the full rate (the idle shares stay in
  the fleet level and come back to it at every sync), but a step costing more
  than its share of the current level waits until the fleet level is ``n``
  times the step (the first throttled step of a hot instance waits up to
  ``n`` times longer than on one instance).

Outage
  While the shared state is unreachable the local bucket keeps its last share
  (conservative: each instance spends at most ``s*r`` plus its share of the
  level) and the ledger is dropped: those spends were bounded by the share and
  the fleet bucket refills meanwhile. When it returns the next sync resets every
  share from the fleet level (resync).

Pure: no I/O, no clock; ``now`` is the caller's monotonic seconds.
"""

from __future__ import annotations

from concurproxy.control.budgets.bucket import TokenBucket
from concurproxy.control.budgets.decision import BucketKey


class SpendLedger:
    """Net tokens taken per bucket since the last `take` (negative: more given back than taken)."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent: dict[BucketKey, float] = {}

    def add(self, key: BucketKey, amount: float) -> None:
        self.spent[key] = self.spent.get(key, 0.0) + amount

    def take(self) -> dict[BucketKey, float]:
        out, self.spent = self.spent, {}
        return out

    def pending(self, key: BucketKey) -> float:
        return self.spent.get(key, 0.0)


def apply_share(
    bucket: TokenBucket, tokens_per_min: float, fleet_level: float, share: float, pending: float, now: float
) -> None:
    """Make ``bucket`` this instance's ``share`` of a fleet bucket at ``fleet_level``.

    ``pending``: tokens this instance took since the ledger was read for the sync that returned
    ``fleet_level`` (not in that level yet, already out of the local bucket)."""
    bucket.capacity = tokens_per_min * share
    bucket.rate = tokens_per_min / 60.0 * share
    bucket.level = min(bucket.capacity, fleet_level * share) - pending
    bucket.updated = now
