"""What one prefill costs an engine, in decode iterations, from its own latency histograms.

Whether serialising agents to keep their prefixes cached pays depends on how dear recomputing a
prefix is against the batching it gives up. vLLM measures both sides per request: the time a
request spends in its PREFILL phase (``vllm:request_prefill_time_seconds``) and the time between
its tokens (``vllm:inter_token_latency_seconds``, one engine iteration while it decodes). Their
means' ratio is how many decode iterations a prefill is worth on this engine, with this model and
this workload. Exported (``/admin/state``, ``concurproxy_pressure_prefill_iterations``), not acted
on: it moves with the machine and with the policy that runs (cached prefills are short, a thrashing
engine's iterations are long), so by itself it does not say whether admission pays — the bare
engine at 4x overload on the simulator's llama3-8b-h100 profile reads 1.3 where admission pays
3.3x (docs/vllm.md has the measurements).

Algorithm
    Each read's counter deltas (``_sum`` and ``_count`` of both histograms; a counter below its
    previous value restarted, Prometheus ``rate()`` semantics: the new value is the delta) are
    added to sums that decay with a half-life of ``half_life_s``, so the ratio follows the
    workload over tens of seconds, not one poll's few requests::

        ratio = (Σ prefill_s / Σ prefills) / (Σ itl_s / Σ itls)

    Unknown (None) until the decayed prefill count reaches ``min_prefills`` and some inter-token
    time was seen; engines that export neither histogram (SGLang, llama.cpp, older vLLM) stay
    unknown, and unknown changes nothing downstream.

Pure: no I/O, no clock (the caller passes each read's ``ts``); one owner.
"""

from __future__ import annotations

import math

FIELDS = ("prefill_seconds_total", "prefills_total", "itl_seconds_total", "itls_total")


def prefill_iterations(prefill_s: float, prefills: float, itl_s: float, itls: float) -> float | None:
    """Mean prefill time over mean inter-token latency, or None where either mean is undefined."""
    if prefills <= 0 or itls <= 0 or itl_s <= 0:
        return None
    return (prefill_s / prefills) / (itl_s / itls)


class PrefillCost:
    def __init__(self, half_life_s: float = 30.0, min_prefills: float = 8.0) -> None:
        if half_life_s <= 0 or min_prefills < 0:
            raise ValueError("half_life_s must be > 0 and min_prefills >= 0")
        self.half_life_s = half_life_s
        self.min_prefills = min_prefills
        self._raw: tuple[float | None, ...] = (None,) * len(FIELDS)
        self._sums = [0.0] * len(FIELDS)
        self._ts: float | None = None

    def observe(self, ts: float, raw: tuple[float | None, ...]) -> float | None:
        """Fold in one read's cumulative values (``FIELDS`` order, None: not exported); return the ratio."""
        if self._ts is not None and ts > self._ts:
            decay = math.pow(0.5, (ts - self._ts) / self.half_life_s)
            self._sums = [v * decay for v in self._sums]
        if self._ts is None or ts > self._ts:
            self._ts = ts
        for i, (value, prev) in enumerate(zip(raw, self._raw, strict=True)):
            if value is None or prev is None:
                continue
            self._sums[i] += value if value < prev else value - prev
        self._raw = raw
        return self.ratio()

    def ratio(self) -> float | None:
        """Mean prefill time over mean inter-token latency, or None while too few prefills were seen."""
        if self._sums[1] < self.min_prefills:
            return None
        return prefill_iterations(*self._sums)
