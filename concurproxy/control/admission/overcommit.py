"""How far one replica may admit beyond its window and its KV footprint budget: learned from goodput.

The window W (the controller's, on KV signals) and the footprint budget (``Capacity.budget``:
the size each admitted agent is predicted to grow to must fit the cache) are models of what
the engine can take without thrashing. Where recomputing an evicted prefix is expensive (long
contexts, large models) they are what keeps a fleet out of middle-phase thrashing. Where
recompute is cheap (small models, decode-bound work) serialising agents to fit the cache loses
more batching than it saves prefill: on vLLM's CPU build with a 2 M-parameter model, agent
admission gave 0.33x the goodput of no admission at all. Which regime a replica is in depends
on the model, the hardware and the workload, so it is measured, not configured.

Algorithm (in the spirit of TCP BBR's bandwidth probing): both limits are multiplied by ``m``
(start 1; ``inf`` = no limit at all). Goodput (output tokens per second of the steps that
end successfully on the replica) is measured over *epochs* of at least ``epoch_s`` seconds
and ``max(epoch_steps, epoch_cycles × agents holding slots)`` steps — long enough for every
admitted agent to take a few steps, because an agent admitted too many shows its cost only
as it grows (measured on llama3-8b-h100 with 2-second epochs: probes kept on a short-term
gain recomputed 7.6% of prefill later, against 0% without probing) — counted only while
steps wait for admission (the limits bind):

* after ``hold_epochs`` steady epochs, one epoch at ``m × up``: kept when its goodput is at
  least ``(1 + gain) ×`` the steady goodput and the prefix-hit rate did not fall by
  ``hit_drop`` (a collapsing hit rate is recompute the epoch has not paid for yet); a kept
  probe at ``open_at`` or beyond lifts the limits (``m = inf``);
* with ``m > 1``, every other probe goes down instead (``m / up``, or ``open_at / up`` from
  ``inf``): kept when goodput did not fall (so a workload that turns expensive closes again);
* a refused probe doubles the hold before the next (up to ``max_hold_epochs``): a replica where
  overcommit never pays is probed rarely, and each probe costs at most one epoch;
* regret: a kept up-probe is taken back when the steady epochs that follow it deliver less
  than the steady goodput before it (the cost of over-admission arrives late).

Stale or missing pressure data never raises ``m``: a probe in flight ends, unkept. Epochs in
which nothing waited are discarded (the limits made no difference).

Pure: samples and ``now`` are passed in; single caller (the replica's window).
"""

from __future__ import annotations

import math

from concurproxy.config.admission import ProbeConfig


class OvercommitProbe:
    def __init__(self, params: ProbeConfig | None = None) -> None:
        self.p = params or ProbeConfig()
        self.m = 1.0
        self.probes = 0  # probes started (for /admin/state)
        self.kept = 0
        self._hold = self.p.hold_epochs
        self._steady = 0
        self._downward = False  # the next probe goes down (alternates while m > 1)
        self._baseline: float | None = None  # goodput of steady epochs (EWMA, α 0.5)
        self._base_hit: float | None = None
        self._trying: float | None = None  # the multiplier being tried, or None
        self._regret: tuple[float, float] | None = None  # after a kept up-probe: (previous m, its goodput)
        self._start: float | None = None
        self._tokens = 0
        self._steps = 0
        self._bound = False
        self._hit_sum = 0.0
        self._hit_n = 0

    @property
    def multiplier(self) -> float:
        """What the window and the footprint budget are multiplied by now (inf: no limit)."""
        return self._trying if self._trying is not None else self.m

    @property
    def phase(self) -> str:
        return "steady" if self._trying is None else "probe"

    def on_step(self, output_tokens: int) -> None:
        """A step ended successfully on the replica."""
        if self._start is not None:
            self._tokens += output_tokens
            self._steps += 1

    def on_tick(self, now: float, fresh: bool, binds: bool, hit_rate: float | None, holders: int = 0) -> None:
        """Once per pressure sample. ``binds``: a step waits for admission now; ``holders``: agents
        holding slots (an epoch lasts until they took ``epoch_cycles`` steps each, on average)."""
        if not self.p.enabled:
            return
        if not fresh:
            self._trying = None  # a probe never outlives the data that judges it
            self._start = None
            return
        if self._start is None:
            self._new_epoch(now)
            return
        self._bound = self._bound or binds
        if hit_rate is not None:
            self._hit_sum += hit_rate
            self._hit_n += 1
        elapsed = now - self._start
        if elapsed < self.p.epoch_s or self._steps < max(self.p.epoch_steps, self.p.epoch_cycles * holders):
            return
        goodput = self._tokens / elapsed
        hit = self._hit_sum / self._hit_n if self._hit_n else None
        bound = self._bound
        self._new_epoch(now)
        if self._trying is not None:
            self._judge(goodput, hit)
        elif bound:
            self._steady_epoch(goodput, hit)
        else:
            self._steady = 0  # nothing waited: the limits made no difference this epoch

    def _new_epoch(self, now: float) -> None:
        self._start = now
        self._tokens = self._steps = self._hit_n = 0
        self._bound = False
        self._hit_sum = 0.0

    def _steady_epoch(self, goodput: float, hit: float | None) -> None:
        settled = self._baseline is not None and abs(goodput - self._baseline) <= self.p.gain * self._baseline
        self._baseline = goodput if self._baseline is None else 0.5 * (self._baseline + goodput)
        if hit is not None:
            self._base_hit = hit if self._base_hit is None else 0.5 * (self._base_hit + hit)
        self._steady = self._steady + 1 if settled else 0  # no probe while goodput still moves (ramp-up)
        if self._regret is not None:
            previous_m, previous_goodput = self._regret
            if self._baseline < previous_goodput:  # the kept probe cost more than it gained, late
                self.m, self._regret = previous_m, None
                self._hold = min(self.p.max_hold_epochs, 2 * self._hold)
                self._steady = 0
                return
            if self._steady >= self.p.hold_epochs:
                self._regret = None
        if self._steady < self._hold:
            return
        down = self._downward and self.m > 1.0
        if down:
            self._trying = max(1.0, (self.p.open_at if math.isinf(self.m) else self.m) / self.p.up)
        elif not math.isinf(self.m):
            self._trying = self.m * self.p.up
        else:
            return
        self._downward = not self._downward
        self.probes += 1

    def _judge(self, goodput: float, hit: float | None) -> None:
        tried, self._trying = self._trying, None
        assert tried is not None
        self._steady = 0
        base = self._baseline or 0.0
        if tried < self.m:
            keep = goodput >= base
        else:
            hit_ok = hit is None or self._base_hit is None or self._base_hit - hit < self.p.hit_drop
            keep = goodput >= (1.0 + self.p.gain) * base and hit_ok
        if keep:
            self.kept += 1
            if tried > self.m:
                self._regret = (self.m, base)
            self.m = math.inf if tried >= self.p.open_at else tried
            self._baseline, self._base_hit = goodput, hit
            self._hold = self.p.hold_epochs
        else:
            self._hold = min(self.p.max_hold_epochs, 2 * self._hold)
