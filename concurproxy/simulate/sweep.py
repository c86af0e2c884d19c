"""What-if sweeps: replicas × policies × load from one command, as a table and a plot.

Each cell is one :func:`simulate` run with the fleet scaled to ``n`` replicas
(the fleet file's mix, cycled), one policy file, and the scenario's arrival
rate (open loop) or concurrency (closed loop) replaced by the load value.
Reported per cell: goodput (tasks/min), p99 step latency, output tokens/s per
replica, preemptions, mean KV usage, and whether p99 meets ``target_p99_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from concurproxy.config import load_policy
from concurproxy.simulate.fleet import Fleet
from concurproxy.simulate.sim import SimOptions, simulate
from loadgen.scenario import Closed, Poisson, Scenario
from loadgen.stats import percentile


@dataclass(frozen=True, slots=True)
class SweepCell:
    replicas: int
    policy: str
    load: float | None
    goodput_per_min: float
    p99_step_s: float | None
    out_tok_s_per_replica: float
    preemptions: int
    kv_mean: float
    failed: int
    sim_speed: float


def with_load(sc: Scenario, load: float | None) -> Scenario:
    """The scenario with its arrival rate (open loop) or concurrency (closed loop) set to ``load``."""
    if load is None:
        return sc
    arr = sc.arrivals
    if isinstance(arr, Closed):
        return sc.model_copy(update={"arrivals": arr.model_copy(update={"concurrency": max(1, int(load))})})
    return sc.model_copy(update={"arrivals": Poisson(mode="poisson", rate_per_s=load)})


def run_sweep(
    fleet: Fleet,
    policies: Sequence[str],
    scenario: Scenario,
    replicas: Sequence[int],
    loads: Sequence[float | None] = (None,),
    options: SimOptions | None = None,
    controllers: Sequence[str | None] = (None,),
) -> list[SweepCell]:
    """One run per (load, policy file, controller override, replica count)."""
    opt = options or SimOptions()
    cells = []
    runs = [(p, c) for p in policies for c in controllers]
    for load in loads:
        sc = with_load(scenario, load)
        for pol_path, ctl in runs:
            over = {"admission.controller": ctl} if ctl else None
            policy = load_policy(pol_path, overrides=over, env={})
            name = Path(pol_path).stem + (f"/{ctl}" if ctl else "")
            for n in replicas:
                rep = simulate(fleet.scaled(n), policy, sc, opt)
                f = rep.fleet
                lat = [s.end_s - s.start_s for s in rep.results.steps if s.ok]
                cells.append(
                    SweepCell(
                        replicas=n,
                        policy=name,
                        load=load,
                        goodput_per_min=f.goodput_per_min,
                        p99_step_s=percentile(lat, 99),
                        out_tok_s_per_replica=f.output_tok_s_per_replica["mean"],
                        preemptions=f.preemptions,
                        kv_mean=f.kv_usage["mean"],
                        failed=f.tasks["failed"],
                        sim_speed=f.sim_speed,
                    )
                )
    return cells


def format_table(cells: Sequence[SweepCell], target_p99_s: float | None = None) -> str:
    head = [
        "load",
        "policy",
        "replicas",
        "goodput/min",
        "p99 step s",
        "tok/s/replica",
        "preempt",
        "kv mean",
        "failed",
        "sim x",
    ]
    if target_p99_s is not None:
        head.append(f"p99<={target_p99_s:g}s")
    rows = [head]
    for c in cells:
        row = [
            "-" if c.load is None else f"{c.load:g}",
            c.policy,
            str(c.replicas),
            f"{c.goodput_per_min:.1f}",
            "-" if c.p99_step_s is None else f"{c.p99_step_s:.2f}",
            f"{c.out_tok_s_per_replica:.0f}",
            str(c.preemptions),
            f"{c.kv_mean:.0%}",
            str(c.failed),
            f"{c.sim_speed:.0f}",
        ]
        if target_p99_s is not None:
            row.append("yes" if c.p99_step_s is not None and c.p99_step_s <= target_p99_s else "no")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(cells: Sequence[SweepCell], path: str | Path, target_p99_s: float | None = None) -> None:
    """Goodput and p99 step latency against replicas, one line per (policy, load). PNG via Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(c.policy, c.load) for c in cells}, key=lambda k: (k[0], k[1] or 0.0))
    for pol, load in keys:
        pts = sorted((c for c in cells if c.policy == pol and c.load == load), key=lambda c: c.replicas)
        label = pol if load is None else f"{pol} @ {load:g}"
        xs = [c.replicas for c in pts]
        ax1.plot(xs, [c.goodput_per_min for c in pts], marker="o", label=label)
        ax2.plot(xs, [c.p99_step_s or 0.0 for c in pts], marker="o", label=label)
    if target_p99_s is not None:
        ax2.axhline(target_p99_s, color="red", linestyle="--", linewidth=1, label="target")
    ax1.set(xlabel="replicas", ylabel="goodput (tasks/min)", title="goodput")
    ax2.set(xlabel="replicas", ylabel="p99 step latency (s)", title="p99 step latency")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
