"""The replica pool: the set of replicas, their health checker, and model discovery.

The health checker runs one loop for the whole pool: every ``interval_s`` it
checks all replicas concurrently (``GET /health`` and, when that succeeds,
``GET /v1/models`` to learn what each serves). State changes are logged and
reported to listeners (metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import aiohttp
import orjson

from concurproxy.config.server import HealthCheckConfig
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.upstream")

HealthListener = Callable[[Replica, bool], None]


class ReplicaPool:
    def __init__(self, replicas: Iterable[Replica], health: HealthCheckConfig) -> None:
        self._replicas: dict[str, Replica] = {}
        for r in replicas:
            if r.id in self._replicas:
                raise ValueError(f"two upstreams share the id {r.id!r}; give them distinct names")
            self._replicas[r.id] = r
        self.health_cfg = health
        self._listeners: list[HealthListener] = []
        self._task: asyncio.Task[None] | None = None
        self._models_set: frozenset[str] | None = None
        self._refresh_models()
        self.panic = False  # the last `available` call ignored health (see there)
        self.panic_steps = 0  # calls of `available` that did (a step's attempt each)

    # --- membership -------------------------------------------------------------
    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._replicas.values())

    def __len__(self) -> int:
        return len(self._replicas)

    def get(self, replica_id: str) -> Replica | None:
        return self._replicas.get(replica_id)

    def available(self, model: str | None = None) -> list[Replica]:
        """The replicas a step for ``model`` may go to: healthy, not draining, serving it. In *panic*
        (fewer than ``panic_threshold`` of the non-draining replicas serving it are healthy) all of
        those, health ignored, as Envoy does: health checks are a guess, and when most of a fleet
        (or its one replica) looks down, sending to it loses at most the attempt, while refusing
        loses every step for certain. A flapping check under load is the common case (a busy CPU
        engine answering /health late). A replica whose last failure was a connection nobody
        accepted (refused, no route) is down for certain and stays out: its steps would otherwise
        wait in its admission queue for pressure data that cannot come, then fail."""
        # Replica.available and Replica.serves, inlined (per step, per replica: two calls less each)
        serving = [
            r
            for r in self._replicas.values()
            if not r.draining and (model is None or not r.models or model in r.models)
        ]
        healthy = [r for r in serving if r.healthy]
        if (len(healthy) == len(serving) and not self.panic) or not self._panics(len(healthy), len(serving)):
            return healthy  # (the first test: every step of a healthy fleet, without a call)
        self.panic_steps += 1
        return [r for r in serving if r.healthy or not r.unreachable]

    def usable(self, replica: Replica) -> bool:
        """Whether a step may go to ``replica`` by name (the replica holding a stored response): it is
        available, or the pool is in panic and it is not draining."""
        if replica.available:
            return True
        if replica.draining or replica.unreachable:
            return False
        serving = [r for r in self._replicas.values() if not r.draining]
        return self._panics(sum(r.healthy for r in serving), len(serving))

    def _panics(self, healthy: int, serving: int) -> bool:
        """Whether ``healthy`` of ``serving`` replicas is below the panic threshold; logs each change."""
        panic = healthy < serving and healthy < self.health_cfg.panic_threshold * serving
        if panic != self.panic:
            self.panic = panic
            if panic:
                log.warning(
                    "panic routing: %d of %d replicas healthy (< %g): steps go to all of them, health ignored",
                    healthy, serving, self.health_cfg.panic_threshold,
                )  # fmt: skip
            else:
                log.info("routing by health again: %d of %d replicas healthy", healthy, serving)
        return panic

    def any_available(self) -> bool:
        return any(r.available for r in self._replicas.values())

    def models(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self._replicas.values():
            for m in r.models:
                seen.setdefault(m, None)
        return list(seen)

    def knows_model(self, model: str) -> bool | None:
        """True/False when every replica has reported its models; None when unknown."""
        known = self._models_set
        return None if known is None else model in known

    def _refresh_models(self) -> None:
        # Read on every step, changed only by membership and model discovery: recompute there.
        lists = [r.models for r in self._replicas.values()]
        self._models_set = None if any(not m for m in lists) else frozenset(x for m in lists for x in m)

    def add(self, replica: Replica) -> None:
        if replica.id in self._replicas:
            raise ValueError(f"replica {replica.id!r} already in the pool")
        self._replicas[replica.id] = replica
        self._refresh_models()

    def remove(self, replica_id: str) -> Replica | None:
        """Take a replica out of the pool; steps already on it keep their reference and finish."""
        gone = self._replicas.pop(replica_id, None)
        self._refresh_models()
        return gone

    def add_listener(self, fn: HealthListener) -> None:
        self._listeners.append(fn)

    # --- health -------------------------------------------------------------------
    def mark_failure(self, replica: Replica, error: str, unreachable: bool = False) -> None:
        """A failed check or attempt; ``unreachable``: no connection was accepted (kept out of panic routing)."""
        if replica.record_failure(error, self.health_cfg.unhealthy_after, unreachable):
            log.warning("replica %s out of rotation: %s", replica.id, error)
            self._notify(replica, False)

    def mark_answered(self, replica: Replica) -> None:
        """Passive health: the replica answered a request, so the failures counted so far were not
        consecutive. It does not put a replica back (only a health check does): a loaded engine whose
        /health answers late twice between its answers stays in rotation."""
        replica.consecutive_failures = 0
        replica.unreachable = False

    def mark_success_check(self, replica: Replica) -> None:
        if replica.record_success(self.health_cfg.healthy_after):
            log.info("replica %s back in rotation", replica.id)
            self._notify(replica, True)

    def _notify(self, replica: Replica, healthy: bool) -> None:
        for fn in self._listeners:
            fn(replica, healthy)

    async def check_once(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._check(session, r) for r in self._replicas.values()))

    async def _check(self, session: aiohttp.ClientSession, r: Replica) -> None:
        timeout = aiohttp.ClientTimeout(total=self.health_cfg.timeout_s)
        try:
            async with session.get(r.base_url + self.health_cfg.path, timeout=timeout) as resp:
                await resp.read()
                if resp.status >= 500:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            if not r.models or not r.healthy:
                async with session.get(r.base_url + "/v1/models", timeout=timeout) as resp:
                    if resp.status == 200:
                        data = orjson.loads(await resp.read())
                        ids = tuple(m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
                        if ids and ids != r.models:
                            r.models = ids
                            self._refresh_models()
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, OSError) as exc:
            unreachable = isinstance(exc, aiohttp.ClientConnectorError)  # refused, no route: nothing listens
            self.mark_failure(r, f"health check: {type(exc).__name__}: {exc}"[:200], unreachable)
            return
        self.mark_success_check(r)

    async def run_health_checks(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.check_once(session)
            await asyncio.sleep(self.health_cfg.interval_s)

    def start(self, session: aiohttp.ClientSession) -> None:
        self._task = asyncio.create_task(self.run_health_checks(session), name="health-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
