"""Turn successive :class:`EngineSample` reads into :class:`PressureSnapshot` values.

Algorithm
    Gauges (KV usage, running, waiting) are copied from the newest sample.
    Rates come from counter deltas over a sliding window of recent samples:

        preemptions_per_s = Δpreemptions / Δts
        prefix_hit_rate   = Δhits / Δqueries           (None when Δqueries == 0)

    Counters are first made reset-proof: each new raw value ``v`` after a
    previous raw value ``p`` adds ``v - p`` to a monotonic running total, or
    ``v`` when ``v < p`` (the engine restarted and the counter began again at
    zero — Prometheus ``rate()`` semantics). The window base is the oldest
    kept sample no older than ``rate_window_s`` before the newest (at least
    the previous sample), so a 250 ms poll still yields a ~1 s rate.
    Engines that export the hit rate as a gauge (SGLang, vLLM V0) use it as is.
    ``prefill_iterations`` (what a prefill costs in decode iterations) comes from the engine's
    latency histograms over a longer, decaying window: see ``signals/cost.py``.

Staleness
    ``snapshot_at(now)`` returns ``ok=False`` with an error when the newest
    sample is older than ``stale_after_s`` or the last read failed, so a
    stale or failing source counts as saturated. The last known values stay
    in the snapshot for visibility; ``ok`` is what decides.

Pure: no I/O, no clock reads (times are passed in). Not thread-safe: one
owner (the poller task) calls it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.cost import FIELDS as COST_FIELDS
from concurproxy.signals.cost import PrefillCost
from concurproxy.signals.engine_metrics import EngineSample

_COUNTERS = ("preemptions_total", "prefix_queries_total", "prefix_hits_total")


@dataclass(frozen=True, slots=True)
class _Point:
    ts: float
    totals: tuple[float | None, ...]  # reset-corrected, same order as _COUNTERS


class PressureTracker:
    """Per-replica state between polls: last sample, counter history, failures."""

    def __init__(self, stale_after_s: float = 1.0, rate_window_s: float = 1.0, source: str = "engine-metrics"):
        if stale_after_s <= 0 or rate_window_s < 0:
            raise ValueError("stale_after_s must be > 0 and rate_window_s >= 0")
        self.stale_after_s = stale_after_s
        self.rate_window_s = rate_window_s
        self.source = source
        self._raw: tuple[float | None, ...] | None = None
        self._totals: list[float | None] = [None] * len(_COUNTERS)
        self._points: deque[_Point] = deque()
        self._last: PressureSnapshot | None = None
        self._error: str | None = None
        self._error_ts: float | None = None
        self.cost = PrefillCost()
        self.consecutive_failures = 0
        self.failures = 0
        self.resets = 0

    # -- inputs -----------------------------------------------------------------------------
    def observe(self, sample: EngineSample) -> PressureSnapshot:
        """Fold in a successful read; return the fresh snapshot."""
        raw = tuple(getattr(sample, c) for c in _COUNTERS)
        for i, value in enumerate(raw):
            prev = None if self._raw is None else self._raw[i]
            total = self._totals[i]
            if value is None:
                continue
            if prev is None or total is None:
                self._totals[i] = value
            elif value < prev:
                self.resets += 1
                self._totals[i] = total + value
            else:
                self._totals[i] = total + (value - prev)
        self._raw = raw
        point = _Point(sample.ts, tuple(self._totals))
        if self._points and sample.ts <= self._points[-1].ts:
            self._points.clear()  # clock went backwards or duplicate read: restart the window
        self._points.append(point)
        while len(self._points) > 2 and self._points[1].ts <= sample.ts - self.rate_window_s:
            self._points.popleft()
        base = self._points[0] if len(self._points) > 1 else None
        pre_rate, hit_rate = self._rates(base, point)
        if sample.prefix_hit_rate_gauge is not None:
            hit_rate = min(max(sample.prefix_hit_rate_gauge, 0.0), 1.0)
        kv = None if sample.kv_usage is None else min(max(sample.kv_usage, 0.0), 1.0)
        prefill_iterations = self.cost.observe(sample.ts, tuple(getattr(sample, f) for f in COST_FIELDS))
        snap = PressureSnapshot(
            ts=sample.ts,
            ok=True,
            kv_usage=kv,
            running=sample.running,
            waiting=sample.waiting,
            preemptions_per_s=pre_rate,
            prefix_hit_rate=hit_rate,
            kv_capacity_tokens=sample.kv_capacity_tokens,
            prefill_iterations=prefill_iterations,
            source=self.source,
        )
        self._last = snap
        self._error = self._error_ts = None
        self.consecutive_failures = 0
        return snap

    def observe_snapshot(self, snap: PressureSnapshot) -> PressureSnapshot:
        """Fold in a snapshot computed elsewhere (the node agent's feed)."""
        self._last = snap
        if snap.ok:
            self._error = self._error_ts = None
            self.consecutive_failures = 0
        else:
            self._note_failure(snap.ts, snap.error or "source reported not ok")
        return self.snapshot_at(snap.ts)

    def observe_failure(self, ts: float, error: str) -> PressureSnapshot:
        """Record a failed read at ``ts``; the snapshot is not ok from now on."""
        self._note_failure(ts, error)
        return self.snapshot_at(ts)

    def _note_failure(self, ts: float, error: str) -> None:
        self._error, self._error_ts = error, ts
        self.failures += 1
        self.consecutive_failures += 1

    # -- output -----------------------------------------------------------------------------
    def snapshot_at(self, now: float) -> PressureSnapshot:
        """The snapshot as seen at ``now``: not ok when failing or older than ``stale_after_s``."""
        last = self._last
        if self._error is not None:
            base = last or PressureSnapshot(ts=self._error_ts or now, source=self.source)
            return replace(base, ok=False, error=self._error, ts=max(base.ts, self._error_ts or base.ts))
        if last is None:
            return PressureSnapshot(ts=now, ok=False, source=self.source, error="no data yet")
        age = now - last.ts
        if age > self.stale_after_s:
            return replace(
                last, ok=False, error=f"stale: newest data is {age:.3f} s old (limit {self.stale_after_s} s)"
            )
        return last

    @staticmethod
    def _rates(base: _Point | None, cur: _Point) -> tuple[float | None, float | None]:
        if base is None or cur.ts <= base.ts:
            return None, None
        dt = cur.ts - base.ts
        b_pre, b_q, b_h = base.totals
        c_pre, c_q, c_h = cur.totals
        pre = None if b_pre is None or c_pre is None else max(c_pre - b_pre, 0.0) / dt
        hit = None
        if None not in (b_q, c_q, b_h, c_h):
            dq = c_q - b_q  # type: ignore[operator]
            if dq > 0:
                hit = min(max((c_h - b_h) / dq, 0.0), 1.0)  # type: ignore[operator]
        return pre, hit
