"""Turn a finished simulation into its report: loadgen results plus fleet-level figures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from concurproxy.simulate.record import SimReport, admission_totals, dispatch_totals, fleet_figures, replica_figures
from loadgen.results import Meta, Results

if TYPE_CHECKING:
    from concurproxy.simulate.sim import Simulation


def build_report(sim: Simulation, end: float, wall: float, truncated: bool) -> SimReport:
    meta = Meta(
        scenario=sim.sc.name,
        target=f"simulate:{sim.fleet.name}",
        seed=sim.seed,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        elapsed_s=end,
        label=sim.opt.label or f"sim {sim.fleet.name}",
        truncated=truncated,
    )
    results = Results(meta, sim.steps, sim.tasks)
    adm = sim.core.admission
    states = adm.state(end) if adm is not None else {}  # controller none: no windows
    reps = [
        replica_figures(r, end, st.counters if st else None, st.window if st else 0)
        for r in sim.replicas
        for st in [states.get(r.id)]
    ]
    fleet = fleet_figures(
        results,
        reps,
        sim.replicas,
        seconds=end,
        wall=wall,
        cpu=sim.cpu_seconds,
        engine_steps=sum(r.engine.iterations for r in sim.replicas),
        engine_calls=sim.engine_calls,
        decisions=sim.decisions,
        admission=admission_totals(states.values()),
        dispatch=dispatch_totals(sim.core.dispatch.state().values()) if sim.core.dispatch is not None else None,
    )
    return SimReport(results, fleet)
