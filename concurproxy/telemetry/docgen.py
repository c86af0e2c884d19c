"""Print the metrics table of docs/observability.md from the catalog.

python -m concurproxy.telemetry.docgen            # markdown table to stdout
python -m concurproxy.telemetry.docgen --write    # replace the table between the markers in the doc
"""

from __future__ import annotations

import sys
from pathlib import Path

from concurproxy.telemetry.catalog import SPECS

DOC = Path("docs") / "observability.md"
BEGIN, END = "<!-- metrics-table:begin -->", "<!-- metrics-table:end -->"


def metrics_table() -> str:
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for s in SPECS:
        labels = ", ".join(s.labels) or "—"
        rows.append(f"| `{s.name}` | {s.kind} | {labels} | {s.help} |")
    return "\n".join(rows) + "\n"


def splice(doc: str) -> str:
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{metrics_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args:
        DOC.write_text(splice(DOC.read_text()))
        print("updated", DOC)
    else:
        sys.stdout.write(metrics_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
