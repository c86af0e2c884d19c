"""Render a dashboard's panels from Prometheus into a PNG, without Grafana.

    python -m concurproxy.telemetry.grafana.snapshot --prometheus http://127.0.0.1:9090 \\
        --dashboard grafana/dashboards/concurproxy-overview.json --minutes 5 --out overview.png

Each panel is drawn at its Grafana grid position with the same PromQL (template
variables set to "All", ``$__rate_interval`` to ``--rate-interval``): time series
as lines with the panel's legend format, stats as their last value. It is a
faithful picture of what the queries return, not a pixel copy of Grafana.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def substitute(expr: str, rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", "15s")
    return re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)


def query_range(client: httpx.Client, prom: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    r = client.get(f"{prom}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step})
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt).strip()
    return text or ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def _right_axis_pattern(panel: dict[str, Any]) -> str | None:
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        props = {p["id"]: p["value"] for p in o.get("properties", [])}
        if o["matcher"]["id"] == "byRegexp" and props.get("custom.axisPlacement") == "right":
            return str(o["matcher"]["options"])
    return None


def render(
    prom: str,
    board: dict[str, Any],
    out: Path,
    *,
    minutes: float = 5,
    rate_interval: str = "1m",
    end: float | None = None,
) -> int:
    """Draw every panel of ``board``; returns how many panels had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time() if end is None else end
    start, step = end - minutes * 60, max(1.0, minutes * 60 / 300)
    panels = board["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, height * 0.42), dpi=80)
    grid = fig.add_gridspec(height, 24, hspace=2.5, wspace=1.2)
    fig.suptitle(f"{board['title']} — rendered from Prometheus ({minutes:g} min)", fontsize=16, y=0.995)
    with_data = 0
    with httpx.Client(timeout=10) as client:
        for p in panels:
            g = p["gridPos"]
            if p["type"] == "row":
                ax = fig.add_subplot(grid[g["y"] : g["y"] + 1, :])
                ax.axis("off")
                ax.text(0, 0.5, p["title"], fontsize=13, weight="bold", va="center")
                continue
            ax = fig.add_subplot(grid[g["y"] + 1 : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
            ax.set_title(p["title"], fontsize=10)
            drew = False
            right = _right_axis_pattern(p)
            twin = ax.twinx() if right else None
            for t in p["targets"]:
                for series in query_range(client, prom, substitute(t["expr"], rate_interval), start, end, step):
                    xs = [(float(ts) - end) / 60 for ts, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    if p["type"] == "stat":
                        ax.axis("off")
                        ax.text(0.5, 0.4, f"{ys[-1]:.3g}", fontsize=22, ha="center", va="center")
                    else:
                        name = legend(t.get("legendFormat", ""), series["metric"])
                        target_ax = twin if twin is not None and right and re.fullmatch(right, name) else ax
                        target_ax.plot(xs, ys, label=name, lw=1.2, ls="--" if target_ax is twin else "-")
                    drew = True
            if p["type"] != "stat":
                ax.tick_params(labelsize=7)
                ax.set_xlabel("minutes", fontsize=7)
                if drew:
                    handles, labels = ax.get_legend_handles_labels()
                    if twin is not None:
                        h2, l2 = twin.get_legend_handles_labels()
                        handles, labels = handles + h2, labels + l2
                        twin.tick_params(labelsize=7)
                    ax.legend(handles, labels, fontsize=6, loc="upper left", ncol=2)
            with_data += drew
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return with_data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m concurproxy.telemetry.grafana.snapshot")
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", type=Path, default=Path("grafana/dashboards/concurproxy-overview.json"))
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    board = json.loads(args.dashboard.read_text())
    n = render(args.prometheus, board, args.out, minutes=args.minutes, rate_interval=args.rate_interval)
    print(f"wrote {args.out}: {n} of {sum(p['type'] != 'row' for p in board['panels'])} panels with data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
