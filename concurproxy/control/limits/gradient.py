"""Latency-gradient window controller, for replicas without a usable KV signal."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from concurproxy.config.admission import GradientConfig
from concurproxy.control.limits.base import StepSample, WindowDecision
from concurproxy.control.types import PressureSnapshot

#: Latencies outside these bounds are not a step's (and would break the ratios): ignored.
_MIN_LATENCY_S = 1e-6
_MAX_LATENCY_S = 1e6


@dataclass(slots=True)
class _Mean:
    """Token-weighted means over the steps added since the last ``clear``: O(1), no lists."""

    latency_s: float = 0.0  # Σ latency
    tokens: int = 0  # Σ output tokens (each at least 1)
    running: float = 0.0  # Σ running · tokens
    n: int = 0
    longest_s: float = 0.0  # the longest step

    def add(self, latency_s: float, tokens: int, running: int) -> None:
        self.latency_s += latency_s
        self.tokens += tokens
        self.running += running * tokens
        self.n += 1
        self.longest_s = max(self.longest_s, latency_s)

    def level(self) -> _Level:
        return _Level(self.latency_s / self.tokens, self.running / self.tokens)

    def clear(self) -> None:
        self.latency_s, self.tokens, self.running, self.n, self.longest_s = 0.0, 0, 0.0, 0, 0.0


@dataclass(frozen=True, slots=True)
class _Level:
    """Latency (s per output token) measured at a mean of ``running`` running steps (token-weighted)."""

    latency: float
    running: float


@dataclass(slots=True)
class _Probe:
    """A baseline re-measurement in progress, one level at a time (see `GradientController`, *Probe*)."""

    restore: float  # the window before the probe
    above: _Level  # the level above this one (first: the last sample window before the probe)
    target: int  # the window at this level
    started: float  # when this level started
    longest_s: float  # the longest step seen lately: a drain lasts up to one such step
    drained_at: float | None = None  # when running steps first fell to this level's share
    mean: _Mean = field(default_factory=_Mean)
    measured: _Level | None = None  # the deepest level measured so far
    queueing_at: int | None = None  # the deepest window at which latency still rose with load

    def drained(self, running: int, fraction: float) -> bool:
        return running <= max(1.0, fraction * self.above.running)


class GradientController:
    """Window W from the gradient of step latency: Gradient2's law with a re-probed baseline (Envoy).

    For replicas that never gave a usable KV signal, or whose signal went stale: it reads no
    pressure (``stale_after_s`` None; ``update`` uses only ``in_use`` and ``now``) and learns
    from every ended step, fed through ``on_step``.

    Algorithm. Latency is *per output token*, ``latency_s / max(1, output_tokens)``: a step's
    latency is its wait and prefill plus one inter-token interval per output token, so the raw
    latencies of a 20-token tool call and a 2 000-token answer do not compare, while per token
    both tend to the engine's inter-token time — the quantity that concurrency slows. Steps are
    pooled token-weighted, ``Σ latency / Σ tokens`` (time per generated token of the pool), so
    a one-token step, all prefill per token, weighs one token. Failed or cancelled steps
    (``ok`` False) carry no usable latency and are ignored (so are latencies outside
    [1 µs, 10⁶ s], NaN included). Each ``window_s`` holding at least
    ``min_samples`` steps (else it extends) is one law step on its pooled latency ``short``::

        long  ← short                                     first window (warm-up)
        long  ← long + (short − long) · baseline_fall     short < long (drift down: fast)
        long  ← long + (short − long) / baseline_windows  otherwise (slow rise)
        g     = clamp(0.5, 1.0, tolerance · long / short)
        g = 1 and in_use < min_utilisation · W          → W unchanged (no evidence W binds)
        base  = W if g = 1 else min(W, max(in_use, 1))    (a cut starts from what is used)
        new   = base · g + queue_allowance · sqrt(base)
        W     ← clamp(min, max, base · (1 − smoothing) + new · smoothing), and not above W if g < 1

    Below the engine's knee latency is flat, ``g = 1``, and W grows by ``smoothing ·
    queue_allowance · sqrt(W)`` per window; past it latency rises with concurrency, ``g < 1``
    and W is cut. Against queueing latency (``∝ running`` past a knee k) and a baseline
    measured below the knee, W settles near ``tolerance · k + sqrt(W)``.

    Probe (Envoy's min-RTT window, descending). With ``tolerance`` above 1 the long term
    drifts up under sustained load (it follows a short term the law lets sit above it), and a
    baseline first measured in overload is too high to ever cut. So after the first window,
    then ``probe_interval_s`` after the previous probe (plus up to ``probe_jitter`` of it when
    handed ``rng``; a due probe waits for the next window closed with agents in use),
    and at once after five law steps in a row with ``g`` at its floor 0.5 (latency twice
    the tolerance over the baseline: far past the knee, or a stale baseline — Envoy re-probes
    after five windows at its minimum limit), W is shrunk in levels:

    * level 1: ``max(min, floor(probe_fraction · min(W, in_use)))``; each next level takes
      ``probe_fraction`` of the one above. Agents over it lose their slots between steps (the
      admission window pauses them), so the running steps drain; the drain ends at the first
      sample whose ``running`` is at most ``probe_fraction`` of the level above's mean running.
    * A level pools the steps that *started* after its drain (start ≥ last ``update`` time −
      ``latency_s``). It ends after ``probe_samples`` of them, or after ``max(probe_max_s, 2 ×
      the longest step seen lately)`` — a drain lasts up to one such step — and then counts
      only with at least half of them.
    * If latency fell nearly in proportion to the running steps, ``log(L_above / L) ≥
      probe_elasticity · log(r_above / r)``, the engine was still queueing: the knee is at
      most this level, and the probe goes one level deeper. Otherwise (latency hardly moved:
      below the knee, or batching) it ends.

    At the end ``long`` is the deepest level's latency (kept when no level counted) and W
    goes back to its value before the probe — or to ``tolerance ×`` the deepest level that
    was still queueing, if lower. Descending costs no throughput (a queueing engine is
    saturated), so a deep probe happens only when W is far past the knee; near it, one level
    at half the window (throughput falls by less than half, for about two step times).

    Agents versus running steps: W counts agents holding slots (``in_use`` ≤ W, the small-agent
    lane aside), but latency rises with the steps *running* on the engine. Slots are held
    across tool pauses, so ``running ≈ duty · in_use`` (duty: the share of an agent's time in
    a step). The law is multiplicative and needs no duty: cutting W by a factor cuts running
    steps by the same factor at a steady duty, so W settles where the running steps sit at
    the knee. ``running`` serves the probe only: when it has drained, and the elasticity.

    Defaults and why (all are ``GradientConfig`` fields):

    * ``initial`` 64: like Envoy, start generous and cut on evidence — a first burst of 32
      agents is admitted at once (none waits a step time for a slot), and there is no
      baseline yet to justify less. The first probe then finds a lower knee quickly.
    * ``tolerance`` 1.5: Gradient2's historical ``rttTolerance``. Batching slows each token a
      little as the batch grows (the throughput gain is far larger), so a tolerance near 1
      would cut a healthy engine; queueing past the knee doubles latency when load doubles.
    * ``smoothing`` 0.2, ``queue_allowance`` 1 · sqrt(W): Gradient2's smoothing, Envoy's
      burst headroom; with 1 s windows W grows by 0.2 · sqrt(W) agents/s (1.6/s at 64).
    * ``window_s`` 1, ``min_samples`` 4: LLM steps last seconds; a shorter window holds too
      few steps for a stable mean.
    * ``baseline_windows`` 600, ``baseline_fall`` 0.1: Gradient2's 600-sample long window
      (little upward drift between probes); falling fast recovers after overload.
    * ``probe_interval_s`` 60, ``probe_fraction`` 0.5, ``probe_samples`` 8, ``probe_max_s``
      30: Envoy re-probes every 60 s at a tiny concurrency; agents' steps last seconds, so a
      level only halves the window and is bounded in time. ``probe_elasticity`` 0.7: a level
      goes deeper only when latency fell nearly as much as the load (queueing); through the live
      proxy a pure queue measured 0.83 (the proxy's own time and the sampling blur it), so 0.9
      stopped the descent at its first level.
    * ``min_utilisation`` 1.0: as ``aimd``; agent slots are a stable occupancy signal.

    Concurrency: single caller; not thread-safe. Never reads a clock (``now`` comes with
    ``update``; ``on_step`` is timed by the previous ``update``) and draws randomness only from
    the ``rng`` it is handed (``random.Random(seed).random``). O(1) per sample: running sums.
    """

    name = "gradient"
    stale_after_s: float | None = None

    def __init__(
        self,
        config: GradientConfig | None = None,
        *,
        initial: int | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        """``initial`` overrides ``config.initial`` (clamped to [min, max]): a replica that falls back
        to this controller mid-run can start from the window it had. ``rng`` returns floats in
        [0, 1) for the probe jitter (none without it)."""
        self._cfg = config or GradientConfig()
        self._rng = rng
        self._w = self._clamp(float(self._cfg.initial if initial is None else initial))
        self._short = _Mean()
        self._long: float | None = None
        self._recent: _Level | None = None
        self._longest_s = 0.0  # the longest step of the last window (scales probe timeouts)
        self._gradient = 1.0
        self._last_now: float | None = None
        self._window_start = 0.0
        self._next_probe = -math.inf  # the first probe follows the first window
        self._probe: _Probe | None = None
        self._floored = 0  # law steps in a row with the gradient at its floor

    # ---- read-only views (tests, /admin/state) -----------------------------------------------
    @property
    def window(self) -> int:
        return max(self._cfg.min, min(self._cfg.max, int(self._w)))

    @property
    def baseline_s_per_token(self) -> float | None:
        """The long-term latency (s per output token); None before the first window."""
        return self._long

    @property
    def recent_s_per_token(self) -> float | None:
        """The short-term latency of the last window (s per output token)."""
        return None if self._recent is None else self._recent.latency

    @property
    def gradient(self) -> float:
        return self._gradient

    @property
    def probing(self) -> bool:
        return self._probe is not None

    # ---- samples -----------------------------------------------------------------------------
    def on_step(self, sample: StepSample) -> None:
        lat = sample.latency_s
        if not sample.ok or not _MIN_LATENCY_S <= lat <= _MAX_LATENCY_S:
            return  # failed, cancelled, or not a step's latency (NaN, ≤ 0, absurd)
        tokens = max(1, sample.output_tokens)
        p = self._probe
        if p is None:
            self._short.add(lat, tokens, sample.running)
            return
        assert self._last_now is not None  # a probe starts in update
        now = sample.at if sample.at is not None else self._last_now  # (between updates: date it by its end)
        p.longest_s = max(p.longest_s, lat)
        if p.drained_at is None:
            if p.drained(sample.running, self._cfg.probe_fraction):
                p.drained_at = now  # the steps of the level above are gone
        elif now - lat >= p.drained_at:
            p.mean.add(lat, tokens, sample.running)  # started after the drain: ran at this level

    # ---- the law -----------------------------------------------------------------------------
    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision:
        """One control step; ``snapshot`` is ignored (this controller reads no pressure)."""
        before = self.window
        if self._last_now is None:
            self._window_start = now
        self._last_now = now
        reason = self._step(in_use, now)
        after = self.window
        return WindowDecision(after, after != before, reason)

    def _interval(self) -> float:
        jitter = self._cfg.probe_jitter * self._rng() if self._rng is not None else 0.0
        return self._cfg.probe_interval_s * (1.0 + jitter)

    def _step(self, in_use: int, now: float) -> str:
        if self._probe is not None:
            return self._probe_step(self._probe, now)
        if now - self._window_start < self._cfg.window_s or self._short.n < self._cfg.min_samples:
            return "hold-collecting"
        here = self._short.level()
        self._recent, self._longest_s = here, self._short.longest_s
        self._short.clear()
        self._window_start = now
        reason = self._law(here.latency, in_use, now)
        if now >= self._next_probe and in_use > 0:  # a due probe waits for a window under load
            return self._start_probe(here, in_use, now)
        return reason

    def _law(self, short: float, in_use: int, now: float) -> str:
        cfg = self._cfg
        long = self._long
        if long is None:
            long = short
        elif short < long:
            long += (short - long) * cfg.baseline_fall
        else:
            long += (short - long) / cfg.baseline_windows
        self._long = long
        g = min(1.0, max(0.5, cfg.tolerance * long / short))
        self._gradient = g
        self._floored = self._floored + 1 if g <= 0.5 else 0
        if self._floored >= 5:
            self._floored = 0
            self._next_probe = now  # latency ≥ 2·tolerance × baseline for 5 windows: re-measure it
        if g >= 1.0 and in_use < cfg.min_utilisation * self.window:
            return "hold-underused"
        base = self._w if g >= 1.0 else min(self._w, float(max(in_use, 1)))
        new = base * g + cfg.queue_allowance * math.sqrt(base)
        old = self._w
        w = base * (1.0 - cfg.smoothing) + new * cfg.smoothing
        self._w = self._clamp(w if g >= 1.0 else min(w, old))  # latency over tolerance never grows W
        if self._w != old:
            return "increase" if self._w > old else "decrease-latency"
        return "hold-max" if g >= 1.0 else "hold-latency"  # at max / the cut rounds to nothing

    def _clamp(self, w: float) -> float:
        return min(float(self._cfg.max), max(float(self._cfg.min), w))

    # ---- the probe ---------------------------------------------------------------------------
    def _start_probe(self, above: _Level, in_use: int, now: float) -> str:
        target = max(self._cfg.min, math.floor(self._cfg.probe_fraction * min(self.window, in_use)))
        self._probe = _Probe(self._w, above, target, now, self._longest_s)
        self._w = float(target)
        self._short.clear()
        return "probe-start"

    def _probe_step(self, p: _Probe, now: float) -> str:
        cfg = self._cfg
        if p.mean.n < cfg.probe_samples and now - p.started < max(cfg.probe_max_s, 2.0 * p.longest_s):
            return "probe"
        if p.mean.n > 0 and 2 * p.mean.n >= cfg.probe_samples:
            here = p.mean.level()
            p.measured = here
            deeper = max(cfg.min, math.floor(cfg.probe_fraction * p.target))
            if deeper < p.target and self._queueing(p.above, here):
                p.queueing_at = p.target
                p.above, p.target, p.started, p.drained_at = here, deeper, now, None
                p.mean.clear()
                self._w = float(deeper)
                return "probe-deeper"
        return self._end_probe(p, now)

    def _queueing(self, above: _Level, here: _Level) -> bool:
        """Latency fell about in proportion to the running steps between the two levels."""
        if here.running >= above.running or here.latency >= above.latency:
            return False
        return math.log(above.latency / here.latency) >= self._cfg.probe_elasticity * math.log(
            above.running / here.running
        )

    def _end_probe(self, p: _Probe, now: float) -> str:
        if p.measured is not None:
            self._long = p.measured.latency
        restore = p.restore
        if p.queueing_at is not None:
            restore = min(restore, self._cfg.tolerance * p.queueing_at)
        self._w = self._clamp(restore)
        self._probe = None
        self._short.clear()
        self._window_start = now
        self._next_probe = now + self._interval()
        return "probe-end" if p.measured is not None else "probe-timeout"
