"""DNS discovery of replicas behind a headless service (one A record per replica).

``discovery: {dns: vllm.inference.svc.cluster.local, port: 8000}``: every ``interval_s`` the
name is resolved; an address that appears becomes a replica ``ADDRESS:PORT`` at once (it starts
with an empty cache and the most headroom, so the router gives it new agents first); one that
is missing from ``remove_after`` answers in a row leaves the pool, and its agents are re-pinned
on their next step (``replica-down``). A failed or empty lookup changes nothing: a DNS outage
must not empty the pool.

*Resolver*: a one-method protocol, ``await resolve(name) -> frozenset[str]``.
:class:`SystemResolver` asks the OS (``getaddrinfo`` through the event loop: ``/etc/hosts``,
then cluster DNS), IPv4 only. Tests inject their own. *Membership* is pure (answers in,
joins/leaves out); :class:`DnsDiscovery` is the shell that runs the loop on the proxy's event
loop and hands joins and leaves to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from concurproxy.config.server import DnsDiscoveryConfig, KvEventsSource, UpstreamConfig
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.upstream")


class Resolver(Protocol):
    async def resolve(self, name: str) -> frozenset[str]:
        """The name's addresses; raises OSError when the lookup fails."""
        ...


class SystemResolver:
    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family

    async def resolve(self, name: str) -> frozenset[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, family=self.family, type=socket.SOCK_STREAM)
        return frozenset(str(info[4][0]) for info in infos)


@dataclass
class Membership:
    """Members from successive answers: join at once, leave after ``remove_after`` misses in a row."""

    remove_after: int = 2
    members: set[str] = field(default_factory=set)
    _misses: dict[str, int] = field(default_factory=dict)

    def update(self, answer: frozenset[str] | None) -> tuple[list[str], list[str]]:
        """``(joined, left)`` after one answer; ``None`` (lookup failed) or empty changes nothing."""
        if not answer:
            return [], []
        joined = sorted(answer - self.members)
        self.members |= answer
        left = []
        for addr in sorted(self.members - answer):
            n = self._misses[addr] = self._misses.get(addr, 0) + 1
            if n >= self.remove_after:
                left.append(addr)
        for addr in answer:
            self._misses.pop(addr, None)
        for addr in left:
            self.members.discard(addr)
            del self._misses[addr]
        return joined, left


class DnsDiscovery:
    def __init__(
        self,
        cfg: DnsDiscoveryConfig,
        resolver: Resolver,
        on_join: Callable[[Replica], None],
        on_leave: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.resolver = resolver
        self.on_join = on_join
        self.on_leave = on_leave
        self.membership = Membership(cfg.remove_after)
        self.lookups = 0
        self.failures = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def replica_id(self, addr: str) -> str:
        return f"{addr}:{self.cfg.port}"

    def replica_for(self, addr: str) -> Replica:
        cfg = self.cfg
        kv = KvEventsSource(endpoint=f"tcp://{addr}:{cfg.kv_events_port}") if cfg.kv_events_port else None
        up = UpstreamConfig.model_validate(
            {
                "url": f"{cfg.scheme}://{addr}:{cfg.port}",
                "name": self.replica_id(addr),
                "api_key": cfg.api_key,
                "metrics_path": cfg.metrics_path,
                "kv_events": kv,
                "priority_scheduling": cfg.priority_scheduling,
            }
        )
        replica = Replica.from_config(up)
        replica.discovered = True
        return replica

    async def refresh(self) -> None:
        """One lookup, and the joins and leaves it implies."""
        self.lookups += 1
        answer: frozenset[str] | None
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                answer = await self.resolver.resolve(self.cfg.dns)
        except (OSError, TimeoutError) as exc:  # socket.gaierror is an OSError
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("discovery: resolving %s failed, keeping the pool: %s", self.cfg.dns, self.last_error)
            answer = None
        else:
            self.last_error = None if answer else "empty answer"
        joined, left = self.membership.update(answer)
        for addr in left:
            self.on_leave(self.replica_id(addr))
        for addr in joined:
            self.on_join(self.replica_for(addr))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            await self.refresh()

    async def start(self) -> None:
        """First lookup now (before the first request), then every ``interval_s``."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="dns-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def state(self) -> dict[str, object]:
        return {
            "dns": self.cfg.dns,
            "members": sorted(self.membership.members),
            "lookups": self.lookups,
            "failures": self.failures,
            "last_error": self.last_error,
        }
