"""What a simulation run records: loadgen step/task results and the fleet-level figures.

``SimReport.results`` is a ``loadgen.results.Results`` (the load generator's
own format, so ``concur-loadgen report`` renders a simulated run like a real
one); ``SimReport.fleet`` adds what only a simulation can see exactly: every
replica's tokens, KV-usage distribution, preemptions and recomputation, the
admission and dispatch decisions, and the simulator's own speed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from concurproxy.control.admission import ReplicaState
from concurproxy.simulate.replica import KV_BINS, SimReplica
from loadgen.results import Results
from loadgen.stats import percentile


@dataclass(frozen=True, slots=True)
class ReplicaFigures:
    id: str
    profile: str
    output_tok_s: float
    prefill_tok_s: float  # everything prefilled, recomputation included
    preemptions: int
    recomputed_tokens: int  # re-prefill after preemption + re-prefill of evicted cached prefixes
    prefix_hit_rate: float
    busy_frac: float
    kv_usage_mean: float
    kv_usage_hist: list[int]  # samples per 5 % bin, one sample per control interval
    steps_served: int
    window_final: int
    agents_admitted: int
    agents_paused: int
    queue_timeouts: int


@dataclass(slots=True)
class FleetFigures:
    replicas: int
    profiles: dict[str, int]
    sim_seconds: float
    wall_seconds: float
    sim_speed: float  # simulated seconds per wall-clock second
    cpu_seconds: float  # process CPU time of the run (less sensitive to a shared machine than wall time)
    engine_steps: int  # engine iterations simulated (a fast-forwarded decode run counts its iterations)
    engine_calls: int  # engine.step() calls actually made
    decisions: int  # steps that went through budgets → routing → admission
    goodput_per_min: float
    tasks: dict[str, int]
    output_tok_s: float
    output_tok_s_per_replica: dict[str, float]  # mean / min / max
    preemptions: int
    recomputed_tokens: int
    prefix_hit_rate: float
    kv_usage: dict[str, float]  # mean, p50, p90, p99 over (replica, interval) samples
    kv_usage_hist: list[int]
    step_latency_s_by_role: dict[str, dict[str, float | None]]
    queue_wait_s_by_role: dict[str, dict[str, float | None]]
    admission: dict[str, int]  # summed admission counters
    replica_figures: list[ReplicaFigures] = field(default_factory=list)
    dispatch: dict[str, int] = field(default_factory=dict)  # summed dispatch counters (none: no dispatch stage)


def _pcts(xs: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(xs, q) for q in (50, 90, 99)} | {"n": float(len(xs))}


def hist_percentile(hist: list[int], q: float) -> float:
    """Upper edge of the bin holding the q-th percentile of a KV_BINS histogram."""
    total = sum(hist)
    if total == 0:
        return 0.0
    need = q / 100 * total
    acc = 0
    for i, c in enumerate(hist):
        acc += c
        if acc >= need and c:
            return (i + 1) / KV_BINS
    return 1.0


ADMISSION_COUNTERS = (
    "admitted_new", "admitted_steps", "admitted_starvation", "queued", "rejected", "timeouts",
    "paused", "expired", "released", "window_increases", "window_decreases",
)  # fmt: skip


def admission_totals(states: Iterable[ReplicaState]) -> dict[str, int]:
    """Admission decision counters summed over replicas."""
    totals = dict.fromkeys(ADMISSION_COUNTERS, 0)
    for st in states:
        for k in ADMISSION_COUNTERS:
            totals[k] += getattr(st.counters, k)
    return totals


DISPATCH_COUNTERS = ("held", "forced", "reserve_held", "reserve_forced")


def dispatch_totals(rows: Iterable[Mapping[str, int | None]]) -> dict[str, int]:
    """Dispatch counters (``DispatchCores.state``: steps held at the prefill gate / the KV reserve, and
    those sent at their bound) summed over replicas."""
    totals = dict.fromkeys(DISPATCH_COUNTERS, 0)
    for row in rows:
        for k in DISPATCH_COUNTERS:
            totals[k] += row.get(k) or 0
    return totals


def replica_figures(r: SimReplica, seconds: float, counters: Any, window: int) -> ReplicaFigures:
    s = r.engine.stats
    sec = max(seconds, 1e-9)
    return ReplicaFigures(
        id=r.id,
        profile=r.spec.profile.name,
        output_tok_s=s.generation_tokens / sec,
        prefill_tok_s=s.prefill_tokens_computed / sec,
        preemptions=s.preemptions,
        recomputed_tokens=s.recomputed_prefill_tokens + s.evicted_prefix_recompute_tokens,
        prefix_hit_rate=s.prefix_hit_rate,
        busy_frac=s.busy_time / sec,
        kv_usage_mean=r.kv_sum / r.kv_n if r.kv_n else 0.0,
        kv_usage_hist=list(r.kv_hist),
        steps_served=sum(s.finished.values()),
        window_final=window,
        agents_admitted=counters.admitted_new if counters else 0,
        agents_paused=counters.paused if counters else 0,
        queue_timeouts=counters.timeouts if counters else 0,
    )


def fleet_figures(
    results: Results,
    reps: list[ReplicaFigures],
    replicas: list[SimReplica],
    *,
    seconds: float,
    wall: float,
    cpu: float,
    engine_steps: int,
    engine_calls: int,
    decisions: int,
    admission: dict[str, int],
    dispatch: dict[str, int] | None = None,
) -> FleetFigures:
    summ = results.summary()
    hist = [sum(r.kv_usage_hist[i] for r in reps) for i in range(KV_BINS)]
    n_kv = sum(hist)
    kv_mean = sum(r.kv_sum for r in replicas) / max(1, sum(r.kv_n for r in replicas))
    outs = [r.output_tok_s for r in reps] or [0.0]
    gen = sum(r.engine.stats.generation_tokens for r in replicas)
    queries = sum(r.engine.stats.prefix_queries for r in replicas)
    hits = sum(r.engine.stats.prefix_hits for r in replicas)
    by_role: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    for s in results.steps:
        if s.ok:
            by_role.setdefault(s.role, []).append(s.end_s - s.start_s)
            waits.setdefault(s.role, []).append((s.queue_wait_ms or 0.0) / 1000.0)
    profiles: dict[str, int] = {}
    for r in reps:
        profiles[r.profile] = profiles.get(r.profile, 0) + 1
    t = summ["tasks"]
    return FleetFigures(
        replicas=len(reps),
        profiles=profiles,
        sim_seconds=seconds,
        wall_seconds=wall,
        sim_speed=seconds / wall if wall > 0 else 0.0,
        cpu_seconds=cpu,
        engine_steps=engine_steps,
        engine_calls=engine_calls,
        decisions=decisions,
        goodput_per_min=t["goodput_per_min"],
        tasks={k: t[k] for k in ("started", "completed", "failed", "cancelled", "in_deadline")},
        output_tok_s=gen / max(seconds, 1e-9),
        output_tok_s_per_replica={"mean": sum(outs) / len(outs), "min": min(outs), "max": max(outs)},
        preemptions=sum(r.preemptions for r in reps),
        recomputed_tokens=sum(r.recomputed_tokens for r in reps),
        prefix_hit_rate=hits / queries if queries else 0.0,
        kv_usage={
            "mean": kv_mean,
            "p50": hist_percentile(hist, 50),
            "p90": hist_percentile(hist, 90),
            "p99": hist_percentile(hist, 99),
            "samples": float(n_kv),
        },
        kv_usage_hist=hist,
        step_latency_s_by_role={k: _pcts(v) for k, v in sorted(by_role.items())},
        queue_wait_s_by_role={k: _pcts(v) for k, v in sorted(waits.items())},
        admission=admission,
        replica_figures=reps,
        dispatch=dispatch or {},
    )


@dataclass(slots=True)
class SimReport:
    results: Results
    fleet: FleetFigures

    def to_json(self) -> bytes:
        doc = orjson.loads(self.results.to_json())
        doc["fleet"] = asdict(self.fleet)
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_json())
