"""Admission-time KV footprint estimate of one agent."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Footprint:
    """Estimated KV tokens an agent needs for its *next* step.

    KV usage lags admission (an agent admitted now fills the cache over its next
    steps), so the admission window also keeps a budget of expected footprint —
    the prime-rl lesson. Per agent::

        context   = largest prompt + output seen in one step (prompt sizes are
                    estimated locally at arrival, replaced by reported usage)
        growth    = EWMA (α = 0.5) of how much the prompt grew between steps;
                    starts at min(max_tokens, initial_growth) or initial_growth
        footprint = context + ceil(growth × lookahead)

    ``lookahead`` (the window's ``growth_lookahead_steps``, default 4) reserves
    the growth of the agent's next few steps, not just the next one: KV usage
    shows an admission several steps late, and agents admitted together grow
    together. Measured in virtual time (docs/admission.md): 1 step let 128
    agents on llama3-8b-h100 slide into prefix-eviction thrash (88.7 tasks/min,
    45% of prefill recomputed); 4 steps held 113.7 with 15% (best static 112.1).

    The budget check is ``Σ footprint(admitted) + footprint(new) ≤ headroom ×
    kv_capacity_tokens``. Shared prefixes (a common system prompt) are counted
    once per agent, so the sum over-estimates — the safe direction — except that a new
    agent is charged only the part of its prompt not already resident on the replica
    (``StepInfo.resident_prefix_tokens``, from the router's prefix index), and an agent
    whose first step is also its last (``StepInfo.last_step``) reserves no growth.

    The replica's ``FootprintPriors`` add what one agent cannot know about itself
    (its growth before its second step, its size at the end of its task).
    """

    context: int
    growth: float
    last_prompt: int
    lookahead: int = 1
    single_step: bool = False  # its first step is its last: no growth, no lifetime floor

    @classmethod
    def new(cls, est_prompt_tokens: int, max_tokens: int, initial_growth: int, lookahead: int = 1) -> Footprint:
        growth = min(max_tokens, initial_growth) if max_tokens > 0 else initial_growth
        prompt = max(0, est_prompt_tokens)
        return cls(context=prompt, growth=float(growth), last_prompt=prompt, lookahead=lookahead)

    def tokens(self) -> int:
        return self.context + math.ceil(self.growth * self.lookahead)

    def on_step(self, est_prompt_tokens: int) -> int | None:
        """A new step of the agent arrives with (an estimate of) its prompt size.

        Returns how much the prompt grew since the agent's previous step, or None.
        """
        if est_prompt_tokens <= 0:
            return None
        grew = est_prompt_tokens - self.last_prompt if est_prompt_tokens > self.last_prompt else None
        if grew is not None:
            self.growth = 0.5 * self.growth + 0.5 * grew
        self.last_prompt = est_prompt_tokens
        if est_prompt_tokens > self.context:  # (not max(): a keyword-parsing builtin call, per step)
            self.context = est_prompt_tokens
        return grew

    def on_usage(self, prompt_tokens: int, output_tokens: int) -> None:
        """Reported usage of a finished step (more exact than the arrival estimate)."""
        if prompt_tokens > 0:
            self.last_prompt = prompt_tokens
        seen = prompt_tokens + output_tokens if output_tokens > 0 else prompt_tokens
        if seen > self.context:
            self.context = seen


LIVES = 16  # agents whose step counts say how long a life here is
MIN_LIVES = 4  # fewer ended agents than this: no idea yet


class FootprintPriors:
    """What a replica learned about its agents' KV footprint, for the budget check.

    The admission budget is checked when an agent is *admitted*, but an admitted
    agent keeps its slot while its context grows, and agents admitted together
    (a cohort refilling the slots a finished cohort freed) grow together. A
    reservation of a few steps of growth therefore lets the sum of admitted
    contexts outgrow the cache some steps later: measured in virtual time on
    llama3-8b-h100 at 2x overload, the sum of footprints reached 1.4x the
    budget and 15% of all prefill was recomputed (evicted prefixes of agents
    in their tool pauses). Two replica-level priors close that gap::

        growth_prior = EWMA (α = 0.1) of every observed per-step prompt growth here
                       (a new agent starts with it instead of min(max_tokens, initial):
                       tool results, not only outputs, make a context grow)
        peak_prior   = EWMA (α = 0.1) of the largest context of agents that finished
                       here after more than one step
        charge(fp)   = max(min(fp.tokens(), max(context + growth, peak_prior)),
                           peak_share × peak_prior)                 (multi-step agents)

    (the growth reserved stops at the size the role's agents end at: a short agent is not
    charged growth it will never have). An agent's life ends with ``X-Agent-Done``, or, for
    the clients that never send it, when it goes dormant (yields its slot idle past its
    return bound) or expires at the idle TTL.

    ``peak_share`` 1.0 would be the worst case (every admitted agent at its final
    size at once); an agent growing linearly from its first prompt spends its
    life at ~0.6 of its final size on average, so a population of agents at
    spread-out ages needs ~0.6, a cohort more. 0.75 (the default) measured 0%
    recompute at every load on llama3-8b-h100 (0.6: 1–7%) while still letting
    the ``tiny`` profile, where one agent is a third of the cache, run the 3
    agents that are its best window (0.8+: only 2, 0.77x the goodput).

    Concurrency: single caller (the replica's window). Pure.
    """

    def __init__(self, peak_share: float, initial_growth: int, lookahead: int) -> None:
        self.peak_share = peak_share
        self.initial_growth = initial_growth
        self.lookahead = lookahead
        self.growth: float | None = None
        self.peak: float | None = None
        self._lives: list[int] = []  # steps of the last LIVES agents that ended here (ring)
        self._next = 0
        self._longest = 0  # max(self._lives) once MIN_LIVES are known, else 0: read on every grant, set on an end

    def new(self, private_prompt_tokens: int, max_tokens: int, single_step: bool) -> Footprint:
        """The footprint of an agent seen for the first time (``private``: not resident already)."""
        lookahead = 0 if single_step else self.lookahead
        if self.growth is None:
            fp = Footprint.new(private_prompt_tokens, max_tokens, self.initial_growth, lookahead)
        else:
            prompt = max(0, private_prompt_tokens)
            fp = Footprint(context=prompt, growth=self.growth, last_prompt=prompt, lookahead=lookahead)
        fp.single_step = single_step
        return fp

    def on_step(self, fp: Footprint, est_prompt_tokens: int) -> None:
        grew = fp.on_step(est_prompt_tokens)
        if grew is not None:
            self.growth = float(grew) if self.growth is None else 0.9 * self.growth + 0.1 * grew

    def on_finished(self, fp: Footprint, steps: int) -> None:
        if steps > 1:
            self.peak = float(fp.context) if self.peak is None else 0.9 * self.peak + 0.1 * fp.context
        if len(self._lives) < LIVES:
            self._lives.append(steps)
        else:
            self._lives[self._next] = steps
            self._next = (self._next + 1) % LIVES
        self._longest = max(self._lives) if len(self._lives) >= MIN_LIVES else 0

    def likely_done(self, steps: int) -> bool:
        """An idle agent that has taken as many steps as the longest of the last agents that ended here
        (at least ``MIN_LIVES`` of them) has most likely finished: clients that never send ``X-Agent-Done``
        still run tasks of a typical length. Its slot and its cached prefix are not held for it past the
        shortest return bound. An agent that does come back waits first in the resume lane, and its longer
        life raises the maximum: the rule corrects itself where lives vary."""
        return 0 < self._longest <= steps

    def charge(self, fp: Footprint) -> int:
        """Tokens this agent counts for in the budget."""
        if fp.single_step or self.peak is None:
            return fp.tokens()
        # no growth reserved past the size this role's agents reach at their end (but one step of it):
        # a 3-step agent is not charged 4 steps of growth it will never have
        reserved = min(fp.tokens(), max(fp.context + math.ceil(fp.growth), math.ceil(self.peak)))
        return max(reserved, math.ceil(self.peak_share * self.peak))


class RolePriors:
    """One `FootprintPriors` per role key: a planner's growth and final size are not an executor's.

    Replica-wide priors let a workload's long-context agents set the charge of every
    agent: with 12k-token executors finishing on a replica, a 1k-token control agent
    was charged 0.75 × 12k. Keys are the window's role keys (configured roles, else
    ``default``), so their number is bounded by the policy, not by clients.
    """

    def __init__(self, peak_share: float, initial_growth: int, lookahead: int) -> None:
        self._args = (peak_share, initial_growth, lookahead)
        self._by_key: dict[str, FootprintPriors] = {}

    def of(self, key: str) -> FootprintPriors:
        p = self._by_key.get(key)
        if p is None:
            p = self._by_key[key] = FootprintPriors(*self._args)
        return p
