"""The fingerprint table: fingerprint → agent, bounded in size (LRU) and in age (TTL).

*Algorithm.* An ``OrderedDict`` in order of last use (a `put`, or a `get` that hits). An entry
expires ``ttl_s`` after its last use. Every entry has the same TTL, so last-use order is also
expiry order: expired entries are always at the front, and `sweep` pops them one by one until it
meets a live one (amortised O(1) per insert). Beyond ``max_entries`` the least recently used
entry goes. A `get` of an expired entry misses and removes it, so an entry older than the TTL is
never returned even between sweeps.

*Per-agent bound.* Each agent keeps at most ``keys_per_agent`` keys (its most recently used);
putting one more retires its oldest. An agent needs only its last few keys (the newest step's
prompt and answer, the previous answer for a retry, a few parallel branches), and without this
bound a burst of busy agents would push a paused agent's only useful key out of the LRU. So the
table holds at least ``max_entries / keys_per_agent`` agents.

*Defaults and why.* 200k entries and 30 minutes (`concurproxy.config.identity`): at 8 keys per
agent at least 25k agents, typically more (an agent between steps holds 2-4 keys); 30 minutes
outlasts long tool calls and human turns, and an agent silent for longer starts over as a new one,
which costs one admission, not a wrong result.

*Concurrency.* One event loop, no awaits inside: pure, ``now`` is an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class Entry:
    agent: str
    used: float  # last use; the entry expires at used + ttl
    answer: bytes | None = None  # a step's prompt key: the key of its first remembered answer


class SessionTable:
    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        keys_per_agent: int = 8,
        on_agent_gone: Callable[[str], None] | None = None,
    ) -> None:
        if max_entries < 1 or ttl_s <= 0 or keys_per_agent < 2:
            raise ValueError("max_entries >= 1, ttl_s > 0 and keys_per_agent >= 2 are required")
        self.max_entries, self.ttl_s, self.keys_per_agent = max_entries, ttl_s, keys_per_agent
        self.on_agent_gone = on_agent_gone  # an agent's last key left the table
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        # agent -> its keys, least recently used first (a list: a few keys; a deque costs ~600 bytes)
        self._keys: dict[str, list[bytes]] = {}
        self.evicted = self.expired = self.retired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def agents(self) -> Iterator[str]:
        return iter(self._keys)

    def keys_of(self, agent: str) -> tuple[bytes, ...]:
        return tuple(self._keys.get(agent, ()))

    def peek(self, key: bytes, now: float) -> Entry | None:
        """The live entry for ``key`` without counting it as a use."""
        e = self._entries.get(key)
        if e is None:
            return None
        if e.used + self.ttl_s <= now:
            self._drop(key, e)
            self.expired += 1
            return None
        return e

    def get(self, key: bytes, now: float) -> Entry | None:
        """The live entry for ``key``, refreshed (its TTL starts again)."""
        e = self.peek(key, now)
        if e is not None:
            self._touch(key, e, now)
        return e

    def put(self, key: bytes, agent: str, now: float) -> Entry:
        """Map ``key`` to ``agent`` (a key that changes agent loses its ``answer``)."""
        self.sweep(now)
        e = self._entries.get(key)
        if e is not None and e.agent == agent:
            self._touch(key, e, now)
            return e
        if e is not None:  # the key moves to another agent
            self._unlink(key, e.agent)
        e = self._entries[key] = Entry(agent, now)
        self._entries.move_to_end(key)
        keys = self._keys.setdefault(agent, [])
        keys.append(key)
        if len(keys) > self.keys_per_agent:
            old = keys.pop(0)
            del self._entries[old]
            self.retired += 1
        while len(self._entries) > self.max_entries:
            first, victim = next(iter(self._entries.items()))
            self._drop(first, victim)
            self.evicted += 1
        return e

    def sweep(self, now: float) -> None:
        """Drop the expired entries (all at the front, see the module docstring)."""
        entries = self._entries
        while entries:
            first, e = next(iter(entries.items()))
            if e.used + self.ttl_s > now:
                return
            self._drop(first, e)
            self.expired += 1

    def _touch(self, key: bytes, e: Entry, now: float) -> None:
        e.used = now
        self._entries.move_to_end(key)
        keys = self._keys[e.agent]
        if keys[-1] != key:
            keys.remove(key)
            keys.append(key)

    def _drop(self, key: bytes, e: Entry) -> None:
        del self._entries[key]
        self._unlink(key, e.agent)

    def _unlink(self, key: bytes, agent: str) -> None:
        keys = self._keys[agent]
        keys.remove(key)
        if not keys:
            del self._keys[agent]
            if self.on_agent_gone is not None:
                self.on_agent_gone(agent)
