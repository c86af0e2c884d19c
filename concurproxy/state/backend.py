"""The state-backend protocol and the in-process (single instance) implementation.

The shared-state seam of the request path is deliberately small: the only
fleet-wide decisions are "may this NEW agent take a slot on replica R"
(``claim``), "what is my share of R's window" (``share``) and "agent A is now
pinned to R" (``publish_pin``). Everything else stays in the pure local cores,
which the backend steers by capping their windows and feeding their pin tables.

``MemoryState`` is the default: one instance owns the whole window, every
claim succeeds, pins are local. The proxy does not even build it on the memory
path (``assembly`` wires a backend only for ``state.backend: redis``); it is
here so that code written against ``StateBackend`` runs unchanged with one
instance, and as the reference semantics in tests.
"""

from __future__ import annotations

from typing import Protocol

from concurproxy.state.share import ReplicaShare


class StateBackend(Protocol):
    @property
    def connected(self) -> bool:
        """True while shared state is reachable (False: degraded to local state)."""
        ...

    def share(self, replica: str) -> ReplicaShare:
        """This instance's view of ``replica``'s fleet-wide window (mutated by the sync loop)."""
        ...

    async def claim(self, replica: str, agent: str, window: int) -> bool:
        """Take (or renew) ``agent``'s lease on ``replica`` if fewer than ``window`` leases are live.

        Never raises on a backend failure: an unreachable backend answers True
        (the local, degraded cap already bounds admission)."""
        ...

    def publish_pin(self, agent: str, replica: str | None) -> None:
        """Share ``agent``'s pin (None: released). Non-blocking; written off the request path."""
        ...


class MemoryState:
    """One instance, no sharing: the whole window is local, claims always succeed."""

    def __init__(self) -> None:
        self._shares: dict[str, ReplicaShare] = {}

    @property
    def connected(self) -> bool:
        return True

    def share(self, replica: str) -> ReplicaShare:
        s = self._shares.get(replica)
        if s is None:
            s = self._shares[replica] = ReplicaShare(replica, connected=True)
        return s

    async def claim(self, replica: str, agent: str, window: int) -> bool:
        return True

    def publish_pin(self, agent: str, replica: str | None) -> None:
        return None
