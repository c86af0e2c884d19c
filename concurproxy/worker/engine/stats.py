"""Counters and histograms the engine keeps (pure; exported by ``worker.metrics``).

Counter semantics follow vLLM V1 so that exported values mean the same thing:

- ``prompt_tokens``: a request's prompt length, counted once, when its first
  token is produced (recomputation after a preemption is *not* counted here).
- ``generation_tokens``: output tokens produced.
- ``prefix_queries`` / ``prefix_hits``: in tokens; each time a waiting request
  is scheduled, its current length is queried and its cache hit added.
- ``preemptions``: running requests preempted (by recompute).
- Worker-only: ``prefill_tokens_computed`` (every prefill token the model ran,
  including recomputation), ``recomputed_prefill_tokens`` (prefill of tokens
  this request had already computed before it was preempted), and
  ``evicted_prefix_recompute_tokens`` (prefill of full blocks whose content had
  been cached before and was evicted — the cost of thrashing across steps).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
ITL_BUCKETS = (  # vllm:inter_token_latency_seconds
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort")


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-export histogram: ``counts[i]`` observations in (bounds[i-1], bounds[i]]."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, n: int = 1) -> None:
        """``n`` observations of ``value`` (a decode run: one inter-token latency per request of the batch)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.total += value * n
        self.count += n

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count ≤ le), …, ("+Inf", count)]`` as Prometheus wants it."""
        out: list[tuple[str, int]] = []
        acc = 0
        for b, c in zip(self.bounds, self.counts, strict=False):
            acc += c
            out.append((repr(float(b)), acc))
        out.append(("+Inf", self.count))
        return out


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """Per-request times (engine clock, seconds) of a finished request."""

    arrival: float
    first_scheduled: float | None
    first_token: float | None
    finished: float
    num_preemptions: int

    @property
    def queue_time(self) -> float:
        return (self.first_scheduled if self.first_scheduled is not None else self.finished) - self.arrival

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.finished - self.arrival


@dataclass(slots=True)
class EngineStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    prefill_tokens_computed: int = 0
    recomputed_prefill_tokens: int = 0
    evicted_prefix_recompute_tokens: int = 0
    steps: int = 0
    busy_time: float = 0.0
    requests_added: int = 0
    requests_rejected: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    queue_time: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    # as vLLM: first scheduled -> first token (a preempted request's recompute then counts in its inter-token
    # latency), and the time between a request's consecutive tokens
    prefill_time: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))

    def record_finished(self, reason: str, timing: RequestTiming) -> None:
        self.finished[reason] = self.finished.get(reason, 0) + 1
        self.e2e.observe(timing.e2e)
        self.queue_time.observe(timing.queue_time)

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    @property
    def prefill_iterations(self) -> float | None:
        """Mean prefill time over mean inter-token latency over the engine's life (what
        ``signals/cost.py`` reads from vLLM's histograms), or None before both were observed."""
        p, i = self.prefill_time, self.itl
        if not (p.count and i.count and i.total):
            return None
        return (p.total / p.count) / (i.total / i.count)
