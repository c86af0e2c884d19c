"""Label-value guards that keep metric cardinality bounded.

Client-supplied values (role header, route path) must never create unbounded
time series. A :class:`BoundedLabel` passes through values it already knows
(declared from the policy, e.g. configured roles and tenants) plus the first
``max_new`` values it sees, and maps everything else to ``"other"``.

Concurrency: called from the event loop only (single-threaded); the set only
shrinks by :meth:`BoundedLabel.forget` (a replica that left the pool), so a value's
mapping never changes while it is in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum

OTHER = "other"
UNKNOWN = "unknown"
_SAFE = re.compile(r"^[A-Za-z0-9_.:/\-]{1,64}$")


def label_value(value: object) -> str:
    """Turn a label argument into its string: enums give their ``.value``, None gives ``"unknown"``."""
    if value is None:
        return UNKNOWN
    if isinstance(value, Enum):
        value = value.value
    return str(value)


class BoundedLabel:
    """Maps raw values to at most ``len(known) + max_new + 1`` distinct label values.

    ``bound(v)`` is ``v`` if ``v`` is known or among the first ``max_new`` new,
    well-formed values (``[A-Za-z0-9_.:/-]{1,64}``); otherwise ``"other"``.
    """

    __slots__ = ("_allowed", "_max_new", "_new")

    def __init__(self, known: Iterable[str] = (), max_new: int = 32) -> None:
        self._allowed: set[str] = {OTHER, UNKNOWN, *(str(k) for k in known)}
        self._max_new = max_new
        self._new = 0

    def declare(self, values: Iterable[str]) -> None:
        """Add values that are always allowed (configured tenants, roles, replicas)."""
        self._allowed.update(str(v) for v in values)

    def forget(self, value: str) -> None:
        """Drop a declared value that is gone for good (a replica that left), so churn does not grow the set."""
        if value not in (OTHER, UNKNOWN):
            self._allowed.discard(value)

    def bound(self, value: object) -> str:
        s = label_value(value)
        if s in self._allowed:
            return s
        if self._new < self._max_new and _SAFE.match(s):
            self._new += 1
            self._allowed.add(s)
            return s
        return OTHER

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._allowed)
