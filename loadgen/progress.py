"""Live progress on the terminal (rich), fed from the runner's counters.

Shown only when stderr is a TTY and not ``--quiet``; otherwise a no-op, so
piping the output or running in CI prints nothing but the final summary.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from loadgen.stats import percentile

_WINDOW = 2000  # latencies kept for the running p50/p99


@dataclass(slots=True)
class Counters:
    tasks_started: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    steps_ok: int = 0
    errors: int = 0
    http_429: int = 0
    inflight: int = 0
    latencies: list[float] = field(default_factory=list)

    def add_latency(self, s: float) -> None:
        self.latencies.append(s)
        if len(self.latencies) > 2 * _WINDOW:
            del self.latencies[:-_WINDOW]


class Progress:
    def __init__(self, title: str, enabled: bool, total_tasks: int | None, duration_s: float | None):
        self.enabled = enabled and sys.stderr.isatty()
        self.title, self.total, self.duration = title, total_tasks, duration_s
        self._live: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def update(self, c: Counters, elapsed_s: float) -> None:
        if self._live is None:
            return
        from rich.table import Table

        lat = c.latencies[-_WINDOW:]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        t = Table(title=self.title, show_header=True, expand=False)
        for col in (
            "elapsed",
            "tasks done",
            "running",
            "steps/s",
            "p50 step",
            "p99 step",
            "in flight",
            "errors",
            "429s",
        ):
            t.add_column(col, justify="right")
        total = f"/{self.total}" if self.total else ""
        dur = f"/{self.duration:.0f}s" if self.duration else "s"
        t.add_row(
            f"{elapsed_s:.0f}{dur}",
            f"{c.tasks_done}{total}",
            str(c.tasks_started - c.tasks_done - c.tasks_failed),
            f"{c.steps_ok / elapsed_s:.1f}" if elapsed_s > 0 else "-",
            f"{p50 * 1000:.0f} ms" if p50 is not None else "-",
            f"{p99 * 1000:.0f} ms" if p99 is not None else "-",
            str(c.inflight),
            f"[red]{c.errors}[/red]" if c.errors else "0",
            f"[yellow]{c.http_429}[/yellow]" if c.http_429 else "0",
        )
        self._live.update(t)
