"""Guaranteed shares of a replica's admission window, by role (``roles.*.window_share``).

Algorithm (partitioned limits, as in Netflix concurrency-limits' partitions):

* A role with ``window_share = s`` is guaranteed ``g = max(1, floor(s × W))``
  slots of a window of ``W`` agents; roles without a share are guaranteed 0.
  Unknown role names count as ``default`` (the budgets' rule), so a client
  cannot claim a share by inventing a role.
* **Burst**: while nobody below its guarantee waits, any role may take free
  slots, above its share (work-conserving: an unused guarantee reserves nothing).
* **Reclaim**: when a step of a role below its guarantee waits and the window
  is full (by count, or by the footprint budget), a *burst* agent — one beyond the oldest ``g`` agents of its role —
  gives its slot back: the newest idle one at once, else the newest running one
  when its current step ends (never mid-step). Below-guarantee waiters are
  served before the rest of the queue.
* **Shrink**: when the window shrinks, agents within their role's guarantee are
  ranked before burst agents, so the over-window agents paused are burst ones.

Σ g may exceed W when small windows meet many shares (the ``max(1, …)``); then
a role at its guarantee is never a reclaim victim, so guarantees are honoured
in admission order and reclaim cannot loop.

Pure: plain data in, decisions out; single caller.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from concurproxy.config.budgets import RoleConfig

DEFAULT_ROLE = "default"


class SlotHolder(Protocol):
    @property
    def agent_id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def running(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WindowShares:
    shares: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    roles: frozenset[str] = frozenset()  # every configured role name (with or without a share)

    @classmethod
    def from_roles(cls, roles: Mapping[str, RoleConfig]) -> WindowShares:
        shares = {name: r.window_share for name, r in roles.items() if r.window_share is not None}
        return cls(MappingProxyType(shares), frozenset(roles))

    def __bool__(self) -> bool:
        return bool(self.shares)

    def key(self, role: str) -> str:
        """The role whose share applies (itself when configured, else ``default``)."""
        return role if role in self.roles else DEFAULT_ROLE

    def guaranteed(self, key: str, window: int) -> int:
        share = self.shares.get(key)
        return 0 if share is None else max(1, math.floor(share * window + 1e-9))

    def counts(self, agents: Iterable[SlotHolder]) -> Counter[str]:
        return Counter(self.key(a.role) for a in agents)

    def below(self, role: str, counts: Mapping[str, int], window: int) -> bool:
        """True when ``role`` holds fewer slots than it is guaranteed."""
        key = self.key(role)
        return counts.get(key, 0) < self.guaranteed(key, window)

    def split(self, agents: Sequence[SlotHolder], window: int) -> tuple[list[SlotHolder], list[SlotHolder]]:
        """(within guarantee, burst): each role's oldest ``g`` agents, then the rest; admission order within."""
        seen: Counter[str] = Counter()
        inside: list[SlotHolder] = []
        burst: list[SlotHolder] = []
        for a in agents:
            key = self.key(a.role)
            seen[key] += 1
            (inside if seen[key] <= self.guaranteed(key, window) else burst).append(a)
        return inside, burst

    def rank(self, agents: Sequence[SlotHolder], window: int) -> list[SlotHolder]:
        """Agents in keep-first order (the window keeps the first ``W``)."""
        inside, burst = self.split(agents, window)
        return inside + burst

    def reclaim_victim(self, agents: Sequence[SlotHolder], window: int) -> SlotHolder | None:
        """The burst agent (``agents`` in admission order) to give its slot back: the newest
        idle one, else the newest running one; None when every agent is within its guarantee."""
        burst = self.split(agents, window)[1]
        idle = [a for a in burst if a.running == 0]
        pool = idle or burst
        return pool[-1] if pool else None
