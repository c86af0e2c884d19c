"""One simulated replica: an engine model, its pressure snapshots and its fleet figures.

The snapshot is what the proxy's poller would read from the engine's
``/metrics`` at the same instant: KV usage, running and waiting requests,
preemptions per second and prefix-cache hit rate from counter deltas since the
previous read, the KV capacity in tokens, and what a prefill costs in decode
iterations (``signals/cost.py``, from the engine's prefill and inter-token times).
It is built directly from engine state (no exposition text), at every control
interval.

Concurrency: none; the simulation loop owns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concurproxy.control.admission import AdmissionCore
from concurproxy.control.types import PressureSnapshot
from concurproxy.routing import ReplicaView
from concurproxy.signals.cost import PrefillCost
from concurproxy.simulate.fastengine import ExactEngine
from concurproxy.simulate.fleet import ReplicaSpec
from concurproxy.worker.engine import RequestOutput

KV_BINS = 20  # KV usage histogram: 20 bins of 5 %


@dataclass(slots=True)
class _Last:
    t: float = 0.0
    preemptions: int = 0
    hits: int = 0
    queries: int = 0


@dataclass(slots=True)
class SimReplica:
    spec: ReplicaSpec
    engine: ExactEngine
    index: int
    in_flight: int = 0  # steps sent to this replica and not finished (the router's ``load``)
    scheduled: bool = False  # an engine event is in the event heap
    version: int = 0  # engine events carry it; a rescheduled engine makes older events stale
    pending: tuple[RequestOutput, ...] = ()  # outputs of the step in progress, delivered at its end
    kv_hist: list[int] = field(default_factory=lambda: [0] * KV_BINS)
    kv_sum: float = 0.0
    kv_n: int = 0
    snapshot: PressureSnapshot | None = None
    cost: PrefillCost = field(default_factory=PrefillCost)  # what the poller computes from vLLM's histograms
    _last: _Last = field(default_factory=_Last)

    @property
    def id(self) -> str:
        return self.spec.id

    def sample(self, now: float) -> PressureSnapshot:
        """Read the engine as the poller would, and record the KV usage sample."""
        e = self.engine
        s = e.stats
        last = self._last
        dt = now - last.t
        dq = s.prefix_queries - last.queries
        kv = e.kv_usage()
        ratio = self.cost.observe(now, (s.prefill_time.total, s.prefill_time.count, s.itl.total, s.itl.count))
        snap = PressureSnapshot(
            ts=now,
            kv_usage=kv,
            running=e.num_running,
            waiting=e.num_waiting,
            preemptions_per_s=(s.preemptions - last.preemptions) / dt if dt > 0 else 0.0,
            prefix_hit_rate=(s.prefix_hits - last.hits) / dq if dq > 0 else None,
            kv_capacity_tokens=e.config.capacity_tokens,
            prefill_iterations=ratio,
            source="simulate",
        )
        last.t, last.preemptions, last.hits, last.queries = now, s.preemptions, s.prefix_hits, s.prefix_queries
        self.kv_hist[min(KV_BINS - 1, int(kv * KV_BINS))] += 1
        self.kv_sum += kv
        self.kv_n += 1
        self.snapshot = snap
        return snap


def replica_views(
    replicas: list[SimReplica], now: float, stale_after_s: float, admission: AdmissionCore | None = None
) -> list[ReplicaView]:
    """What the proxy's router sees: pressure from the latest snapshot when fresh (else unknown),
    in-flight steps as load, and window room/size when ``admission`` is given (window-room scorer)."""
    out = []
    for r in replicas:
        s = r.snapshot
        fresh = s is not None and now - s.ts <= stale_after_s
        room = size = None
        if admission is not None:
            w = admission.window(r.id)
            size, room = w.window, max(0, w.window - w.active)
        kv = s.kv_usage if fresh and s is not None else None
        waiting = s.waiting if fresh and s is not None else None
        out.append(ReplicaView(r.id, True, False, kv, waiting, room, size, float(r.in_flight)))
    return out
