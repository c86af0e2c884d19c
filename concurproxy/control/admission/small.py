"""Small agents: admitted by their KV footprint, outside the agent-count window.

The window W counts agents, because on a long-context workload an agent's
history is what fills the cache. An agent whose whole footprint is a small
fraction of one slot's share of the cache (a monitor or planner sending short
control steps) costs a full slot all the same, and every time it comes back as a
new agent it waits behind long-context agents for a slot that a long step frees
seconds later. Measured through the proxy (README, fairness table): with the
heavy tenant's KV pressure holding W between 2 and 11, the light tenant's
admission wait was over 95% of its p99 step latency (54–134x its unloaded p99).

Rule (``aimd.small_agent_tokens = S``, ``aimd.small_agent_relative = r``,
``aimd.small_agent_share = f``): a *new* agent whose footprint charge ``c`` (see
`FootprintPriors.charge`, with the priors of its own role) is at most ``S`` (when
``S > 0``) or at most ``r ×`` the mean charge of the agents holding slots (the
default, ``r = 0.25``: a control agent beside long-context ones; where all agents
are alike, none is small, so nothing changes for a one-workload fleet) is admitted
as a small agent when the pressure data is fresh and

    Σ charge(small agents held) + c ≤ f × footprint_budget

whatever the window and the queue: it takes no slot of W (the controller's
utilisation and the window's shrink ignore it) and so never waits behind agents
that need one. Its footprint still counts in the budget the other agents are
checked against, so large agents leave it room as they come and go. The lane
overcommits the footprint budget by at most ``f`` of it (a small agent is not
refused because large agents filled the budget — that refusal was the problem);
beyond the lane's cap small agents wait in the queue like everyone else.
Off (``S = 0`` and ``r = 0``), for controllers without a footprint budget
(``static``, ``none``), or while the replica has not reported its KV capacity.
Measured with realistic clients (no ``X-Agent-Done``) and the default policy, a light
tenant's control agents beside a heavy tenant's 12k-token ones waited in admission for
a slot of W (README, fairness): the relative rule makes them small without tuning.

Pure: numbers in, a yes/no out.
"""

from __future__ import annotations

from dataclasses import dataclass

from concurproxy.config.admission import AIMDConfig


@dataclass(frozen=True, slots=True)
class SmallAgentLane:
    max_agent_tokens: int = 0  # 0: no absolute threshold
    share: float = 0.2
    relative: float = 0.0  # > 0: also small when charge <= relative × the mean charge of the slot holders

    @classmethod
    def from_config(cls, aimd: AIMDConfig) -> SmallAgentLane:
        return cls(aimd.small_agent_tokens, aimd.small_agent_share, aimd.small_agent_relative)

    def cap(self, budget: int | None) -> int | None:
        """Footprint tokens small agents may hold together (None: the lane is closed)."""
        if (self.max_agent_tokens <= 0 and self.relative <= 0) or budget is None:
            return None
        return int(self.share * budget)

    def small(self, charge: int, typical: float | None) -> bool:
        """Is an agent charged ``charge`` small (``typical``: the mean charge of the slot holders, if any)?"""
        if 0 < self.max_agent_tokens and charge <= self.max_agent_tokens:
            return True
        return self.relative > 0 and typical is not None and charge <= self.relative * typical

    def fits(self, charge: int, held: int, budget: int | None, typical: float | None = None) -> bool:
        cap = self.cap(budget)
        return cap is not None and self.small(charge, typical) and held + charge <= cap
