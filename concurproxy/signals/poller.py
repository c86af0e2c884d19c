"""Async shell: poll each replica's pressure source on an interval and keep its latest snapshot.

Sources
    ``engine-metrics`` — the engine's Prometheus ``/metrics`` (vLLM, older vLLM, SGLang), parsed by
    :func:`parse_engine_metrics` and folded into a :class:`PressureTracker` (rates from counter deltas).
    ``node-agent``     — a node agent's ``GET /pressure`` JSON (:mod:`concurproxy.signals.feed`),
    re-stamped on this process's clock from the feed's ``age_s``.

Sampling
    Each replica has its own loop, scheduled at a fixed rate of one read per ``interval_s``
    (a read that overruns starts the next at once), so a slow replica never delays the others.
    Each read has a ``timeout_s`` (default: ``stale_after_s`` — a slower answer would be stale
    anyway). Every read — success or failure — goes through the tracker, then
    ``on_snapshot(replica_id, snapshot)`` is called (sync or async) so the admission control
    loop can react per poll. ``latest(replica_id)`` applies the staleness rule at call time:
    failing or stale data is ``ok=False`` (counts as saturated).

Clock
    Snapshot times come from the injected ``clock`` (``time.monotonic`` by default), the same clock
    the admission core uses for ``now``. Only the sleep between rounds uses the event loop's timer.

Concurrency
    One event loop; the poll task is the only writer of the trackers. ``latest`` may be called from
    any coroutine on the same loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.engine_metrics import MetricsParseError, parse_engine_metrics
from concurproxy.signals.feed import SOURCE as FEED_SOURCE
from concurproxy.signals.feed import FeedError, snapshot_from_feed
from concurproxy.signals.pressure import PressureTracker

log = logging.getLogger(__name__)

SourceKind = Literal["engine-metrics", "node-agent"]
SnapshotHook = Callable[[str, PressureSnapshot], Awaitable[None] | None]


class PollError(Exception):
    """The source answered, but not with something usable (e.g. a non-200 status)."""


@dataclass(frozen=True, slots=True)
class PollTarget:
    url: str
    kind: SourceKind = "engine-metrics"

    @classmethod
    def from_url(cls, url: str) -> PollTarget:
        """A URL whose path ends in ``/pressure`` is a node agent feed; anything else is ``/metrics``."""
        kind: SourceKind = "node-agent" if urlsplit(url).path.rstrip("/").endswith("/pressure") else "engine-metrics"
        return cls(url, kind)


@dataclass(slots=True)
class PollStats:
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_latency_s: float | None = None


class PressurePoller:
    """Keeps the latest :class:`PressureSnapshot` per replica. Use ``async with`` or ``start()/stop()``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        targets: Mapping[str, str | PollTarget],
        interval_s: float = 0.25,
        timeout_s: float | None = None,
        *,
        stale_after_s: float = 1.0,
        rate_window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_snapshot: SnapshotHook | None = None,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self._session = session
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else stale_after_s
        self._stale_after_s = stale_after_s
        self._rate_window_s = rate_window_s
        self._clock = clock
        self.on_snapshot = on_snapshot
        self._targets: dict[str, PollTarget] = {}
        self._trackers: dict[str, PressureTracker] = {}
        self._stats: dict[str, PollStats] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self.hook_errors = 0
        for rid, target in targets.items():
            self.add_target(rid, target)

    # -- targets --------------------------------------------------------------------------------
    def add_target(self, replica_id: str, target: str | PollTarget) -> None:
        t = PollTarget.from_url(target) if isinstance(target, str) else target
        self._targets[replica_id] = t
        source = FEED_SOURCE if t.kind == "node-agent" else "engine-metrics"
        self._trackers[replica_id] = PressureTracker(self._stale_after_s, self._rate_window_s, source)
        self._stats[replica_id] = PollStats()
        if self._running:
            self._spawn(replica_id)

    def remove_target(self, replica_id: str) -> None:
        task = self._tasks.pop(replica_id, None)
        if task is not None:
            task.cancel()
        for d in (self._targets, self._trackers, self._stats):
            d.pop(replica_id, None)

    @property
    def replica_ids(self) -> list[str]:
        return list(self._targets)

    # -- reads ----------------------------------------------------------------------------------
    def latest(self, replica_id: str) -> PressureSnapshot | None:
        """Snapshot as of now (stale/failing → ``ok=False``); None for an unknown replica id."""
        tracker = self._trackers.get(replica_id)
        return None if tracker is None else tracker.snapshot_at(self._clock())

    def snapshots(self) -> dict[str, PressureSnapshot]:
        now = self._clock()
        return {rid: t.snapshot_at(now) for rid, t in self._trackers.items()}

    def stats(self, replica_id: str) -> PollStats | None:
        return self._stats.get(replica_id)

    # -- polling --------------------------------------------------------------------------------
    async def poll_once(self) -> dict[str, PressureSnapshot]:
        """Read every replica once, concurrently; return the resulting snapshots."""
        rids = list(self._targets)
        snaps = await asyncio.gather(*(self.poll_replica(rid) for rid in rids))
        return dict(zip(rids, snaps, strict=True))

    async def poll_replica(self, replica_id: str) -> PressureSnapshot:
        target, tracker = self._targets[replica_id], self._trackers[replica_id]
        stats = self._stats[replica_id]
        started = self._clock()
        try:
            snap = await self._read(target, tracker)
        except (
            aiohttp.ClientError,
            TimeoutError,
            PollError,
            MetricsParseError,
            FeedError,
            orjson.JSONDecodeError,
            UnicodeDecodeError,
        ) as exc:
            error = f"{target.url}: {type(exc).__name__}: {exc}".rstrip(": ")
            snap = tracker.observe_failure(self._clock(), error)
        stats.polls += 1
        stats.last_latency_s = self._clock() - started
        if snap.ok:
            stats.consecutive_failures = 0
        else:
            stats.failures += 1
            stats.consecutive_failures += 1
            stats.last_error = snap.error
        if self._trackers.get(replica_id) is tracker:  # not when the replica left during the read
            await self._notify(replica_id, snap)
        return snap

    async def _read(self, target: PollTarget, tracker: PressureTracker) -> PressureSnapshot:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with self._session.get(target.url, timeout=timeout) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise PollError(f"HTTP {resp.status}")
        received = self._clock()
        if target.kind == "node-agent":
            return tracker.observe_snapshot(snapshot_from_feed(orjson.loads(body), received))
        return tracker.observe(parse_engine_metrics(body.decode("utf-8"), received))

    async def _notify(self, replica_id: str, snap: PressureSnapshot) -> None:
        hook = self.on_snapshot
        if hook is None:
            return
        try:
            result = hook(replica_id, snap)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a consumer's bug must not stop pressure polling; counted and logged
            self.hook_errors += 1
            log.exception("on_snapshot hook failed for replica %s", replica_id)

    async def _run(self, replica_id: str) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while replica_id in self._targets:
            await self.poll_replica(replica_id)
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def _spawn(self, replica_id: str) -> None:
        old = self._tasks.get(replica_id)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._tasks[replica_id] = loop.create_task(self._run(replica_id), name=f"pressure-poll-{replica_id}")

    def start(self) -> None:
        """Start one polling task per replica (targets added later get theirs at once)."""
        if not self._running:
            self._running = True
            for rid in self._targets:
                self._spawn(rid)

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> PressurePoller:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
