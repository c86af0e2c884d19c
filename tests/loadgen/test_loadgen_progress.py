from __future__ import annotations

import io

import pytest
from rich.console import Console

from loadgen.progress import Counters, Progress


def test_progress_is_off_without_a_tty() -> None:
    with Progress("x", enabled=True, total_tasks=3, duration_s=10) as p:
        assert not p.enabled  # pytest captures stderr: not a TTY
        p.update(Counters(), 1.0)  # a no-op


def test_progress_line_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    monkeypatch.setattr("rich.console.Console", lambda **kw: Console(file=buf, width=200, force_terminal=False))
    c = Counters(tasks_started=5, tasks_done=2, steps_ok=40, errors=1, http_429=1, inflight=3)
    for v in (0.1, 0.2, 0.3):
        c.add_latency(v)
    with Progress("swe → http://t", enabled=True, total_tasks=10, duration_s=30) as p:
        assert p.enabled
        p.update(c, 40.0)
    out = buf.getvalue()
    assert "draining 40/30s" in out and "tasks 2/10 done, 3 running" in out
    assert "1.0 steps/s" in out and "p50 200 ms" in out and "errors 1" in out and "429s 1" in out
