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


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


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
        from rich.text import Text

        lat = c.latencies[-_WINDOW:]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        phase = "draining " if self.duration and elapsed_s > self.duration else ""
        total = f"/{self.total}" if self.total else ""
        dur = f"/{self.duration:.0f}" if self.duration else ""
        line = Text.assemble(
            (f"{self.title}  ", "bold"),
            f"{phase}{elapsed_s:.0f}{dur}s │ tasks {c.tasks_done}{total} done, ",
            f"{c.tasks_started - c.tasks_done - c.tasks_failed} running │ ",
            f"{c.steps_ok / elapsed_s if elapsed_s > 0 else 0:.1f} steps/s │ ",
            f"step p50 {_ms(p50)} ms p99 {_ms(p99)} ms │ in flight {c.inflight} │ ",
            (f"errors {c.errors}", "red" if c.errors else ""),
            " │ ",
            (f"429s {c.http_429}", "yellow" if c.http_429 else ""),
        )
        self._live.update(line)
