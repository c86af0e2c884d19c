"""ProxyMetrics: the typed recording API the request path and control loop call.

Callers never touch label strings: each method takes the values it records, maps
them to bounded label values once, and caches the resulting collector child in a
dict keyed by the raw arguments. The per-step series (requests, latencies, tokens,
routing and admission decisions) are batched (:mod:`~concurproxy.telemetry.batch`):
the request path adds to plain dicts and :meth:`ProxyMetrics.flush`, the first
refresher of every collection, applies the sums, so scrapes read exact values.

Collectors are built from :data:`concurproxy.telemetry.catalog.SPECS` into the
registry passed in (never the global one), so every test gets a fresh registry.

Replicas that leave (:meth:`ProxyMetrics.forget_replica`) take every series with their
``replica`` label with them; samples that still arrive for them (a step that was running
there ends, a pressure read in flight) go to an unexported child for a while, so they do
not bring a frozen series back.

Concurrency: methods are called from the event loop thread; prometheus_client
children are themselves thread-safe, and the caches only grow (bounded by the
label guards) until a replica is forgotten, so a scrape from another thread
sees consistent values.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from concurproxy.control.admission.gate import IDLE_CAUSES
from concurproxy.control.types import PressureSnapshot
from concurproxy.telemetry.batch import PendingCounter, PendingHistogram
from concurproxy.telemetry.catalog import SPECS, MetricSpec
from concurproxy.telemetry.family import Family
from concurproxy.telemetry.labels import BoundedLabel

__all__ = ["SPECS", "ProxyMetrics"]

NONE_REPLICA = "none"  # replica label for steps refused before routing
_PRESSURE_GAUGES = (
    "concurproxy_pressure_kv_usage_ratio",
    "concurproxy_pressure_running_requests",
    "concurproxy_pressure_waiting_requests",
    "concurproxy_pressure_preemptions_per_second",
    "concurproxy_pressure_prefix_hit_ratio",
    "concurproxy_pressure_prefill_iterations",
)
_DISPATCH_SERIES = (
    "concurproxy_dispatch_held_total",
    "concurproxy_dispatch_forced_total",
    "concurproxy_dispatch_waiting_steps",
    "concurproxy_dispatch_wait_seconds",
)


class _Refresh:
    """A collector that exposes nothing: it flushes the batched samples (any thread) and runs the
    refreshers when the registry is collected.

    Refreshers run only on the thread that built the metrics (the event loop's): a collection
    from another thread (``metrics_handler`` encodes in a worker thread) skips them, because
    refreshers read loop-owned state; the handler calls :meth:`ProxyMetrics.refresh` on the loop
    first. The flush is thread-safe (see :mod:`~concurproxy.telemetry.batch`).
    """

    def __init__(self, flush: Callable[[], None], refreshers: list[Callable[[], None]]) -> None:
        self._flush = flush
        self._refreshers = refreshers
        self._owner = threading.get_ident()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._flush()
        if threading.get_ident() == self._owner:
            for fn in self._refreshers:
                fn()
        return []


class ProxyMetrics:
    """All proxy metrics in one registry. See ``docs/observability.md`` for the table."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        version: str = "0.1.0",
        max_new_label_values: int = 32,
        forget_linger_s: float = 600.0,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._gone: dict[str, float] = {}  # replica that left -> when (late samples for it are not exported)
        self._linger_s = forget_linger_s
        self.guards: dict[str, BoundedLabel] = {
            "tenant": BoundedLabel(max_new=max_new_label_values),
            "role": BoundedLabel(max_new=max_new_label_values),
            "route": BoundedLabel(max_new=16),
            "replica": BoundedLabel(max_new=8 * max_new_label_values),
        }
        self._refreshers: list[Callable[[], None]] = []
        self._batched: list[PendingCounter | PendingHistogram] = []
        registry.register(_Refresh(self.flush, self._refreshers))  # first: what it sets is fresh in the same scrape
        self._f: dict[str, Family] = {s.name: self._build(s) for s in SPECS}
        self._batched.extend(f.pending for f in self._f.values() if f.pending is not None)
        self._pressure_ts: dict[str, float] = {}  # replica -> ts of newest good snapshot (or prime time)
        self._dispatch_totals: dict[tuple[str, str], tuple[int, int]] = {}  # (replica, stage) -> held, forced seen
        self._idle_waiting: dict[tuple[str, str], float] = {}  # (replica, cause) -> idle-waiting s published
        self._placeholder: set[str] = set()  # replicas whose ts is still the prime time
        self._panic_steps_seen = 0  # the pool's panic-routed steps published so far
        f = self._f
        self._requests, self._in_flight = f["concurproxy_requests_total"], f["concurproxy_requests_in_flight"]
        self._step, self._ttft = (
            f["concurproxy_step_duration_seconds"],
            f["concurproxy_time_to_first_token_seconds"],
        )
        self._upstream, self._qwait = (
            f["concurproxy_upstream_duration_seconds"],
            f["concurproxy_queue_wait_seconds"],
        )
        self._tokens = f["concurproxy_tokens_total"]
        # the batched per-step series, bound once: one attribute read on the hot path
        self._p_requests, self._p_tokens = self._requests.pending, self._tokens.pending
        self._p_step, self._p_ttft = self._step.pending, self._ttft.pending
        self._p_upstream, self._p_qwait = self._upstream.pending, self._qwait.pending
        self._p_decisions = f["concurproxy_admission_decisions_total"].pending
        self._p_ended = f["concurproxy_tickets_ended_total"].pending
        self._p_routed = f["concurproxy_routing_decisions_total"].pending
        self._p_pin_hits = f["concurproxy_routing_pin_hits_total"].pending
        self._p_prefix = f["concurproxy_routing_prefix_match_tokens_total"].pending
        self._f["concurproxy_build_info"].child(version).set(1)

    def _build(self, spec: MetricSpec) -> Family:
        return Family(spec, self.registry, tuple(self.guards.get(label) for label in spec.labels), self._gone)

    def flush(self) -> None:
        """Apply the batched samples to the collectors (runs first at every collection)."""
        for p in self._batched:
            p.flush()

    def add_refresher(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at every scrape, before the metrics are read (pull live state into gauges).

        ``fn`` runs on the thread that built this object (the event loop): it must be quick and
        must not raise. Used for state that is cheaper to read than to track, e.g. windows.
        """
        self._refreshers.append(fn)

    def refresh(self) -> None:
        """Run the refreshers now (``metrics_handler(..., before=metrics.refresh)`` does, on the loop)."""
        self.flush()
        for fn in self._refreshers:
            fn()

    def family(self, name: str) -> Any:
        """The underlying prometheus_client collector (tests, ad-hoc use)."""
        return self._f[name].metric

    # --- setup ------------------------------------------------------------------------------------
    def prime(
        self,
        *,
        replicas: Iterable[str] = (),
        tenants: Iterable[str] = (),
        roles: Iterable[str] = (),
        routes: Iterable[str] = (),
    ) -> None:
        """Declare the configured label values and create zero-valued series for them.

        Call once at start-up (and again when discovery adds a replica). Declared
        values are never folded into ``"other"`` by the cardinality guards.
        """
        known = {
            "replica": list(replicas),
            "tenant": list(tenants),
            "role": list(roles),
            "route": list(routes),
        }
        for label, values in known.items():
            self.guards[label].declare(values)
        now = self._clock()
        for r in known["replica"]:
            self._gone.pop(r, None)  # (re)joined: its series are exported again
            if r not in self._pressure_ts:
                self._pressure_ts[r] = now
                self._placeholder.add(r)
                self._install_age(r)
            self.set_replica_health(r, True)
        for spec in SPECS:
            if spec.kind == "counter" and all(lab in known or lab in spec.prime for lab in spec.labels):
                for combo in _product([known[lab] if lab in known else list(spec.prime[lab]) for lab in spec.labels]):
                    self._f[spec.name].child(*combo)
        for t in known["tenant"]:
            self._f["concurproxy_fairness_virtual_tokens"].child(t).set(0)
        for r in known["replica"]:
            for name in _PRESSURE_GAUGES:  # NaN = not read yet (a gap in graphs, not a false 0)
                self._f[name].child(r).set(math.nan)
            for role in known["role"]:
                for h in (self._step, self._ttft, self._upstream, self._qwait):
                    h.child(r, role)
        for route in known["route"]:
            self._in_flight.child(route)

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool: remove every series carrying its ``replica`` label (found from the
        catalog's labels), counters included (a target that goes away stops its series), and what is kept
        for it here. Samples still arriving for it in the next ``forget_linger_s`` (a step that was running
        there ends, a pressure read in flight) go to a child that is not exported; :meth:`prime` undoes it.
        """
        self.flush()  # its pending samples land before the series go
        now = self._clock()
        for r in [r for r, t in self._gone.items() if now - t >= self._linger_s]:
            del self._gone[r]  # (in place: the families hold this dict)
        self._gone[replica] = now
        for f in self._f.values():
            f.forget(replica)
        self._pressure_ts.pop(replica, None)
        self._placeholder.discard(replica)
        for key in [k for k in self._dispatch_totals if k[0] == replica]:
            del self._dispatch_totals[key]
        for key in [k for k in self._idle_waiting if k[0] == replica]:
            del self._idle_waiting[key]
        self.guards["replica"].forget(replica)

    # --- request path -----------------------------------------------------------------------------
    def request_started(self, route: str) -> None:
        self._in_flight.child(route).inc()

    def request_finished(self, route: str) -> None:
        self._in_flight.child(route).dec()

    def observe_step(
        self,
        route: str,
        tenant: str,
        role: str,
        status: int,
        duration_s: float,
        replica: str | None = None,
        ttft_s: float | None = None,
        upstream_s: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        queue_wait_s: float | None = None,
    ) -> None:
        """Record one finished step (any status), and its queue wait when given. ``replica=None`` when
        refused before routing. The request path calls it positionally (keywords cost more than the samples)."""
        key = (replica if replica is not None else NONE_REPLICA, role)
        self._p_requests.add((route, tenant, role, status))
        self._p_step.observe(key, duration_s)
        if ttft_s is not None:
            self._p_ttft.observe(key, ttft_s)
        if upstream_s is not None:
            self._p_upstream.observe(key, upstream_s)
        if prompt_tokens:
            self._p_tokens.add((tenant, role, "input"), prompt_tokens)
        if completion_tokens:
            self._p_tokens.add((tenant, role, "output"), completion_tokens)
        if queue_wait_s is not None:
            self._p_qwait.observe(key, queue_wait_s)

    def observe_queue_wait(self, replica: str | None, role: str, wait_s: float) -> None:
        self._p_qwait.observe((replica if replica is not None else NONE_REPLICA, role), wait_s)

    # --- admission ----------------------------------------------------------------------------------
    def admission_decision(self, replica: str | None, decision: object, reason: object) -> None:
        self._p_decisions.add((replica or NONE_REPLICA, decision, reason))

    def set_admission_state(
        self,
        replica: str,
        *,
        window: float,
        active: int,
        queued: int,
        idle_waiting: Mapping[str, float] | None = None,
        multiplier: float = 1.0,
    ) -> None:
        """``idle_waiting``: seconds with nothing of ours running while steps waited, per cause (totals of
        the core's `IdleWaitClock`; a window rebuilt restarts them at 0)."""
        f = self._f
        f["concurproxy_admission_window"].child(replica).set(window)
        f["concurproxy_admission_active_agents"].child(replica).set(active)
        f["concurproxy_admission_queued_agents"].child(replica).set(queued)
        f["concurproxy_admission_limit_multiplier"].child(replica).set(multiplier)
        idle = f["concurproxy_admission_idle_waiting_seconds_total"]
        totals = idle_waiting or {}
        for cause in IDLE_CAUSES if (replica, IDLE_CAUSES[0]) not in self._idle_waiting else totals:
            key, total = (replica, cause), totals.get(cause, 0.0)
            published = self._idle_waiting.get(key, 0.0)  # mirrored total; every cause exists from the start
            idle.child(replica, cause).inc(total - published if total >= published else total)
            self._idle_waiting[key] = total

    def window_changed(self, replica: str, old: float, new: float, reason: object) -> None:
        """Count a window change; ``direction`` is up/down from old→new (no-op when equal)."""
        if new != old:
            direction = "up" if new > old else "down"
            self._f["concurproxy_admission_window_changes_total"].child(replica, direction, reason).inc()
        self._f["concurproxy_admission_window"].child(replica).set(new)

    def set_pressure_source(self, replica: str, source: str) -> None:
        family = self._f["concurproxy_pressure_source"]
        for name in PRESSURE_SOURCES:
            family.child(replica, name).set(1 if name == source else 0)

    def ticket_ended(self, outcome: object) -> None:
        self._p_ended.add((outcome,))

    def ticket_error(self, kind: str) -> None:
        """``kind``: ``leaked`` (ticket garbage-collected unreleased) or ``double_release``."""
        self._f["concurproxy_ticket_errors_total"].child(kind).inc()

    # --- pressure -----------------------------------------------------------------------------------
    def observe_pressure(self, replica: str, snap: PressureSnapshot) -> None:
        """Publish a snapshot. Failed snapshots (``ok=False``) change nothing: the age keeps growing.

        Unknown fields (None) are exported as NaN, not 0, so a graph shows a gap, not a false value.
        """
        if not snap.ok or replica in self._gone:  # (a read that was in flight when its replica left)
            return
        f = self._f
        f["concurproxy_pressure_kv_usage_ratio"].child(replica).set(_nan(snap.kv_usage))
        f["concurproxy_pressure_running_requests"].child(replica).set(_nan(snap.running))
        f["concurproxy_pressure_waiting_requests"].child(replica).set(_nan(snap.waiting))
        f["concurproxy_pressure_preemptions_per_second"].child(replica).set(_nan(snap.preemptions_per_s))
        f["concurproxy_pressure_prefix_hit_ratio"].child(replica).set(_nan(snap.prefix_hit_rate))
        f["concurproxy_pressure_prefill_iterations"].child(replica).set(_nan(snap.prefill_iterations))
        prev = self._pressure_ts.get(replica)
        if prev is None:
            self._install_age(replica)
        if prev is None or replica in self._placeholder:
            self._placeholder.discard(replica)
            self._pressure_ts[replica] = snap.ts
        else:
            self._pressure_ts[replica] = max(prev, snap.ts)

    def _install_age(self, replica: str) -> None:
        ts, clock = self._pressure_ts, self._clock
        self._f["concurproxy_pressure_snapshot_age_seconds"].child(replica).set_function(lambda: clock() - ts[replica])

    def pressure_poll_error(self, replica: str, kind: str) -> None:
        self._f["concurproxy_pressure_poll_errors_total"].child(replica, kind).inc()

    # --- budgets and fairness -----------------------------------------------------------------------
    def budget_consumed(self, tenant: str, role: str, tokens: int) -> None:
        self._f["concurproxy_budget_consumed_tokens_total"].child(tenant, role).inc(tokens)

    def budget_rejected(self, tenant: str, role: str, reason: object) -> None:
        self._f["concurproxy_budget_rejections_total"].child(tenant, role, reason).inc()

    def set_fairness_counter(self, tenant: str, value: float) -> None:
        self._f["concurproxy_fairness_virtual_tokens"].child(tenant).set(value)

    # --- dispatch (server/stages/dispatch.py; wired by telemetry/dispatch.py) -------------------------
    def dispatch_waited(self, replica: str, stage: str, wait_s: float) -> None:
        """A held step was sent after ``wait_s`` at ``stage`` (only steps that waited: off the common path)."""
        self._f["concurproxy_dispatch_wait_seconds"].pending.observe((replica, stage), wait_s)

    def set_dispatch_state(self, replica: str, stage: str, *, waiting: int, held: int, forced: int) -> None:
        """Publish a dispatch core's queue and its running totals (the counters advance by the difference
        from the totals last published; a total that went down, a core rebuilt, counts from zero)."""
        if replica in self._gone:
            return
        f, key = self._f, (replica, stage)
        f["concurproxy_dispatch_waiting_steps"].child(replica, stage).set(waiting)
        held0, forced0 = self._dispatch_totals.get(key, (0, 0))
        f["concurproxy_dispatch_held_total"].child(replica, stage).inc(_advance(held0, held))
        f["concurproxy_dispatch_forced_total"].child(replica, stage).inc(_advance(forced0, forced))
        self._dispatch_totals[key] = (held, forced)

    def set_dispatch_reserve(self, replica: str, *, in_flight_tokens: int, limit_tokens: int | None) -> None:
        self._f["concurproxy_dispatch_reserve_in_flight_tokens"].child(replica).set(in_flight_tokens)
        self._f["concurproxy_dispatch_reserve_limit_tokens"].child(replica).set(_nan(limit_tokens))

    def prime_dispatch(self, replica: str, stage: str) -> None:
        """Zero-valued dispatch series for a replica and an enabled stage (0 rather than no data)."""
        for name in _DISPATCH_SERIES:
            self._f[name].child(replica, stage)

    # --- routing and upstream -----------------------------------------------------------------------
    def routing_decision(
        self, replica: str, reason: object, *, pin_hit: bool = False, prefix_match_tokens: int = 0
    ) -> None:
        self._p_routed.add((replica, reason))
        if pin_hit:
            self._p_pin_hits.add((replica,))
        if prefix_match_tokens:
            self._p_prefix.add((replica,), prefix_match_tokens)

    def repinned(self, reason: object) -> None:
        self._f["concurproxy_routing_repins_total"].child(reason).inc()

    def upstream_error(self, replica: str, kind: object) -> None:
        self._f["concurproxy_upstream_errors_total"].child(replica, kind).inc()

    def upstream_retry(self, replica: str, kind: object) -> None:
        self._f["concurproxy_upstream_retries_total"].child(replica, kind).inc()

    def propagation_dropped(self, headers: tuple[str, ...]) -> None:
        family = self._f["concurproxy_propagation_dropped_total"]
        for name in headers:
            family.child(name).inc()

    def set_replica_health(self, replica: str, healthy: bool) -> None:
        self._f["concurproxy_replica_healthy"].child(replica).set(1 if healthy else 0)

    def set_upstream_panic(self, panic: bool, steps: int) -> None:
        """At scrape time, from the pool: whether routing ignores health now, and the steps it did for."""
        self._f["concurproxy_upstream_panic"].child().set(1 if panic else 0)
        counter = self._f["concurproxy_upstream_panic_steps_total"].child()
        counter.inc(max(0, steps - self._panic_steps_seen))
        self._panic_steps_seen = max(self._panic_steps_seen, steps)


PRESSURE_SOURCES = ("kv", "stale", "latency", "static")


def _advance(published: int, total: int) -> int:
    """How far a counter mirroring ``total`` moves (a total below what was published: it restarted)."""
    return total - published if total >= published else total


def _nan(v: float | int | None) -> float:
    return math.nan if v is None else float(v)


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for values in lists:
        out = [(*t, v) for t in out for v in values]
    return out
