"""Reports: one or more ``Results`` → a self-contained HTML page and/or one PNG.

Plots (matplotlib ``Figure`` objects on the Agg canvas; pyplot's global state
is never used): goodput over time, step-latency CDFs per role, tokens by
tenant, and — when scraped series exist — the proxy's admission window and
the engines' KV usage over time. The HTML embeds each plot as a base64 PNG,
so the file can be mailed or attached to a CI run as is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from loadgen.results import Results, Series
from loadgen.stats import goodput_over_time, group

WINDOW_SERIES = ("concurproxy_admission_window",)
KV_SERIES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "concurproxy_pressure_kv_usage_ratio")

# label 1-2-5 ticks of a log axis in plain numbers (no 3x10^2 clutter)
_LOG_LABELS = FuncFormatter(lambda v, _pos: f"{v:g}" if v > 0 and f"{v:e}"[0] in "125" else "")

Plot = Callable[[Axes, Sequence[Results]], None]


def _legend(ax: Axes, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_goodput(ax: Axes, runs: Sequence[Results]) -> None:
    for r in runs:
        bin_s = max(5.0, r.meta.elapsed_s / 30)
        pts = goodput_over_time(r.tasks, r.meta.elapsed_s, bin_s)
        xs, ys = [t for t, _ in pts], [g for _, g in pts]
        ax.step([*xs, r.meta.elapsed_s], [*ys, ys[-1]], where="post", label=r.label)
    ax.set(title="Goodput over time", xlabel="time (s)", ylabel="tasks in deadline / min")
    _legend(ax, 7)


def plot_latency_cdf(ax: Axes, runs: Sequence[Results]) -> None:
    for r in runs:
        for role, steps in group((s for s in r.steps if s.ok), lambda s: s.role).items():
            xs = sorted(s.total_s * 1000 for s in steps)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=f"{r.label}: {role}" if len(runs) > 1 else role)
    ax.set(title="Step latency CDF by role", xlabel="latency (ms)", ylabel="fraction of steps")
    if any(s.ok for r in runs for s in r.steps):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_LOG_LABELS)
        ax.xaxis.set_minor_formatter(_LOG_LABELS)
    ax.grid(alpha=0.3)
    _legend(ax, 7)


def plot_tokens_by_tenant(ax: Axes, runs: Sequence[Results]) -> None:
    tenants = sorted({s.tenant for r in runs for s in r.steps})
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        by = group((s for s in r.steps if s.ok), lambda s: s.tenant)
        xs = [j + i * width for j in range(len(tenants))]
        prompt = [sum(s.prompt_tokens for s in by.get(t, [])) for t in tenants]
        compl = [sum(s.completion_tokens for s in by.get(t, [])) for t in tenants]
        ax.bar(xs, prompt, width, label=f"{r.label}: prompt")
        ax.bar(xs, compl, width, bottom=prompt, label=f"{r.label}: completion")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tenants))], tenants)
    ax.set(title="Tokens by tenant", ylabel="tokens")
    _legend(ax, 7)


def _series(runs: Sequence[Results], names: Sequence[str]) -> list[tuple[str, Series]]:
    out = []
    for r in runs:
        for s in r.series:
            if s.name in names and s.points:
                lab = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name",))
                out.append((f"{r.label}: {s.url.split('//')[-1]} {lab}".strip(), s))
    return out


def _plot_series(ax: Axes, found: list[tuple[str, Series]], title: str, ylabel: str) -> None:
    for label, s in found:
        ax.plot([p[0] for p in s.points], [p[1] for p in s.points], label=label)
    ax.set(title=title, xlabel="time (s)", ylabel=ylabel)
    _legend(ax, 6)


def plots_for(runs: Sequence[Results]) -> list[tuple[str, Plot]]:
    plots: list[tuple[str, Plot]] = [
        ("goodput", plot_goodput),
        ("latency_cdf", plot_latency_cdf),
        ("tokens_by_tenant", plot_tokens_by_tenant),
    ]
    win = _series(runs, WINDOW_SERIES)
    if win:
        plots.append(("admission_window", lambda ax, _r: _plot_series(ax, win, "Admission window", "agents")))
    kv = _series(runs, KV_SERIES)
    if kv:
        plots.append(("kv_usage", lambda ax, _r: _plot_series(ax, kv, "KV cache usage", "fraction")))
    return plots


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def render_png(runs: Sequence[Results]) -> bytes:
    """All plots on one grid (two columns)."""
    plots = plots_for(runs)
    rows = (len(plots) + 1) // 2
    fig = Figure(figsize=(12, 4 * rows))
    for i, (_, fn) in enumerate(plots):
        fn(fig.add_subplot(rows, 2, i + 1), runs)
    fig.tight_layout()
    return _png(fig)


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STEP_COLS = (
    "requests",
    "errors",
    "429s",
    "p50 ms",
    "p99 ms",
    "TTFT p50 ms",
    "queue p50 ms",
    "prompt tok",
    "completion tok",
)


def _step_row(name: str, s: dict) -> list[object]:  # type: ignore[type-arg]
    return [
        name,
        s["requests"],
        s["errors"],
        s["http_429"],
        s["latency_ms"]["p50"],
        s["latency_ms"]["p99"],
        s["ttft_ms"]["p50"],
        s["queue_wait_ms"]["p50"],
        s["prompt_tokens"],
        s["completion_tokens"],
    ]


def render_html(runs: Sequence[Results], title: str = "concur-loadgen report") -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    overview = []
    for r in runs:
        s = r.summary()
        t = s["tasks"]
        overview.append(
            [
                r.label,
                r.meta.scenario,
                r.meta.started_at,
                s["elapsed_s"],
                t["completed"],
                t["failed"],
                t["cancelled"],
                t["goodput_per_min"],
                t["latency_s"]["p50"],
                s["steps"]["steps_per_s"],
                s["steps"]["latency_ms"]["p99"],
                s["steps"]["errors"],
                s["steps"]["http_429"],
            ]
        )
    parts.append(
        "<h2>Runs</h2>"
        + _table(
            [
                "run",
                "scenario",
                "started",
                "elapsed s",
                "tasks ok",
                "failed",
                "cancelled",
                "goodput /min",
                "task p50 s",
                "steps/s",
                "step p99 ms",
                "errors",
                "429s",
            ],
            overview,
        )
    )
    for name, fn in plots_for(runs):
        fig = Figure(figsize=(8, 4))
        fn(fig.add_subplot(1, 1, 1), runs)
        fig.tight_layout()
        b64 = base64.b64encode(_png(fig)).decode()
        parts.append(f'<div class="plot"><img alt="{name}" src="data:image/png;base64,{b64}"></div>')
    for r in runs:
        s = r.summary()
        parts.append(f"<h2>{html.escape(r.label)}: by role</h2>")
        parts.append(_table(["role", *_STEP_COLS], [_step_row(k, v) for k, v in s["by_role"].items()]))
        parts.append(f"<h2>{html.escape(r.label)}: by tenant</h2>")
        parts.append(_table(["tenant", *_STEP_COLS], [_step_row(k, v) for k, v in s["by_tenant"].items()]))
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
        ".plot{display:inline-block;margin:0.5em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(
    runs: Sequence[Results], html_path: str | Path | None = None, png_path: str | Path | None = None
) -> None:
    if html_path is not None:
        Path(html_path).write_text(render_html(runs), encoding="utf-8")
    if png_path is not None:
        Path(png_path).write_bytes(render_png(runs))
