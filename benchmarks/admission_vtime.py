"""Admission benchmark in virtual time: controllers × load levels on a worker profile.

``python -m benchmarks.admission_vtime --profile llama3-8b-h100`` runs the
profile's agent preset (``concurproxy.worker.thrash.PRESETS``: contexts that
grow every step, tool pauses between steps) through ``run_vtime`` (the
simulator's loop, ``concurproxy.simulate.vtime``) once per
controller — ``none``, ``static`` at several windows (the best of which is an
oracle: a user would have to sweep to find it), ``aimd`` — at each load level
(closed-loop agent count), and prints per run: goodput (completed agent tasks
per minute), output tokens/s, preemptions, the share of prefill that was
recomputed, prefix-hit rate, p50/p99 step latency, and for ``aimd`` the mean
window over the second half; then a summary with ``aimd / none`` and
``aimd / best static``.

``--mixed`` changes the workload half-way: agents started in the first half run
``short_variant(preset)`` (a quarter of the task prompt, half the steps and the
tool output), those started later run the preset. ``--plot PNG`` draws the
``aimd`` run at the highest load: window, active agents, KV usage and the
footprint budget over time. Deterministic: the same command prints the same
numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.simulate.vtime import VTimeResult, run_vtime
from concurproxy.worker.agents import AgentSpec
from concurproxy.worker.profile import Profile

Results = dict[int, dict[str, VTimeResult]]  # agents → controller → result


def controllers(windows: Sequence[int]) -> dict[str, AdmissionConfig]:
    out = {"none": AdmissionConfig(controller="none")}
    for w in windows:
        out[f"static-{w}"] = AdmissionConfig(controller="static", static=StaticConfig(window=w))
    out["aimd"] = AdmissionConfig(controller="aimd")
    return out


def short_variant(spec: AgentSpec) -> AgentSpec:
    """The first half of a ``--mixed`` run: short tasks with small contexts."""
    return replace(
        spec,
        steps=max(2, spec.steps // 2),
        task_tokens=max(1, spec.task_tokens // 4),
        tool_tokens=max(1, spec.tool_tokens // 2),
    )


def sweep(
    profile: Profile,
    spec: AgentSpec,
    counts: Sequence[int],
    seconds: float,
    configs: dict[str, AdmissionConfig],
    switch: tuple[float, AgentSpec] | None = None,
    done_signal: bool = False,
) -> Results:
    return {
        n: {
            name: run_vtime(profile, spec, n, seconds, cfg, switch=switch, done_signal=done_signal)
            for name, cfg in configs.items()
        }
        for n in counts
    }


def recompute_share(r: VTimeResult) -> float:
    return r.recomputed_tokens / max(1, r.prefill_tokens)


def mean_window_second_half(r: VTimeResult) -> float:
    half = r.trace[len(r.trace) // 2 :]
    return sum(p.window for p in half) / max(1, len(half))


def format_runs(results: Results) -> str:
    lines = [
        f"{'agents':>6} {'controller':>10} {'tasks/min':>9} {'out tok/s':>9} {'preempt':>7} "
        f"{'recomp%':>7} {'hit':>5} {'p50 ms':>7} {'p99 ms':>7} {'W(2nd half)':>11} {'prefill/ITL':>11}"
    ]
    for n, runs in results.items():
        for name, r in runs.items():
            w = f"{mean_window_second_half(r):.1f}" if name == "aimd" else "-"
            cost = "-" if r.prefill_iterations is None else f"{r.prefill_iterations:.1f}"
            lines.append(
                f"{n:>6} {name:>10} {r.tasks_per_min:>9.1f} {r.output_tok_s:>9.0f} {r.preemptions:>7} "
                f"{recompute_share(r):>7.1%} {r.prefix_hit_rate:>5.0%} "
                f"{r.step_latency_p50_s * 1e3:>7.0f} {r.step_latency_p99_s * 1e3:>7.0f} {w:>11} {cost:>11}"
            )
    return "\n".join(lines)


def summary_markdown(results: Results) -> str:
    """One row per load level: goodput (recomputed share of prefill) of none, the best static window, aimd."""
    lines = [
        "| agents | none | best static (W) | aimd | aimd / none | aimd / best static |",
        "|---|---|---|---|---|---|",
    ]
    for n, runs in results.items():
        none, aimd = runs["none"], runs["aimd"]
        statics = {k: r for k, r in runs.items() if k.startswith("static-")}
        best_name = max(statics, key=lambda k: statics[k].tasks_per_min) if statics else None
        best = statics[best_name] if best_name else None
        best_cell = "-" if best is None else f"{best.tasks_per_min:.1f} ({best_name}, {recompute_share(best):.0%})"
        ratio_best = "-" if best is None else f"{aimd.tasks_per_min / best.tasks_per_min:.2f}"
        lines.append(
            f"| {n} | {none.tasks_per_min:.1f} ({recompute_share(none):.0%}) | {best_cell} "
            f"| {aimd.tasks_per_min:.1f} ({recompute_share(aimd):.0%}) "
            f"| {aimd.tasks_per_min / max(none.tasks_per_min, 1e-9):.2f} | {ratio_best} |"
        )
    return "\n".join(lines)


def plot_trace(r: VTimeResult, path: Path, title: str, switch_at: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p.t for p in r.trace]
    # the raw gauge swings with every tool pause; the controller reads the peak of the last 4 samples
    peak = [max(p.kv_usage for p in r.trace[max(0, i - 3) : i + 1]) for i in range(len(r.trace))]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, [p.window for p in r.trace], label="window W", color="tab:blue", lw=1.6)
    ax.plot(t, [p.active for p in r.trace], label="active agents", color="tab:cyan", lw=1.0)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("agents")
    ax2 = ax.twinx()
    ax2.plot(t, [p.kv_usage for p in r.trace], color="tab:red", lw=0.4, alpha=0.35, label="KV usage (gauge)")
    ax2.plot(t, peak, color="tab:red", lw=1.2, label="KV usage (peak of 4 samples)")
    ax2.plot(t, [p.footprint for p in r.trace], color="tab:green", lw=1.2, ls="--", label="footprint / capacity")
    ax2.set_ylabel("share of KV capacity")
    ax2.set_ylim(0, 1.6)
    if switch_at is not None:
        ax.axvline(switch_at, color="grey", ls=":", lw=1)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def decode_swarm(capacity_tokens: int) -> AgentSpec:
    """A decode-bound swarm scaled to a KV cache (``--preset decode-swarm``): three steps of 48 generated
    tokens each, no tool pause, contexts from ~27% to ~59% of the cache, so one agent's predicted footprint
    is most of it. The shape of the real-vLLM swarm (24 agents x 3 steps of 48 tokens over contexts
    ~420 -> 900 tokens on a 1536-token cache, no done signal) that ran at 0.54x ``none`` under ``aimd``."""
    return AgentSpec(
        steps=3,
        system_tokens=0,
        task_tokens=max(1, capacity_tokens * 280 // 1024),
        tool_tokens=max(1, capacity_tokens * 88 // 1024),
        output_tokens=48,
        tool_pause_s=0.0,
    )


def main(argv: list[str] | None = None) -> None:
    from concurproxy.worker.profile import load_profile
    from concurproxy.worker.thrash import preset_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--agents", default="3,6,12,24", help="comma-separated closed-loop agent counts")
    ap.add_argument("--static", default="2,3,4,6", help="static windows to compare")
    ap.add_argument("--seconds", type=float, default=30.0, help="virtual seconds per run")
    ap.add_argument(
        "--preset",
        choices=("agents", "decode-swarm"),
        default="agents",
        help="agents: the profile's agent preset (growing contexts, tool pauses); decode-swarm: see decode_swarm()",
    )
    ap.add_argument("--mixed", action="store_true", help="short tasks in the first half, the preset in the second")
    ap.add_argument("--plot", type=Path, help="PNG of the aimd run at the highest load (W, KV usage, footprint)")
    ap.add_argument(
        "--done-signal",
        action="store_true",
        help="agents announce their last step (X-Agent-Done); by default they just stop, as real clients do",
    )
    args = ap.parse_args(argv)
    prof = load_profile(args.profile)
    engine = prof.engine_config()
    capacity = engine.num_blocks * engine.block_size
    spec, _, _ = preset_for(prof.name, capacity, engine.max_model_len)
    if args.preset == "decode-swarm":
        spec = decode_swarm(capacity)
    switch = (args.seconds / 2, spec) if args.mixed else None
    first = short_variant(spec) if args.mixed else spec
    counts = [int(a) for a in args.agents.split(",") if a]
    windows = [int(w) for w in args.static.split(",") if w]
    results = sweep(prof, first, counts, args.seconds, controllers(windows), switch, args.done_signal)
    print(format_runs(results))
    print()
    print(summary_markdown(results))
    if args.plot:
        top = max(counts)
        kind = "short then long tasks" if args.mixed else "agent preset"
        plot_trace(
            results[top]["aimd"],
            args.plot,
            f"aimd on {prof.name}, {top} agents ({kind})",
            args.seconds / 2 if args.mixed else None,
        )
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
