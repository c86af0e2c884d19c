"""The admission gate of the windows of agents: the pure `AdmissionCore` made awaitable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from concurproxy.config.admission import AdmissionConfig
from concurproxy.config.models import Policy
from concurproxy.control.admission.core import AdmissionCore
from concurproxy.control.admission.events import EventKind
from concurproxy.control.admission.tickets import Admitted, Queued, Rejected, Ticket
from concurproxy.control.types import PressureSnapshot, StepInfo, StepOutcome
from concurproxy.decision import configure_admission
from concurproxy.server.admission.errors import AdmissionRejected, AdmissionTimeout, ReplicaLeft
from concurproxy.server.admission.gate import AdmissionTicket
from concurproxy.server.admission.listener import AdmissionListener

if TYPE_CHECKING:
    from concurproxy.server.step import StepContext

log = logging.getLogger(__name__)

_SOURCE_WORDS = {
    "kv": "its KV-cache pressure",
    "stale": "nothing: its KV signal went stale, new agents wait",
    "latency": "its step latency (no usable KV signal)",
    "static": "a fixed window",
}


class WindowGate:
    """The `AdmissionGate` of per-replica windows of agents: owns the ``AdmissionCore`` and makes it awaitable.

    * ``acquire(ctx)`` → the step's `AdmissionTicket`; entering it admits a step of an admitted
      agent at once (no await: ``_enter``); a new agent's step waits on an ``asyncio.Future``
      resolved when ``grant`` admits it (a slot opened, the window grew, fresh pressure arrived,
      anti-starvation). Queue full → ``AdmissionRejected`` (429). Waiting past
      ``max_queue_wait_s`` → ``AdmissionTimeout`` (503). Both carry Retry-After. Cancelling the
      waiting task removes the step from the queue; a grant that raced with the cancel is ended as
      ``cancelled`` so no slot leaks. ``admit(step, replica)`` is the same without a context.
    * ``on_pressure(replica, snapshot)`` — the pressure poller's hook: one
      controller update, then waiters are granted if the window allows.
    * ``tick()`` — housekeeping: idle-TTL expiry, waiter timeouts, grants (time
      alone can unblock: anti-starvation). ``run()`` calls it periodically;
      ``on_pressure`` calls it too, so a running poller is enough.

    Clock: ``clock()`` (injected; ``time.monotonic`` by default, the poller's
    clock) gives every ``now``; no correctness depends on event-loop time, so
    tests drive it with a fake clock and ``tick``. Concurrency: one event loop;
    every method runs on it without awaiting in between, so the core needs no
    locks.
    """

    def __init__(
        self,
        core: AdmissionCore,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[AdmissionListener] = (),
    ) -> None:
        self.core = core  # the decision core's (``DecisionCore.admission``)
        self.config: AdmissionConfig = core.config
        self.clock = clock
        self.listeners: list[AdmissionListener] = list(listeners)
        self.listener_errors = 0
        self._waiting: dict[int, tuple[str, asyncio.Future[Admitted]]] = {}
        self._log = self.core.log  # the core's decision events, drained by ``_flush``
        self._timer: asyncio.TimerHandle | None = None  # a tick at the core's next deadline
        self._timer_at = 0.0

    @classmethod
    def for_config(
        cls,
        config: AdmissionConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[AdmissionListener] = (),
    ) -> WindowGate:
        """A gate on a core of its own with FIFO queues (tests, tools); the proxy's comes from its DecisionCore."""
        return cls(AdmissionCore(config or AdmissionConfig()), clock=clock, listeners=listeners)

    # ---- control loop -----------------------------------------------------------------
    def on_pressure(self, replica: str, snapshot: PressureSnapshot | None, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.core.on_pressure(replica, snapshot, now)
        self.tick(now)

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for replica, result in self.core.expire(now).items():
            for to in result.waiters:
                entry = self._waiting.pop(to.waiter_id, None)
                if entry is not None and not entry[1].done():
                    err = AdmissionTimeout(to.retry_after_s, replica=replica, waited_s=to.waited_s)
                    entry[1].set_exception(err)
        for replica in self.core.replicas:
            self._grant(replica, now)
        self._flush()
        self._arm()

    def _arm(self) -> None:
        """Tick at the core's next deadline (an idle agent turning dormant while steps wait), so a freed
        slot is granted then, not at the next periodic tick. One timer; moved only to an earlier time."""
        if not self._waiting:
            return
        now = self.clock()
        deadline = self.core.deadline(now)  # after now; a passed one, re-armed at once, would spin the loop
        if deadline is None or deadline <= now or (self._timer is not None and self._timer_at <= deadline):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop (tests driving tick by hand)
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.tick()

    async def run(self, interval_s: float | None = None) -> None:
        """Call ``tick`` every ``interval_s`` (default: the AIMD interval) until cancelled."""
        period = interval_s if interval_s is not None else self.config.aimd.interval_ms / 1000.0
        while True:
            self.tick()
            await asyncio.sleep(period)

    # ---- request path -----------------------------------------------------------------
    def acquire(self, ctx: StepContext) -> AdmissionTicket:
        replica = ctx.replica
        assert replica is not None
        return AdmissionTicket(self, ctx.step, replica.id, ctx)

    async def admit(self, step: StepInfo, replica: str) -> AdmissionTicket:
        """``step``'s ticket on ``replica``, entered (waits like ``acquire``): for callers without a context."""
        return await AdmissionTicket(self, step, replica).__aenter__()

    def _enter(self, t: AdmissionTicket) -> bool:
        """Admit at once (True), queue (False: ``_wait`` follows) or raise ``AdmissionRejected``."""
        now = self.clock()
        result = self.core.try_admit(t.step, t.replica, now)
        if type(result) is Admitted:
            t.core = result.ticket
            self._flush()
            return True
        if isinstance(result, Rejected):
            self._flush()
            raise AdmissionRejected(result.retry_after_s, reason=result.reason, replica=t.replica)
        assert isinstance(result, Queued)
        fut: asyncio.Future[Admitted] = asyncio.get_running_loop().create_future()
        self._waiting[result.waiter_id] = (t.replica, fut)
        t.waiter = (result.waiter_id, fut)
        self._grant(t.replica, now)  # the queue may be able to move right away
        self._flush()
        self._arm()
        return False

    async def _wait(self, t: AdmissionTicket) -> None:
        """The queued step's grant (``_enter`` returned False)."""
        replica, (waiter, fut) = t.replica, t.waiter
        try:
            admitted = await fut
        except asyncio.CancelledError:
            self._waiting.pop(waiter, None)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.end_ticket(fut.result().ticket, StepOutcome.cancelled)  # granted as we were cancelled
            elif self.core.cancel_wait(replica, waiter, self.clock()):
                self._grant(replica, self.clock())  # a blocked head leaving may unblock the queue
                self._flush()
            raise
        finally:
            t.waiter = None
        t.core = admitted.ticket
        t.queue_wait_s = admitted.waited_s

    def _end(self, ticket: Ticket, outcome: StepOutcome, prompt: int, output: int, release: bool) -> bool:
        """End a core ticket (the ticket's exit, once per step: positional, no keyword passing)."""
        now = self.clock()
        core = self.core
        first = core.end(ticket, outcome, now, prompt_tokens=prompt, output_tokens=output, release=release)
        if core.has_waiters(ticket.replica):  # (checked here too: one call less per step)
            self._grant(ticket.replica, now)
            self._arm()  # its agent went idle: it may turn dormant while steps wait
        self._flush()
        return first

    def end_ticket(
        self,
        ticket: Ticket,
        outcome: StepOutcome,
        *,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        release: bool = False,
    ) -> bool:
        return self._end(ticket, outcome, prompt_tokens, output_tokens, release)

    def reconfigure(self, policy: Policy) -> None:
        """A reload: the policy's role shares and tenant weights (``configure_admission``); waiters they
        unblock are granted."""
        now = self.clock()
        configure_admission(self.core, policy, now)
        for replica in self.core.replicas:
            self._grant(replica, now)
        self._flush()

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool (``server/membership.py``): its window is dropped (see
        ``AdmissionCore.forget_replica``) and the steps waiting there get a 503 with Retry-After at once,
        so their clients retry on the replicas that remain, rather than waiting out ``max_queue_wait_s``."""
        for waiter_id in self.core.forget_replica(replica, self.clock()):
            entry = self._waiting.pop(waiter_id, None)
            if entry is not None and not entry[1].done():
                entry[1].set_exception(ReplicaLeft(replica))
        self._flush()

    def release_agent(self, agent_id: str) -> bool:
        """The agent finished (``DELETE /v1/agents/{id}``): free its slot."""
        now = self.clock()
        released = self.core.release_agent(agent_id, now)
        if released:
            for replica in self.core.replicas:
                self._grant(replica, now)
        self._flush()
        return released

    # ---- internals --------------------------------------------------------------------
    def _grant(self, replica: str, now: float) -> None:
        if not self.core.has_waiters(replica):  # only waiters can be granted: skip the pass
            return
        for g in self.core.grant(replica, now):
            entry = self._waiting.pop(g.waiter_id, None)
            if entry is None or entry[1].done():  # the waiter is gone: give the slot's step back
                self.core.end(g.admitted.ticket, StepOutcome.cancelled, now)
                continue
            entry[1].set_result(g.admitted)

    def _flush(self) -> None:
        pending = self._log
        events = pending.events
        if not events:
            return
        pending.events = []  # always drained, listeners or not: no growth
        for e in events:
            if e.kind is EventKind.source:  # rare: once per replica and change of signal
                log.info(
                    "replica %s: window now led by %s (%s)", e.replica, _SOURCE_WORDS.get(e.reason, e.reason), e.reason
                )
        for listener in self.listeners:
            for e in events:
                try:
                    listener.on_admission_event(e)
                except Exception:  # a broken metrics listener must not break admission: count, log once
                    self.listener_errors += 1
                    if self.listener_errors == 1:
                        log.exception("admission listener %r failed (further failures are counted)", listener)

    # ---- introspection ----------------------------------------------------------------
    def waiting(self) -> int:
        return len(self._waiting)

    def window_room(self, replica: str) -> tuple[int, int] | None:
        """(free slots, window) of a replica, for the router's window-room scorer."""
        w = self.core.window(replica)
        return max(0, w.window - w.active), w.window

    def state(self) -> dict[str, Any]:
        """JSON-ready live state for ``GET /admin/state`` (see docs/admission.md)."""
        now = self.clock()
        return {
            "controller": self.config.controller,
            "now": now,
            "waiting_steps": len(self._waiting),
            "listener_errors": self.listener_errors,
            "replicas": {r: s.to_dict() for r, s in self.core.state(now).items()},
        }
