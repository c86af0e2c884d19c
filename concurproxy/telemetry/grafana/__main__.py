"""Generate the concurproxy Grafana dashboards.

    python -m concurproxy.telemetry.grafana                 # write grafana/dashboards/*.json
    python -m concurproxy.telemetry.grafana --check         # exit 1 if the committed JSON is stale
    python -m concurproxy.telemetry.grafana --out DIR       # write elsewhere

Dashboards are code so every panel is built the same way (datasource and
replica templating, units, legends) and the tests can walk every expression:
each must query a metric declared in ``concurproxy.telemetry.catalog`` or a vLLM
engine metric (``vllm:...``), and the Prometheus proof test checks that each one
returns data from a live scrape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from concurproxy.telemetry.grafana.breakdown import routing, tenants
from concurproxy.telemetry.grafana.fleet import overview, replica

BOARDS = (overview, replica, tenants, routing)
DEFAULT_OUT = Path("grafana") / "dashboards"


def render() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    out = {}
    for make in BOARDS:
        board = make()
        out[f"{board.uid}.json"] = json.dumps(board.json(), indent=2) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concurproxy.telemetry.grafana")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [n for n, text in files.items() if not (args.out / n).exists() or (args.out / n).read_text() != text]
        if stale:
            print("out of date (run python -m concurproxy.telemetry.grafana):", ", ".join(stale))
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print("wrote", args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
