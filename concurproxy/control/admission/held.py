"""The agents holding a place on one replica, in admission order, with their KV footprints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from concurproxy.config.admission import AIMDConfig
from concurproxy.control.admission.footprint import Footprint, FootprintPriors, RolePriors
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.admission.state import AgentState
from concurproxy.control.types import PriorityClass, StepInfo


@dataclass(slots=True)
class HeldAgent:
    agent_id: str
    tenant: str
    role: str
    admitted_at: float
    last_seen: float
    fp: Footprint
    priors: FootprintPriors  # of its tenant and role key (HeldAgents.prior_key, refresh_priors)
    running: int = 0
    steps: int = 0
    releasing: bool = False
    small: bool = False  # admitted by the small-agent lane: holds no slot of W
    priority: PriorityClass = PriorityClass.normal  # of the step that admitted it


# Distinct unconfigured role names per tenant that get footprint priors of their own; a tenant's
# further names share its ``default`` key (role names come from clients: the number of keys stays bounded).
ROLE_KEYS_PER_TENANT = 16


class HeldAgents:
    """``agents`` (a dict in admission order) plus what the window asks of them as a whole.

    Footprint charges use the priors of the agent's *tenant and role* (`RolePriors`): the role
    is a configured role (``role_key``: the window shares' mapping) or, for the first
    ``ROLE_KEYS_PER_TENANT`` unconfigured role names a tenant sends, the name itself; further
    names share the tenant's ``default``. Why per tenant and role, not per configured role: with
    no roles configured (the default policy) one tenant's 12k-token executors set the lifetime
    floor of another tenant's 1k-token control agents (each charged ~9k: none was small, the
    budget was twice over and the control agents were paused and waited 12 s for a slot;
    ``benchmarks.fairness_proxy``, default policy). Tenants are bounded by the policy.
    Slot holders are the agents counted against the window W: all but the small ones.
    Pure; single caller (the replica's window).
    """

    def __init__(self, aimd: AIMDConfig, role_key: Callable[[str], str]) -> None:
        self.agents: dict[str, HeldAgent] = {}
        self.role_key = role_key
        self._priors = RolePriors(aimd.footprint_peak_share, aimd.initial_growth_tokens, aimd.growth_lookahead_steps)
        self._names: dict[str, set[str]] = {}  # tenant -> unconfigured role names with priors of their own

    def __iter__(self) -> Iterator[HeldAgent]:
        return iter(self.agents.values())

    def prior_key(self, role: str, tenant: str = "") -> str:
        """The priors key of an agent of ``tenant`` and ``role`` (see the class doc)."""
        key = self.role_key(role)
        if key != role:  # not a configured role: its own name while the tenant has few
            names = self._names.setdefault(tenant, set())
            if role in names or len(names) < ROLE_KEYS_PER_TENANT:
                names.add(role)
                key = role
        return f"{tenant}/{key}"

    def priors_of(self, role: str, tenant: str = "") -> FootprintPriors:
        return self._priors.of(self.prior_key(role, tenant))

    def refresh_priors(self) -> None:
        """The role keys changed (new window shares): re-point every agent at its role key's priors."""
        for a in self.agents.values():
            a.priors = self.priors_of(a.role, a.tenant)

    def charge(self, agent: HeldAgent) -> int:
        return agent.priors.charge(agent.fp)

    def new_footprint(self, step: StepInfo, priors: FootprintPriors | None = None) -> Footprint:
        # A prefix already resident on the replica (a shared system prompt) costs no new KV;
        # an agent whose first step is its last will not grow.
        private = max(0, step.est_prompt_tokens - step.resident_prefix_tokens)
        if priors is None:
            priors = self.priors_of(step.role, step.tenant)
        return priors.new(private, step.max_tokens, step.last_step)

    def new_charge(self, step: StepInfo) -> int:
        """What a new agent starting with ``step`` would count for in the budget (one priors lookup: this
        runs for every waiter the grant loop looks at)."""
        priors = self.priors_of(step.role, step.tenant)
        return priors.charge(self.new_footprint(step, priors))

    def footprint_tokens(self) -> int:
        return sum(self.charge(a) for a in self.agents.values())

    def mean_charge(self) -> float | None:
        """The mean footprint charge of the agents holding slots of W (None: none holds one)."""
        holders = [a for a in self.agents.values() if not a.small]
        return sum(self.charge(a) for a in holders) / len(holders) if holders else None

    def small_tokens(self) -> int:
        return sum(self.charge(a) for a in self.agents.values() if a.small)

    def slot_holders(self) -> list[HeldAgent]:
        """Agents holding a slot of W (admission order): all but the small-agent lane's."""
        return [a for a in self.agents.values() if not a.small]

    @staticmethod
    def acked(holders: list[HeldAgent]) -> int:
        """Of ``holders``, those that had a step end since their admission: the engine's KV readings have
        seen them (AIMD's slow start). A resumed agent counts: its step count runs over its pause."""
        return sum(1 for a in holders if a.steps > a.running)

    def keep_order(self, shares: WindowShares, window: int) -> list[HeldAgent]:
        """Every agent, those to keep first: small ones (bounded by their lane), then slot holders
        within their role's guarantee, then burst ones; admission order within each."""
        holders = self.slot_holders()
        if shares:
            holders = [self.agents[a.agent_id] for a in shares.rank(holders, window)]
        return [a for a in self.agents.values() if a.small] + holders

    def over_window(self, shares: WindowShares, window: int) -> list[HeldAgent]:
        """Idle slot holders ranked beyond W (running ones lose their slot after their step)."""
        holders = [a for a in self.keep_order(shares, window) if not a.small]
        return [a for a in holders[window:] if a.running == 0]

    def over_budget(self, shares: WindowShares, window: int, budget: int) -> list[HeldAgent]:
        """Admitted contexts that outgrew the cache: the idle agents to pause, longest idle first,
        until the rest fit ``budget``.

        The footprint check happens at admission; if the agents' *current* contexts (no
        lookahead, no floor) no longer fit the budget, evicting someone's prefix is certain and
        the engine shows it only as a falling hit rate (no preemption, KV gauge below high
        water while agents sit in tool pauses). Pausing between steps is the window's own
        remedy. Longest idle first — the engine's own LRU order for cached prefixes: an agent
        idle longest is the one most likely finished (most clients never say so) or in a long
        tool call, so its prefix is the cheapest to lose. The first-kept agent always keeps its place.
        Small agents (the small-agent lane's) count in the sum but are never paused for it: the lane
        is bounded by its share of the budget, and pausing a 1k-token control agent frees next to
        nothing while its next step waits for admission (``benchmarks.fairness_proxy``, default
        policy: the light tenant's agents were paused and re-admitted every few hundred ms).
        """
        held = sum(a.fp.context for a in self.agents.values())
        out: list[HeldAgent] = []
        if held <= budget:  # the usual case: no ranking needed
            return out
        order = self.keep_order(shares, window)
        rank = {a.agent_id: i for i, a in enumerate(order)}
        guaranteed = {a.agent_id for a in shares.split(self.slot_holders(), window)[0]} if shares else set()
        idle = [a for a in order[1:] if a.running == 0 and not a.small]
        # burst agents before those within their role's guarantee; then the least urgent
        # priority first (a high-priority control agent in a long tool pause is not the one to lose its
        # prefix for a burst of long-context work); longest idle first within (ties: the newest admitted
        # first, like a cut of W)
        idle.sort(key=lambda a: (a.agent_id in guaranteed, -a.priority, a.last_seen, -rank[a.agent_id]))
        for a in idle:
            if held <= budget:
                break
            held -= a.fp.context
            out.append(a)
        return out

    def states(self, now: float) -> list[AgentState]:
        return [
            AgentState(
                a.agent_id,
                a.tenant,
                a.role,
                a.running,
                a.steps,
                now - a.admitted_at,
                0.0 if a.running else now - a.last_seen,
                self.charge(a),
                a.releasing,
                a.small,
            )
            for a in self.agents.values()
        ]
