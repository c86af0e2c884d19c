"""Redis-backed shared state: leases, the leader's window, peer count, shared pins.

Per step (hot path) the only Redis call is ``claim`` — one Lua script, one
round trip — and only when this instance admits an agent it did not hold
(its first step here, or after a pause). Steps of held agents cost nothing:
their leases are renewed in bulk by the sync loop, every ``sync_interval_s``,
in one pipeline (heartbeat + leader lock + one script per replica, and the
``parts`` that share budgets and fairness counters, see ``fleet_sync.py``). Pins are
written off the request path by a writer task and reach the other instances
by pub/sub (see ``pins.py``).

Outage: every call goes through a ``Breaker``. The first failure costs one
socket timeout, logs a warning, sets ``concurproxy_shared_state_connected``
to 0 and turns every share to the degraded rule (``ReplicaShare.cap``); while
the breaker is open no call is attempted. The next successful sync (after
``retry_after_s``) re-adds every lease this instance holds, re-reads the
window and the peer count, logs the recovery and flips the gauge back.

Concurrency: one event loop. The sync loop and the request path mutate the
shares between awaits only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from concurproxy.control.limits.base import WindowController
from concurproxy.state import scripts
from concurproxy.state.client import FAILURES, Breaker, cancelling, connect
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.fleet_sync import SyncPart
from concurproxy.state.pins import PinSync
from concurproxy.state.share import ReplicaShare, SharedWindowController

log = logging.getLogger("concurproxy.state")

HeldFn = Callable[[], Mapping[str, set[str]]]


class RedisState:
    def __init__(
        self,
        url: str,
        settings: SharedStateSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        self.url = url
        self.settings = settings or SharedStateSettings()
        self.clock = clock
        self._own_client = client is None
        self.client = client if client is not None else connect(url, self.settings.socket_timeout_s)
        self.breaker = Breaker(self.settings.retry_after_s)
        self.held: HeldFn = dict  # replica -> agents holding a slot here; set by the admission stage
        self.on_sync: Callable[[], None] | None = None  # e.g. grant waiters after the caps moved
        self.on_connected: list[Callable[[bool], None]] = []
        self.is_leader = False
        self.live_instances = 1
        self.claims = self.claims_denied = self.syncs = 0
        self._connected = False
        self._shares: dict[str, ReplicaShare] = {}
        self._controllers: dict[str, SharedWindowController] = {}
        self._renewed: dict[str, set[str]] = {}
        self._left: set[str] = set()  # replicas that left the pool, until a sync gave their leases back
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.parts: list[SyncPart] = []  # budgets, fairness counters: ride on the sync pipeline
        self._register()
        self.pins = PinSync(self)

    def _register(self) -> None:
        p = self.settings.key_prefix
        self.k_instances, self.k_leader = p + "instances", p + "leader"
        self._claim = self.client.register_script(scripts.CLAIM)
        self._sync = self.client.register_script(scripts.SYNC_REPLICA)
        self._beat = self.client.register_script(scripts.HEARTBEAT)
        self._leave = self.client.register_script(scripts.LEAVE)
        self.budget_script = self.client.register_script(scripts.BUDGETS)
        self.vtc_script = self.client.register_script(scripts.VTC)

    def configure(self, settings: SharedStateSettings) -> None:
        """Replace the timing settings before ``start`` (tests use short leases); keys and client stay."""
        self.settings = settings
        self.breaker.retry_after_s = settings.retry_after_s
        self.pins.ttl_s = settings.pin_ttl_s
        if self._own_client:  # not connected yet: a new client picks up the timeouts
            self.client = connect(self.url, settings.socket_timeout_s)
        self._register()

    # ---- StateBackend --------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def instance_id(self) -> str:
        return self.settings.instance_id

    def share(self, replica: str) -> ReplicaShare:
        s = self._shares.get(replica)
        if s is None:
            s = self._shares[replica] = ReplicaShare(replica, self._connected, live_instances=self.live_instances)
        return s

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool: its share and controller go now; its leases are given back at the
        next sync (this instance holds no agent there any more), after which nothing is kept for it."""
        self._shares.pop(replica, None)
        self._controllers.pop(replica, None)
        self._left.add(replica)
        for part in self.parts:
            part.forget_replica(replica)

    def wrap(self, replica: str, controller: WindowController) -> SharedWindowController:
        """The admission core's controller maker calls this once per replica."""
        self._left.discard(replica)  # (it came back)
        c = self._controllers[replica] = SharedWindowController(controller, self.share(replica))
        return c

    def k_leases(self, replica: str) -> str:
        return f"{self.settings.key_prefix}leases:{replica}"

    def k_owners(self, replica: str) -> str:
        return f"{self.settings.key_prefix}owners:{replica}"

    def k_window(self, replica: str) -> str:
        return f"{self.settings.key_prefix}window:{replica}"

    async def claim(self, replica: str, agent: str, window: int) -> bool:
        if not self.breaker.allow(self.clock()):
            return True
        lease_ms = int(self.settings.lease_s * 1000)
        try:
            ok = await self._claim(
                keys=[self.k_leases(replica), self.k_owners(replica)], args=[agent, window, lease_ms, self.instance_id]
            )
        except FAILURES as exc:
            self.failed(exc)
            return True
        self.succeeded()
        self.claims += 1
        if not ok:
            self.claims_denied += 1
            self.share(replica).others += 1  # somebody took the slot we saw free: shrink our cap now
            return False
        self._renewed.setdefault(replica, set()).add(agent)
        self.share(replica).mine.add(agent)
        self.pins.moved(agent)  # the other instances let go of the agent's local slot
        return True

    def publish_pin(self, agent: str, replica: str | None) -> None:
        self.pins.publish(agent, replica)

    # ---- health --------------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """Record a Redis failure (opens the breaker); a cancellation disguised as one is re-raised."""
        if cancelling():
            raise asyncio.CancelledError from exc
        if self.breaker.failed(self.clock()):
            log.warning(
                "shared state: redis unreachable (%s: %s); serving from local state, "
                "each instance capped at its share of the window",
                type(exc).__name__,
                exc,
            )
        self._set_connected(False)

    def succeeded(self) -> None:
        if self.breaker.succeeded():
            log.info("shared state: redis reachable again; resynchronising leases, window and pins")

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        for s in self._shares.values():
            s.connected = up
        for fn in self.on_connected:
            fn(up)

    # ---- sync loop -----------------------------------------------------------------------
    async def sync_once(self) -> bool:
        """Renew leases, publish (leader) / read the windows, count peers, sync the parts.
        False when Redis is down."""
        if not self.breaker.allow(self.clock()):
            for part in self.parts:
                part.failed()
            return False
        st = self.settings
        held = {r: set(a) for r, a in self.held().items()}
        replicas = sorted(set(self._shares) | set(held) | set(self._renewed))
        lease_ms, alive_ms = int(st.lease_s * 1000), int(st.leader_ttl_s * 1000)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                await self._beat(
                    keys=[self.k_instances, self.k_leader], args=[self.instance_id, alive_ms, alive_ms], client=pipe
                )
                for r in replicas:
                    mine = held.get(r, set())
                    gone = sorted(self._renewed.get(r, set()) - mine)
                    c = self._controllers.get(r)
                    publish = c.own_window if (self.is_leader and c is not None) else -1
                    args = [
                        lease_ms,
                        publish,
                        int(st.window_ttl_s * 1000),
                        self.instance_id,
                        len(gone),
                        *gone,
                        *sorted(mine),
                    ]
                    keys = [self.k_leases(r), self.k_window(r), self.k_owners(r)]
                    await self._sync(keys=keys, args=args, client=pipe)
                counts = [await part.enqueue(pipe) for part in self.parts]
                results = await pipe.execute()
        except FAILURES as exc:
            for part in self.parts:
                part.failed()
            self.failed(exc)
            return False
        self.succeeded()
        live, leader = results[0]
        self.live_instances, self.is_leader = max(1, int(live)), leader == self.instance_id
        at = 1 + len(replicas)
        for part, n in zip(self.parts, counts, strict=True):
            part.apply(results[at : at + n], self.live_instances)
            at += n
        for r, res in zip(replicas, results[1 : 1 + len(replicas)], strict=True):
            mine = held.get(r, set())
            if r in self._left:  # it left the pool: this sync gave its leases back
                if mine:  # (agents still seen there when the sync began: the next sync gives them back)
                    self._renewed[r] = mine
                else:
                    self._renewed.pop(r, None)
                continue
            self._renewed[r] = mine
            s = self.share(r)
            w = int(res[0])
            s.global_window = w if w >= 0 else None
            s.members = set(res[1:])
            s.mine = set(mine)
            s.others = len(s.members - mine)
            s.live_instances = self.live_instances
        self._left &= self._renewed.keys()  # nothing more to give back for the others
        self.syncs += 1
        self._set_connected(True)
        if self.on_sync is not None:
            self.on_sync()
        return True

    async def _run(self) -> None:
        while not self._stopped:
            await self.sync_once()
            await asyncio.sleep(self.settings.sync_interval_s)

    async def start(self) -> None:
        """First sync (so the first request sees the fleet), then the loops."""
        await self.sync_once()
        self._tasks = [
            asyncio.create_task(self._run(), name="shared-state-sync"),
            *self.pins.start(),
        ]

    async def stop(self, release: bool = True) -> None:
        """Stop the loops; with ``release`` give back leases and leadership (graceful shutdown).
        Idempotent: ``stop(release=False)`` simulates a crash in tests, the later stop is a no-op."""
        if self._stopped:
            return
        self._stopped = True  # the loops end at their next turn even if a cancel got swallowed
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(1.0, 2 * self.settings.socket_timeout_s))
        self._tasks = []
        if release and self.breaker.allow(self.clock()):
            keys, args = [self.k_instances, self.k_leader], [self.instance_id]  # type: list[str], list[str | int]
            for r, agents in self._renewed.items():
                keys.append(self.k_leases(r))
                args += [len(agents), *sorted(agents)]
            with contextlib.suppress(*FAILURES):
                await self._leave(keys=keys, args=args)
        await self.client.aclose()

    def state(self) -> dict[str, Any]:
        """JSON-ready view for /admin/state and tests."""
        return {
            "backend": "redis",
            "instance": self.instance_id,
            "connected": self._connected,
            "leader": self.is_leader,
            "live_instances": self.live_instances,
            "claims": self.claims,
            "claims_denied": self.claims_denied,
            "syncs": self.syncs,
            "replicas": {r: {"window": s.global_window, "others": s.others} for r, s in self._shares.items()},
            **{k: v for part in self.parts for k, v in part.view().items()},
        }
