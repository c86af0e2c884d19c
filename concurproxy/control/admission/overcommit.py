"""How far one replica may admit beyond its window and its KV footprint budget: learned from goodput.

The window W (the controller's, on KV signals) and the footprint budget (``Capacity.budget``:
the size each admitted agent is predicted to grow to must fit the cache) are models of what
the engine can take without thrashing. Where recomputing an evicted prefix is expensive (long
contexts, large models) they are what keeps a fleet out of middle-phase thrashing. Where
recompute is cheap (small models, decode-bound work) serialising agents to fit the cache loses
more batching than it saves prefill: on vLLM's CPU build with a 2 M-parameter model, agent
admission gave 0.33x the goodput of no admission at all. Which regime a replica is in depends
on the model, the hardware and the workload, so it is measured, not configured.

Goodput (output tokens per second of the steps that end successfully on the replica) is
measured over *epochs* of at least ``epoch_s`` seconds and ``max(epoch_steps, epoch_cycles ×
agents holding slots)`` steps — long enough for every admitted agent to take a few steps,
because an agent admitted too many shows its cost only as it grows (measured on llama3-8b-h100
with 2-second epochs: probes kept on a short-term gain recomputed 7.6% of prefill later,
against 0% without probing) — counted only while steps wait for admission (the limits bind).
Two kinds of probe, by how many agents the footprint budget fits (``fits``: the budget over the
mean charge of the agents holding slots):

**One agent at a time** (``granular``; where ``fits × gain < 1``: the budget fits fewer than
1/gain = 20 agents). An agent's share of goodput cannot rise with concurrency, so going from n
to n + 1 agents gains at most 1/n: where few agents fit, one more is a measurable step, and a
whole-life reservation rounded down to a few agents wastes a large share of the engine (``tiny``:
one agent is a third of the cache, the budget fits 3 and 4 deliver 18% more; a decode-bound
swarm: it fits 1.6, and 2 deliver 25% more). Where many fit, one agent more can never show the
gain and a kept one-agent probe would be noise, so none is tried.

* The first bound epoch only warms up (it holds the ramp of admissions before the footprint
  priors are learned); the next sets the baseline; then one epoch with the limits *pinned* at
  the mean number of agents holding slots, rounded to the nearest: while pinned, the agent count
  replaces W and the footprint budget (the budget is a prediction; the pin is a measurement).
  Kept when goodput did not fall; a step up later, when goodput rose by ``gain`` without the
  prefix-hit rate falling by ``hit_drop``.
* Startup: while kept, the next epoch tries one agent more at once (BBR's startup, one agent a
  step: the harm of a probe is one agent, and where 1/n < gain no step is tried). The first
  refused step ends the startup.
* Then alternately, every ``hold`` settled epochs: one agent fewer (kept when goodput did not
  fall: a workload that turns expensive closes again, an agent a probe) and one more.
* Regret, hold doubling, stale data: as below.

**Multiplicative** (where many agents fit): both limits are multiplied by ``m`` (start 1;
``inf`` = no limit at all):

* after ``hold_epochs`` *settled* steady epochs (goodput within ``gain`` of the baseline, or within
  the epoch's sampling noise, 0.5/sqrt(steps), where that is wider: no probing during ramp-up),
  one epoch at ``m × up``: kept when its goodput is at least ``(1 + gain) ×`` the steady goodput
  and the prefix-hit rate did not fall by ``hit_drop`` (a collapsing hit rate is recompute the
  epoch has not paid for yet); a kept probe at ``open_at`` or beyond lifts
  the limits (``m = inf``);
* with ``m > 1``, every other probe goes down instead (``m / up``, or ``open_at / up`` from
  ``inf``): kept when goodput did not fall.

For both: a refused probe doubles the hold before the next (up to ``max_hold_epochs``): a replica
where probing never pays is probed rarely, and each probe costs at most one epoch. Regret: a kept
up-probe is taken back when the steady epochs that follow it deliver less than the steady goodput
before it (the cost of over-admission arrives late). Stale or missing pressure data never raises
a limit: a probe in flight ends, unkept. Epochs in which nothing waited are discarded (the limits
made no difference).

Pure: samples and ``now`` are passed in; single caller (the replica's window).
"""

from __future__ import annotations

import math

from concurproxy.config.admission import ProbeConfig

TRANSITION = 1  # epochs of a one-agent step not judged (the agent that joins prefills, the one that leaves)
JUDGED = 2  # epochs of a one-agent step judged, by their mean goodput


NOISE = 0.5  # an epoch's relative goodput noise: NOISE / sqrt(steps) (vLLM CPU, 16 steps: std ~10%)


def settle_band(gain: float, steps: int) -> float:
    """How far an epoch's goodput may stray from the baseline and still count as settled: ``gain``, or the
    sampling noise of an epoch of ``steps`` steps where that is wider. Measured on vLLM CPU (decode swarm,
    16-20 steps per 2 s epoch): epochs of one steady load spread +-15%, so within 5% no four epochs in a
    row settled and no probe ran in a whole run (47 s, 17 epochs). The noise is not widened further: a band
    of 1/sqrt(steps) let probes fire during llama3-8b-h100's overload, where goodput moves because agents
    grow (4x: 3.34 -> 3.23x ``none``, recompute 1% -> 8%); at NOISE 0.5 that run is unchanged."""
    return max(gain, NOISE / math.sqrt(steps)) if steps > 0 else gain


class OvercommitProbe:
    def __init__(self, params: ProbeConfig | None = None) -> None:
        self.p = params or ProbeConfig()
        self.m = 1.0
        self.pin: int | None = None  # agent count proven by goodput (replaces W and the budget), or None
        self.probes = 0  # probes started (for /admin/state)
        self.kept = 0
        self._hold = self.p.hold_epochs
        self._steady = 0
        self._downward = False  # the next probe goes down (alternates while m > 1 or pinned)
        self._baseline: float | None = None  # goodput of steady epochs (EWMA, α 0.5)
        self._base_hit: float | None = None
        self._trying: float | None = None  # the multiplier being tried, or None
        self._trying_pin: int | None = None  # the agent count being tried, or None
        self._pin_goodput = 0.0  # goodput of the epoch that proved the pin
        self._startup = True  # one-agent probes: climb an agent per epoch until a step does not pay
        self._pin_epochs: list[tuple[float, float | None]] = []  # (goodput, hit) of the pin probe's epochs
        self._warm = False  # the first bound epoch of one-agent probing was seen (and not measured)
        self._regret: tuple[float, int | None, float] | None = None  # after a kept up-probe: (m, pin, goodput)
        self._start: float | None = None
        self._tokens = 0
        self._steps = 0
        self._bound = False
        self._hit_sum = 0.0
        self._hit_n = 0
        self._holders = 0.0  # Σ over the epoch's ticks: agents holding slots
        self._fits = 0.0  # Σ over the epoch's ticks: agents the footprint budget fits (0: unknown)
        self._ticks = 0

    @property
    def multiplier(self) -> float:
        """What the window and the footprint budget are multiplied by now (inf: no limit)."""
        return self._trying if self._trying is not None else self.m

    @property
    def pinned(self) -> int | None:
        """The agent count that replaces W and the footprint budget now (a one-agent probe's, or the one
        goodput proved), or None: the limits are the model's (times ``multiplier``)."""
        return self._trying_pin if self._trying_pin is not None else self.pin

    @property
    def phase(self) -> str:
        return "steady" if self._trying is None and self._trying_pin is None else "probe"

    def on_step(self, output_tokens: int) -> None:
        """A step ended successfully on the replica."""
        if self._start is not None:
            self._tokens += output_tokens
            self._steps += 1

    def on_tick(
        self,
        now: float,
        fresh: bool,
        binds: bool,
        hit_rate: float | None,
        holders: int = 0,
        fits: float | None = None,
    ) -> None:
        """Once per pressure sample. ``binds``: a step waits for admission now; ``holders``: agents
        holding slots (an epoch lasts until they took ``epoch_cycles`` steps each, on average); ``fits``:
        agents of the holders' mean charge that the (unmultiplied) footprint budget fits, None: no budget."""
        if not self.p.enabled:
            return
        if not fresh:
            self._trying = self._trying_pin = None  # a probe never outlives the data that judges it
            self._pin_epochs = []
            self._start = None
            return
        if self._start is None:
            self._new_epoch(now)
            return
        self._bound = self._bound or binds
        if hit_rate is not None:
            self._hit_sum += hit_rate
            self._hit_n += 1
        self._holders += holders
        self._fits += fits or 0.0
        self._ticks += 1
        elapsed = now - self._start
        if elapsed < self.p.epoch_s or self._steps < max(self.p.epoch_steps, self.p.epoch_cycles * holders):
            return
        goodput = self._tokens / elapsed
        hit = self._hit_sum / self._hit_n if self._hit_n else None
        mean_holders, mean_fits = self._holders / self._ticks, self._fits / self._ticks
        bound, steps = self._bound, self._steps
        self._new_epoch(now)
        if self._trying_pin is not None:
            # a step up or down: its first epoch is a transition (a new agent prefills, an agent leaves mid-life),
            # not judged; then the mean of JUDGED epochs. The first pin holds about what the model held: judged at once
            self._pin_epochs.append((goodput, hit))
            skip, judged = (TRANSITION, JUDGED) if self.pin is not None else (0, 1)
            if len(self._pin_epochs) >= skip + judged:
                kept = self._pin_epochs[skip:]
                self._pin_epochs = []
                hits = [h for _, h in kept if h is not None]
                self._judge_pin(sum(g for g, _ in kept) / len(kept), sum(hits) / len(hits) if hits else None)
        elif self._trying is not None:
            self._judge(goodput, hit)
        elif bound:
            self._steady_epoch(goodput, hit, mean_holders, mean_fits, steps)
        else:
            self._steady = 0  # nothing waited: the limits made no difference this epoch

    def _new_epoch(self, now: float) -> None:
        self._start = now
        self._tokens = self._steps = self._hit_n = self._ticks = 0
        self._bound = False
        self._hit_sum = self._holders = self._fits = 0.0

    def _granular(self, fits: float) -> bool:
        """Probe one agent at a time: pinned already, or the budget fits so few agents (``0 < fits <
        1/gain``) that one more can show the gain (n -> n + 1 agents gains at most 1/n)."""
        return self.pin is not None or (self.p.granular and self.m == 1.0 and 0 < fits * self.p.gain < 1.0)

    def _steady_epoch(
        self, goodput: float, hit: float | None, holders: float = 0.0, fits: float = 0.0, steps: int = 0
    ) -> None:
        granular = self._granular(fits)
        if granular and not self._warm:
            self._warm = True  # the ramp of admissions: not a baseline
            return
        settled = (
            self._baseline is not None
            and abs(goodput - self._baseline) <= settle_band(self.p.gain, steps) * self._baseline
        )
        self._baseline = goodput if self._baseline is None else 0.5 * (self._baseline + goodput)
        if hit is not None:
            self._base_hit = hit if self._base_hit is None else 0.5 * (self._base_hit + hit)
        # no multiplicative probe while goodput still moves (ramp-up); a one-agent probe risks one agent
        self._steady = self._steady + 1 if settled or granular else 0
        if self._regret is not None:
            previous_m, previous_pin, previous_goodput = self._regret
            if self._baseline < previous_goodput:  # the kept probe cost more than it gained, late
                self.m, self.pin, self._regret = previous_m, previous_pin, None
                self._refused()
                self._steady = 0
                return
            if self._steady >= self.p.hold_epochs:
                self._regret = None
        if granular:
            self._pinned_epoch(holders)
            return
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
            keep = goodput >= (1.0 + self.p.gain) * base and self._hit_ok(hit)
        if keep:
            if tried > self.m:
                self._regret = (self.m, self.pin, base)
            self.m = math.inf if tried >= self.p.open_at else tried
            self._kept(goodput, hit)
        else:
            self._refused()

    def _kept(self, goodput: float, hit: float | None) -> None:
        """A probe paid: its epoch's goodput and hit rate are the new baseline, the hold starts over."""
        self.kept += 1
        self._baseline, self._base_hit = goodput, hit
        self._hold = self.p.hold_epochs

    def _refused(self) -> None:
        """A probe (or a kept one, in regret) did not pay: wait twice as long before the next."""
        self._hold = min(self.p.max_hold_epochs, 2 * self._hold)

    def _hit_ok(self, hit: float | None) -> bool:
        return hit is None or self._base_hit is None or self._base_hit - hit < self.p.hit_drop

    def _pinned_epoch(self, holders: float) -> None:
        """After a steady epoch of one-agent probing: whether to try a pin now, and which."""
        if self.pin is None:  # the first at once (startup), then after the hold (a refused first pin)
            if self.probes == 0 or self._steady >= self._hold:
                # hold steadily what the model held on average, to the nearest agent: rounding up made a
                # mean of 2.1 (the work-conserving rule's occasional extra agent) a pin of 3, which then
                # replaced the footprint budget (qwen3-32b-h100: -8% goodput at 2-16 agents; -3% rounded)
                self._trying_pin = max(1, math.floor(holders + 0.5))
                self.probes += 1
            return
        # Pinned, the startup over: the climb found the top. Probe again when goodput at the pin moved by
        # 2 × gain since it was proven (the workload changed: fell -> one fewer, rose -> one more), else
        # alternately on the rarest schedule: a step down costs up to 1/n of goodput for its epochs.
        assert self._baseline is not None
        moved = self._baseline - self._pin_goodput
        if self._steady >= 1 and abs(moved) > 2 * self.p.gain * self._pin_goodput:
            self._pin_step(up=moved > 0)
        elif self._steady >= self.p.max_hold_epochs:
            self._pin_step(up=not self._downward)

    def _pin_step(self, up: bool) -> None:
        assert self.pin is not None
        if up and self.pin * self.p.gain >= 1.0:  # one more agent could not show the gain
            up = False
        if not up and self.pin <= 1:
            return
        self._trying_pin = self.pin + 1 if up else self.pin - 1
        self._downward = up
        self.probes += 1

    def _judge_pin(self, goodput: float, hit: float | None) -> None:
        tried, self._trying_pin = self._trying_pin, None
        assert tried is not None
        self._steady = 0
        base = self._baseline or 0.0
        previous = self.pin
        up = previous is not None and tried > previous
        keep = goodput >= (1.0 + self.p.gain) * base and self._hit_ok(hit) if up else goodput >= base
        if keep:
            if up:
                self._regret = (self.m, previous, base)
            self.pin = tried
            self._pin_goodput = goodput
            self._kept(goodput, hit)
            if self._startup and tried * self.p.gain < 1.0:
                self._pin_step(up=True)  # still climbing: the next agent at once
        else:
            if previous is not None:
                self._startup = False  # the climb found its top
            self._refused()
