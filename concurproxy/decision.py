"""The proxy's decision core, built from a policy in one place: the policy simulated is the policy served.

``DecisionCore.from_policy(policy, plugins)`` makes every pure core a step meets, from the same
plugin registries the proxy uses, and nothing else:

* ``budgets`` — `BudgetEngine` (role and tenant token budgets, step caps);
* ``router`` — the ``routing.policy`` router with its scorers (`build_router`);
* ``admission`` — `AdmissionCore`: a window of agents per replica led by ``admission.controller``
  (with ``fallback_controller`` for replicas without a KV signal), its wait queue ordered by
  ``fairness.policy``, the roles' window shares and the tenants' weights (``configure_admission``).
  None for ``admission.controller: none``: every step is admitted at once and nothing is tracked
  (the plain-engine baseline; the proxy's ``OpenGate``);
* ``dispatch`` — `DispatchCores` (prefill gate, KV reserve) per replica; None when ``fairness``
  turns both off, or admission is ``none``;
* ``fairness`` — `FairnessParams` (VTC charges, tenant weights).

Who builds it: ``server/assembly.py`` (the proxy wraps each core in its stage: budgets, routing,
the admission gate, dispatch) and ``simulate`` (the fleet simulation and the admission
virtual-time harness run the same object in virtual time). Both run one step in the same order:

    budgets.check → router.route → admission.try_admit (or wait for a grant) → dispatch
    (KV reserve, then prefill gate) → the engine → admission.end, budgets.settle,
    router.observe_served, dispatch end

and, every control interval, ``admission.on_pressure`` per replica → ``expire`` → ``grant``.

The Redis-shared proxy passes ``wrap_controller`` (each replica's controller capped at this
instance's share of the fleet window) and ``wrap_queues`` (fleet-wide fairness counters).

Pure: no clock is read or kept (every call takes ``now``; nothing here needs one at build time:
windows are made on a replica's first step). Single caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from concurproxy.config.models import Policy
from concurproxy.control.admission.core import AdmissionCore, QueueMaker
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.budgets import BudgetEngine, BudgetLimits
from concurproxy.control.dispatch import DispatchCores, DispatchParams
from concurproxy.control.fairness.base import FairnessParams
from concurproxy.control.limits.base import WindowController
from concurproxy.plugins.installed import Plugins
from concurproxy.routing import Router, build_router

ControllerWrap = Callable[[str, WindowController], WindowController]
QueueWrap = Callable[[QueueMaker], QueueMaker]


@dataclass(slots=True)
class DecisionCore:
    policy: Policy
    budgets: BudgetEngine
    router: Router
    admission: AdmissionCore | None  # None: admission.controller none (every step admitted at once)
    dispatch: DispatchCores | None  # None: no dispatch holds (fairness settings, or admission none)
    fairness: FairnessParams
    stale_after_s: float  # pressure older than this is unknown to the router
    block_tokens: int  # the router's prefix block size

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        plugins: Plugins | None = None,
        *,
        wrap_controller: ControllerWrap | None = None,
        wrap_queues: QueueWrap | None = None,
    ) -> DecisionCore:
        """``plugins``: the registries names are looked up in (default: built-ins and installed entry points)."""
        plugins = plugins if plugins is not None else Plugins.load()
        fairness = FairnessParams.from_policy(policy.fairness, policy.tenants)
        admission = None
        if policy.admission.controller != "none":
            admission = admission_core(policy, plugins, fairness, wrap_controller, wrap_queues)
        dispatch_params = DispatchParams.from_policy(policy.fairness)
        dispatch = DispatchCores(dispatch_params) if admission is not None and dispatch_params.enabled else None
        return cls(
            policy=policy,
            budgets=BudgetEngine(BudgetLimits.for_policy(policy)),
            router=build_router(policy.routing, plugins.scorers, policies=plugins.routers),
            admission=admission,
            dispatch=dispatch,
            fairness=fairness,
            stale_after_s=policy.admission.aimd.stale_after_ms / 1000.0,
            block_tokens=policy.routing.block_tokens,
        )


def admission_core(
    policy: Policy,
    plugins: Plugins,
    fairness: FairnessParams,
    wrap_controller: ControllerWrap | None = None,
    wrap_queues: QueueWrap | None = None,
) -> AdmissionCore:
    """The policy's `AdmissionCore` (see the module doc); raises ``PluginError`` for an unknown name."""
    cfg, registry, queues = policy.admission, plugins.controllers, plugins.fairness
    name = policy.fairness.policy
    queues.get(name)  # fail fast on an unknown name (the queues are made per replica, later)
    queue_maker: QueueMaker = lambda _replica: queues.queue(name, fairness)  # noqa: E731
    if wrap_queues is not None:
        queue_maker = wrap_queues(queue_maker)
    controller_maker = None
    if wrap_controller is not None:
        registry.factory(cfg.controller)  # fail fast on an unknown name
        wrap = wrap_controller
        controller_maker = lambda replica: wrap(replica, registry.create(cfg))  # noqa: E731
    core = AdmissionCore(cfg, controller_maker=controller_maker, queue_maker=queue_maker, registry=registry)
    configure_admission(core, policy, 0.0)
    return core


def configure_admission(core: AdmissionCore, policy: Policy, now: float) -> None:
    """What a policy sets on a running admission core (at start and on every reload): the roles'
    window shares (``roles.*.window_share``) and the tenants' weights (``tenants[].weight``)."""
    core.set_shares(WindowShares.from_roles(policy.roles), now)
    core.set_tenant_weights(FairnessParams.from_policy(policy.fairness, policy.tenants).weight)
