"""A/B: the same seeded workload against two targets, and a side-by-side table.

The runs go one after the other (A, then B) so they do not compete for a
shared engine; both use the same seed, so they send identical prompts in the
same order (task ids differ by run tag). If the targets share engines, B may
start with A's prefixes still cached: order the pair accordingly, or run twice.
Ratios are B / A.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadgen.results import Results
from loadgen.runner import run_scenario
from loadgen.scenario import Scenario


async def run_ab(sc: Scenario, target_a: str, target_b: str, **kw: Any) -> tuple[Results, Results]:
    """``kw`` goes to ``run_scenario`` for both runs (``label`` is set to ``A``/``B``)."""
    a = await run_scenario(sc, target_a, label=f"A {target_a}", **kw)
    b = await run_scenario(sc, target_b, label=f"B {target_b}", **kw)
    return a, b


_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("goodput (tasks/min)", lambda s: s["tasks"]["goodput_per_min"]),
    ("tasks completed", lambda s: s["tasks"]["completed"]),
    ("tasks failed+cancelled", lambda s: s["tasks"]["failed"] + s["tasks"]["cancelled"]),
    ("task latency p50 (s)", lambda s: s["tasks"]["latency_s"]["p50"]),
    ("task latency p99 (s)", lambda s: s["tasks"]["latency_s"]["p99"]),
    ("steps/s", lambda s: s["steps"]["steps_per_s"]),
    ("step latency p50 (ms)", lambda s: s["steps"]["latency_ms"]["p50"]),
    ("step latency p99 (ms)", lambda s: s["steps"]["latency_ms"]["p99"]),
    ("TTFT p50 (ms)", lambda s: s["steps"]["ttft_ms"]["p50"]),
    ("TTFT p99 (ms)", lambda s: s["steps"]["ttft_ms"]["p99"]),
    ("queue wait p50 (ms)", lambda s: s["steps"]["queue_wait_ms"]["p50"]),
    ("completion tokens", lambda s: s["steps"]["completion_tokens"]),
    ("errors", lambda s: s["steps"]["errors"]),
    ("429s", lambda s: s["steps"]["http_429"]),
]


def ab_table(a: Results, b: Results) -> list[tuple[str, Any, Any, float | None]]:
    """Rows of (metric, A, B, B/A) — the ratio is None when A is 0 or either side is missing."""
    sa, sb = a.summary(), b.summary()
    rows = []
    for name, get in _ROWS:
        va, vb = get(sa), get(sb)
        ratio = vb / va if isinstance(va, int | float) and isinstance(vb, int | float) and va else None
        rows.append((name, va, vb, ratio))
    return rows
