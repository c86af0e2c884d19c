"""Statistics over results: percentiles, per-group step summaries, task goodput.

* ``percentile(xs, q)``: linear interpolation between closest ranks
  (``x[floor(p)] + (p - floor(p)) * (x[ceil(p)] - x[floor(p)])`` with
  ``p = q/100 * (n-1)``, numpy's default); ``None`` for no data.
* goodput = tasks completed within their deadline / run minutes, where the
  run lasts ``meta.elapsed_s`` (tasks without a deadline count when completed).
* ``goodput_over_time``: the same, per ``bin_s`` bucket of task end time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.results import Results, StepResult, TaskResult


def percentile(values: Iterable[float], q: float) -> float | None:
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    p = q / 100 * (len(xs) - 1)
    lo, hi = math.floor(p), math.ceil(p)
    return xs[lo] + (p - lo) * (xs[hi] - xs[lo])


def _pcts(xs: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in (50, 90, 99):
        v = percentile(xs, q)
        out[f"p{q}"] = None if v is None else round(v * scale, 3)
    out["mean"] = round(sum(xs) / len(xs) * scale, 3) if xs else None
    return out


def summarize_steps(steps: Sequence[StepResult], elapsed_s: float) -> dict[str, Any]:
    ok = [s for s in steps if s.ok]
    qw = [s.queue_wait_ms for s in ok if s.queue_wait_ms is not None]
    return {
        "requests": len(steps),
        "ok": len(ok),
        "errors": len(steps) - len(ok),
        "http_429": sum(1 for s in steps if s.status == 429),
        "latency_ms": _pcts([s.total_s for s in ok], 1000),
        "ttft_ms": _pcts([s.ttft_s for s in ok if s.ttft_s is not None], 1000),
        "queue_wait_ms": _pcts(qw),
        "prompt_tokens": sum(s.prompt_tokens for s in ok),
        "completion_tokens": sum(s.completion_tokens for s in ok),
        "steps_per_s": round(len(ok) / elapsed_s, 3) if elapsed_s > 0 else None,
    }


def group(steps: Iterable[StepResult], key: Callable[[StepResult], str]) -> dict[str, list[StepResult]]:
    out: dict[str, list[StepResult]] = defaultdict(list)
    for s in steps:
        out[key(s)].append(s)
    return dict(sorted(out.items()))


def goodput_per_min(tasks: Iterable[TaskResult], elapsed_s: float) -> float:
    good = sum(1 for t in tasks if t.in_deadline)
    return good / (elapsed_s / 60) if elapsed_s > 0 else 0.0


def goodput_over_time(tasks: Iterable[TaskResult], elapsed_s: float, bin_s: float = 10.0) -> list[tuple[float, float]]:
    """[(bin start s, tasks in deadline per minute in that bin)], bins up to the run end
    (the last bin, when shorter than ``bin_s``, is scaled by its own width)."""
    n = max(1, math.ceil(elapsed_s / bin_s))
    counts = [0] * n
    for t in tasks:
        if t.in_deadline and t.end_s is not None:
            counts[min(n - 1, int(t.end_s // bin_s))] += 1
    # the last bin may be partial: divide by its real width
    return [
        (i * bin_s, c * 60.0 / max(1e-9, min(bin_s, elapsed_s - i * bin_s) if elapsed_s > 0 else bin_s))
        for i, c in enumerate(counts)
    ]


def summarize_tasks(tasks: Sequence[TaskResult], elapsed_s: float) -> dict[str, Any]:
    done = [t for t in tasks if t.status == "ok"]
    lat = [t.latency_s for t in done if t.latency_s is not None]
    return {
        "started": len(tasks),
        "completed": len(done),
        "failed": sum(1 for t in tasks if t.status == "failed"),
        "cancelled": sum(1 for t in tasks if t.status == "cancelled"),
        "in_deadline": sum(1 for t in tasks if t.in_deadline),
        "goodput_per_min": round(goodput_per_min(tasks, elapsed_s), 3),
        "latency_s": _pcts(lat),
    }


def summarize(res: Results) -> dict[str, Any]:
    el = res.meta.elapsed_s
    return {
        "elapsed_s": round(el, 3),
        "tasks": summarize_tasks(res.tasks, el),
        "tasks_by_tenant": {k: summarize_tasks(v, el) for k, v in _group_tasks(res.tasks).items()},
        "steps": summarize_steps(res.steps, el),
        "by_role": {k: summarize_steps(v, el) for k, v in group(res.steps, lambda s: s.role).items()},
        "by_tenant": {k: summarize_steps(v, el) for k, v in group(res.steps, lambda s: s.tenant).items()},
    }


def _group_tasks(tasks: Iterable[TaskResult]) -> dict[str, list[TaskResult]]:
    out: dict[str, list[TaskResult]] = defaultdict(list)
    for t in tasks:
        out[t.tenant].append(t)
    return dict(sorted(out.items()))
