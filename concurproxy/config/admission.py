"""Admission control section (issue: AIMD agent admission)."""

from __future__ import annotations

from pydantic import Field, model_validator

from concurproxy.config.base import Model


class ProbeConfig(Model):
    """The goodput probe (``control/admission/overcommit.py``): tries admitting more than the window and the
    footprint budget allow, keeps it when the replica delivered more output tokens per second."""

    enabled: bool = Field(True, description="Probe at all (off: the window and the budget are what they say).")
    epoch_s: float = Field(2.0, gt=0, description="Shortest measurement epoch (also needs epoch_steps steps).")
    epoch_steps: int = Field(16, ge=1, description="Fewest completed steps in a measurement epoch.")
    epoch_cycles: float = Field(
        1.0,
        ge=0,
        description="...and at least this many steps per agent holding a slot: an over-admitted agent shows "
        "its cost only as its context grows over its next steps.",
    )
    up: float = Field(1.25, gt=1, description="A probe multiplies the limits by this.")
    granular: bool = Field(
        False,
        description="Where fewer than 1/gain agents hold slots, probe one agent at a time and pin the agent "
        "count that goodput proves (it then replaces W and the footprint budget). Off by default: on vLLM's "
        "CPU build it recomputed more for the same goodput (docs/admission.md).",
    )
    gain: float = Field(0.05, ge=0, description="A probe is kept when goodput rose by at least this share.")
    hit_drop: float = Field(
        0.2, gt=0, le=1, description="...and the prefix-hit rate did not fall by this much (absolute)."
    )
    hold_epochs: int = Field(
        4, ge=1, description="Settled steady epochs between probes (doubles after a refused probe)."
    )
    max_hold_epochs: int = Field(32, ge=1, description="Cap of that doubling.")
    open_at: float = Field(
        8.0, gt=1, description="A kept probe at or above this multiplier lifts the limits entirely (pass-through)."
    )


class DormancyConfig(Model):
    """When an idle agent is probably gone (``control/admission/returns.py``): most clients never send
    X-Agent-Done, so a finished agent just stops sending."""

    enabled: bool = Field(
        True, description="Off: an idle agent keeps its slot for idle_ttl_s whoever waits (the behaviour before)."
    )
    factor: float = Field(
        2.0, gt=0, description="Idle longer than this × the 90th percentile of observed return gaps: dormant."
    )
    min_s: float = Field(
        0.05, ge=0, description="Never dormant before this (a busy client's turnaround in a plain agent loop)."
    )
    initial_s: float = Field(2.0, ge=0, description="The bound before any agent returned on the replica.")


class TenantSlotsConfig(Model):
    """Slots shared between tenants at step boundaries (``control/admission/tenants.py``)."""

    enabled: bool = Field(True, description="Off: an agent keeps its slot whoever waits (the behaviour before).")
    quantum_steps: int = Field(
        4,
        ge=1,
        description="Steps an agent takes in its slot before it may give the slot to a waiting tenant below its "
        "fair share, or to a higher priority class (its prefix is reused that many times first).",
    )


class AIMDConfig(Model):
    initial: int = Field(8, ge=1, description="Window (active agents per replica) at start.")
    min: int = Field(1, ge=1, description="Window never goes below this: some progress is always possible.")
    max: int = Field(256, ge=1, description="Window never goes above this.")
    increase: float = Field(1.0, gt=0, description="Added to the window per healthy interval while the window is used.")
    decrease: float = Field(
        0.7, gt=0, lt=1, description="Window multiplied by this on a thrash signal (CONCUR/TCP-style back-off)."
    )
    kv_high_water: float = Field(
        0.90,
        gt=0,
        le=1,
        description="KV usage above this together with preemptions / hit-rate drop / queue growth = thrash.",
    )
    kv_target: float = Field(
        0.80,
        gt=0,
        le=1,
        description="Grow only while KV usage is below this (hysteresis between target and high water).",
    )
    interval_ms: int = Field(250, ge=10, description="Control-loop period: pressure poll and window update.")
    stale_after_ms: int = Field(
        1000, ge=10, description="Pressure older than this counts as saturated: admit nothing new."
    )
    cooldown_intervals: int = Field(
        2, ge=0, description="After a decrease, intervals to wait before the next decrease (the signal lags)."
    )
    footprint_headroom: float = Field(
        0.95, gt=0, le=1.5, description="Admitted agents' estimated KV footprint must fit this fraction of capacity."
    )
    footprint_peak_share: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Each multi-step agent's footprint is at least this share of the largest context that "
        "agents finishing on the replica reached (0 = off): the budget then covers the agent's growth over "
        "its whole life, not only the next few steps.",
    )
    growth_lookahead_steps: int = Field(
        4, ge=0, description="An agent's footprint reserves this many steps of its observed per-step growth."
    )
    initial_growth_tokens: int = Field(
        512,
        ge=0,
        description="Per-step growth assumed for a new agent before any agent's growth was seen on the replica "
        "(capped by the step's max_tokens).",
    )
    small_agent_tokens: int = Field(
        0,
        ge=0,
        description="A new agent whose footprint charge is at most this many tokens is admitted outside the "
        "agent-count window (it takes no slot), within small_agent_share of the footprint budget (0: only the "
        "relative rule below applies).",
    )
    small_agent_relative: float = Field(
        0.25,
        ge=0,
        le=1,
        description="...and so is one charged at most this share of the mean charge of the agents holding slots "
        "on the replica (a control agent beside long-context ones; 0 = off). Relative, so no tuning: where all "
        "agents are alike, none is small.",
    )
    small_agent_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share of the footprint budget that small agents may hold together (0.1 left the 4th of a "
        "tenant's 4 control agents, ~1k tokens each beside 12k-token agents, waiting seconds for a slot).",
    )
    min_utilisation: float = Field(
        1.0, gt=0, le=1, description="Grow the window only when at least this share of it holds agents."
    )
    hit_rate_drop: float = Field(
        0.10, gt=0, le=1, description="A prefix-hit rate falling this much between samples (above high water) = thrash."
    )
    kv_peak_samples: int = Field(
        4, ge=1, description="Grow only when the highest KV usage of this many recent samples is below kv_target."
    )
    footprint_hard_cap: bool = Field(
        False,
        description="Make the footprint budget a wall: no goodput probe beyond it and no work-conserving "
        "admission past it (by default it is a signal that probing and an idle engine may override).",
    )
    probe: ProbeConfig = Field(
        default_factory=lambda: ProbeConfig(),
        description="Goodput probe: how far admission may go beyond the window and the footprint budget.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AIMDConfig:
        if not self.min <= self.initial <= self.max:
            raise ValueError("need min <= initial <= max")
        if self.kv_target > self.kv_high_water:
            raise ValueError("need kv_target <= kv_high_water")
        return self


class GradientConfig(Model):
    """Latency-based window (``controller: gradient``), for replicas without a usable KV signal.

    Gradient2 / Envoy adaptive concurrency: W follows ``tolerance x baseline / recent`` of the
    per-output-token step latency, with a periodic re-probe of the baseline at a reduced window.
    """

    initial: int = Field(
        64,
        ge=1,
        description="Window at start. Generous, like Envoy's: a first burst passes without waiting, and the "
        "window is cut only on evidence (latency rising above the baseline).",
    )
    min: int = Field(1, ge=1, description="Window never goes below this: some progress is always possible.")
    max: int = Field(256, ge=1, description="Window never goes above this.")
    tolerance: float = Field(
        1.5,
        ge=1.0,
        description="Recent latency may reach this multiple of the baseline before the window is cut "
        "(Gradient2's rtt tolerance). Above 1 so that the gentle per-token slowdown of batching does not "
        "cut the window; queueing past the engine's knee (latency ~ concurrency) does.",
    )
    smoothing: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share of the new estimate taken per sample window (Gradient2's smoothing, 0.2): "
        "the rest is the previous window, so one noisy window moves W little.",
    )
    queue_allowance: float = Field(
        1.0,
        ge=0,
        description="Growth allowance per window, as a multiple of sqrt(W) (Envoy's burst headroom): "
        "new = W x gradient + queue_allowance x sqrt(W).",
    )
    window_s: float = Field(
        1.0,
        gt=0,
        description="Short-term latency: the token-weighted mean over at least this long (one law step per "
        "window). LLM steps last seconds, so shorter windows hold too few samples.",
    )
    min_samples: int = Field(
        4, ge=1, description="A window closes only once it holds this many successful steps (it extends until then)."
    )
    baseline_windows: int = Field(
        600,
        ge=1,
        description="Baseline (long-term latency) rises toward the recent latency by 1/this per window "
        "(Gradient2's long window, 600): slow, so a rising latency shows as a gradient below 1.",
    )
    baseline_fall: float = Field(
        0.1,
        gt=0,
        le=1,
        description="When the recent latency sits below the baseline, the baseline falls toward it by this "
        "share per window (Gradient2's drift handling: recover quickly after a long overload).",
    )
    min_utilisation: float = Field(
        1.0, gt=0, le=1, description="Grow the window only when at least this share of it holds agents."
    )
    probe_interval_s: float = Field(
        60.0,
        gt=0,
        description="Re-measure the baseline this often (Envoy's min-RTT interval, 60 s; the first probe "
        "follows the first sample window): the baseline cannot drift up for ever.",
    )
    probe_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Each probe level shrinks the window to this share of the previous level (the first: of "
        "the agents holding slots): once W has settled near the knee, one level is below it.",
    )
    probe_elasticity: float = Field(
        0.7,
        gt=0,
        le=1,
        description="The probe goes one level deeper while latency fell nearly in proportion to the running "
        "steps, log(L_prev/L) >= this x log(r_prev/r): the engine was still queueing, the knee is lower. 0.7, not "
        "0.9: through the live proxy a pure queue (latency exactly proportional past its knee) measured 0.83, the "
        "proxy's own per-step time and the step-end sampling blur the ratio.",
    )
    probe_samples: int = Field(
        8, ge=1, description="A probe level ends once this many steps that started after its drain ended."
    )
    probe_max_s: float = Field(
        30.0,
        gt=0,
        description="A probe level ends after this long, or twice the longest step seen lately if longer "
        "(draining takes up to one such step, measuring about one more), whatever it measured.",
    )
    probe_jitter: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Each probe interval is lengthened by up to this share at random (Envoy's 15%), when "
        "the controller is handed a random source; replicas then do not probe in lockstep.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> GradientConfig:
        if not self.min <= self.initial <= self.max:
            raise ValueError("need min <= initial <= max")
        return self


class StaticConfig(Model):
    window: int = Field(16, ge=1, description="Fixed number of active agents per replica.")


class AdmissionConfig(Model):
    controller: str = Field(
        "aimd",
        description="Window controller by registered name: aimd | gradient | static | none | a plugin's name.",
    )
    aimd: AIMDConfig = AIMDConfig()
    gradient: GradientConfig = GradientConfig()
    static: StaticConfig = StaticConfig()
    idle_ttl_s: float = Field(
        30.0, gt=0, description="An admitted agent keeps its slot across tool pauses this long after its last step."
    )
    max_queue_wait_s: float = Field(
        120.0, gt=0, description="Longest a step waits for admission before a 503 with Retry-After."
    )
    max_queue_length: int = Field(10000, ge=1, description="Waiting steps beyond this are refused at once (429).")
    starvation_timeout_s: float = Field(
        30.0, gt=0, description="An agent waiting this long is admitted next even above the window (anti-starvation)."
    )
    dormancy: DormancyConfig = Field(
        default_factory=lambda: DormancyConfig(),
        description="An idle agent past its return bound gives its slot to a waiting step (it resumes with priority).",
    )
    fallback_controller: str | None = Field(
        "gradient",
        description="Controller (registered name) of a replica that never gave a usable KV signal (no /metrics, "
        "or metrics without KV usage), or whose signal stayed stale past stale_grace_s: it never waits on a signal "
        "that cannot come. null: such a replica stays saturated (the behaviour before).",
    )
    stale_grace_s: float = Field(
        10.0,
        ge=0,
        description="A replica whose KV signal went stale after good readings counts as saturated this long "
        "beyond stale_after_ms, then falls back to fallback_controller.",
    )
    tenant_slots: TenantSlotsConfig = Field(
        default_factory=lambda: TenantSlotsConfig(),
        description="Tenants share a replica's slots by weighted max-min fairness, claimed at step boundaries.",
    )
    work_conserving: bool = Field(
        True,
        description="While nothing runs on a replica and the engine queues nothing, a step waiting only for "
        "footprint room is admitted (the engine is never left idle for a predicted overflow).",
    )
