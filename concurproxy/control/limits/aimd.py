"""AIMD window controller driven by KV-cache pressure (the default)."""

from __future__ import annotations

import math
from collections import deque

from concurproxy.config.admission import AIMDConfig
from concurproxy.control.limits.base import StepSample, WindowDecision, snapshot_problem
from concurproxy.control.types import PressureSnapshot


class AIMDController:
    """Additive-increase / multiplicative-decrease of a replica's active-agent window W.

    Algorithm (one step per *new* pressure sample; a sample with a ``ts`` already
    seen is ignored, so calling ``update`` more often than the poller reads never
    grows W faster)::

        stale / failed / missing sample    → W unchanged, saturated (admit nothing new)
        thrash  and  not in cooldown       → W = max(min, min(b − 1, ceil(b · decrease))), b = min(W, in_use);
                                             cooldown starts
        thrash  in cooldown                → W unchanged
        peak_kv < kv_target  and  in_use ≥ u·W  and  W < 2·acked + 1
                     and  not in cooldown  → W = min(max, W + increase)
        otherwise                          → W unchanged (hysteresis band, window not full, …)

    ``peak_kv`` is the highest KV usage of the last ``kv_peak_samples`` samples:
    agents free their running blocks during every tool pause, so one sample of
    the gauge swings between empty and full; growing only when the recent peak
    is below target stops W from climbing on a lucky sample. The cut starts
    from ``min(W, in_use)``: when fewer agents than W hold slots (the footprint
    budget bound first), the thrash happened at ``in_use``, so cutting W alone
    would change nothing.

    where ``thrash`` is either

    * ``preemptions_per_s > 0`` at any KV level — vLLM V1 preempts (recompute) only
      when it cannot allocate a block, so a preemption *is* the cache overflowing,
      whatever the sampled usage says (the victim's blocks are already freed when
      the gauge is read); or
    * ``kv_usage ≥ kv_high_water`` together with a prefix-hit rate that fell by at
      least ``hit_rate_drop`` since the previous sample (agents' hot prefixes are
      being evicted: CONCUR's signal) or a waiting queue that grew since the
      previous sample (the engine can no longer place new work).

    KV usage above ``kv_high_water`` *alone* only holds W: a full cache of hot
    prefixes is the goal, not a problem; the admission-time footprint budget in
    the admission window guards against the lag of this signal.

    Defaults and why (all are ``AIMDConfig`` policy fields):

    * ``kv_target`` 0.80 / ``kv_high_water`` 0.90: prime-rl and ThunderAgent run
      at a ~0.80 setpoint and back off near 0.90–0.95. The band between them is
      the hysteresis: W neither grows nor shrinks there, so it does not oscillate.
    * ``decrease`` 0.7: CONCUR/TCP-style back-off; sharper than Netflix's 0.9
      because a KV thrash feeds itself (evicted prefixes are recomputed, evicting
      more) and KV usage lags admission by at least one step.
    * ``increase`` 1 per interval (250 ms): probes for capacity at 4 agents/s per
      replica; a new agent's KV grows over several steps, so faster probing
      overshoots before the signal shows it.
    * ``cooldown_intervals`` 2: after a cut, neither cut again nor grow for two
      intervals — the signal still reflects the load before the cut.
    * ``min_utilisation`` 1.0: only grow a *full* window (Netflix grows at half
      use, ``inflight * 2 >= limit``, because in-flight counts are instantaneous
      and noisy; agent slots are held across steps and tool pauses, so occupancy
      is a stable signal). Otherwise W drifts up while the footprint budget or
      a lack of demand is what binds, and the next burst is admitted all at once.
    * **Slow start** (``W < 2·acked + 1``, no setting): W grows only while it is less than
      twice the slot holders whose KV the readings have seen (``acked``: a step of theirs ended
      since their admission), plus one. A KV reading cannot show an agent whose first step has
      not run yet, so growth on such readings is growth on no signal: on vLLM's CPU build (the
      tier's agent loop, 0.1 agent per 50 ms read) five agents were admitted in the 2.4 s before
      the first step ended and their growth preempted three times; as in TCP's slow start, W at
      most doubles per round of feedback. With every holder acked the bound is above any W that
      may grow (``in_use ≥ W``). It holds growth only: the initial W admits without feedback
      (a cap on admission itself, tried, cost llama3-8b-h100 in virtual time 122 -> 111
      tasks/min at 2-4x overload, 17% recomputed).
    * ``kv_peak_samples`` 4 (one second at 250 ms) and ``hit_rate_drop`` 0.10
      (absolute): see above; measured on the ``tiny`` profile (docs/admission.md).

    Concurrency: single caller; not thread-safe. Never reads a clock.
    """

    name = "aimd"

    def __init__(self, config: AIMDConfig | None = None) -> None:
        self._cfg = config or AIMDConfig()
        self._w = float(self._cfg.initial)
        self._min_utilisation = self._cfg.min_utilisation
        self._hit_rate_drop = self._cfg.hit_rate_drop
        self.stale_after_s: float | None = self._cfg.stale_after_ms / 1000.0
        self._cooldown_s = self._cfg.cooldown_intervals * self._cfg.interval_ms / 1000.0
        self._last_decrease_at: float | None = None
        self._last_ts: float | None = None
        self._prev_hit: float | None = None
        self._prev_waiting: int | None = None
        self._kv_recent: deque[float] = deque(maxlen=self._cfg.kv_peak_samples)

    @property
    def window(self) -> int:
        return max(self._cfg.min, min(self._cfg.max, int(self._w)))

    def _in_cooldown(self, now: float) -> bool:
        return self._last_decrease_at is not None and now - self._last_decrease_at < self._cooldown_s

    def on_step(self, sample: StepSample) -> None:
        return None

    def thrash_reason(self, s: PressureSnapshot) -> str | None:
        """Which thrash indicator ``s`` shows against the previous sample, or None."""
        if s.preemptions_per_s is not None and s.preemptions_per_s > 0:
            return "thrash-preemption"
        if s.kv_usage is None or s.kv_usage < self._cfg.kv_high_water:
            return None
        if (
            s.prefix_hit_rate is not None
            and self._prev_hit is not None
            and self._prev_hit - s.prefix_hit_rate >= self._hit_rate_drop
        ):
            return "thrash-hit-rate"
        if s.waiting is not None and self._prev_waiting is not None and s.waiting > self._prev_waiting:
            return "thrash-waiting"
        return None

    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision:
        before = self.window
        assert self.stale_after_s is not None
        problem = snapshot_problem(snapshot, now, self.stale_after_s)
        if problem is not None or snapshot is None:
            return WindowDecision(before, False, problem or "no-data", saturated=True)
        if self._last_ts is not None and snapshot.ts <= self._last_ts:
            return WindowDecision(before, False, "hold-no-new-sample")
        self._last_ts = snapshot.ts
        thrash = self.thrash_reason(snapshot)
        if snapshot.prefix_hit_rate is not None:
            self._prev_hit = snapshot.prefix_hit_rate
        if snapshot.waiting is not None:
            self._prev_waiting = snapshot.waiting
        if snapshot.kv_usage is not None:
            self._kv_recent.append(snapshot.kv_usage)
        reason = self._step(snapshot, thrash, in_use, now, acked)
        after = self.window
        return WindowDecision(after, after != before, reason)

    def _step(self, s: PressureSnapshot, thrash: str | None, in_use: int, now: float, acked: int | None) -> str:
        cfg = self._cfg
        if thrash is not None:
            if self._in_cooldown(now):
                return "hold-cooldown"
            base = min(self.window, max(in_use, 1))
            # ceil, at least one less: a small window is not halved by a floor (4 -> 2 cost 20% of goodput
            # on tiny, measured in virtual time: the knee there is 3-4 agents)
            self._w = float(max(cfg.min, min(base - 1, math.ceil(base * cfg.decrease))))
            self._last_decrease_at = now
            return thrash
        if s.kv_usage is None:
            return "hold-kv-unknown"
        if max(self._kv_recent) >= cfg.kv_target:
            return "hold-kv-high"
        if self._in_cooldown(now):
            return "hold-cooldown"
        if in_use < self._min_utilisation * self.window:
            return "hold-underused"
        if self.window >= cfg.max:
            return "hold-max"
        if acked is not None and self.window >= 2 * acked + 1:
            return "hold-slow-start"
        self._w = min(float(cfg.max), self._w + cfg.increase)
        return "increase"
