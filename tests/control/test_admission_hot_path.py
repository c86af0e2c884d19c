"""Behaviour the per-step fast paths must keep: shared event log, one outcome enum, priors per role key,
pausing checks skipped only when nothing can be in excess, identity and tenant shortcuts."""

from __future__ import annotations

import asyncio

import pytest

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.config.budgets import AuthConfig, RoleConfig
from concurproxy.control.admission import (
    AdmissionCore,
    Admitted,
    EventKind,
    FifoQueue,
    Outcome,
    ReplicaWindow,
    Ticket,
    WindowShares,
)
from concurproxy.control.limits import StaticController
from concurproxy.control.limits.base import WindowDecision
from concurproxy.control.types import PriorityClass, StepInfo, StepOutcome
from concurproxy.errors import ProxyError
from concurproxy.identity import extract_identity
from concurproxy.server.auth import TenantResolver
from concurproxy.tenancy import ANONYMOUS, TenantDirectory, key_digest

CFG = AdmissionConfig(controller="static", static=StaticConfig(window=2), idle_ttl_s=30)


def step(agent: str, role: str = "r", prompt: int = 100) -> StepInfo:
    return StepInfo(tenant="t", role=role, agent_id=agent, task_id="k", est_prompt_tokens=prompt, max_tokens=10)


class Settable:
    """A window controller whose W the test sets."""

    name = "settable"
    stale_after_s = None

    def __init__(self, window: int) -> None:
        self.window = window

    def update(self, snapshot: object, in_use: int, now: float, acked: int | None = None) -> WindowDecision:
        return WindowDecision(self.window, False, "test")

    def on_step(self, sample: object) -> None:
        return None


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


def test_core_events_of_every_replica_drain_once_in_decision_order() -> None:
    core = AdmissionCore(CFG)
    a = admitted(core.try_admit(step("a"), "r0", 0.0))
    b = admitted(core.try_admit(step("b"), "r1", 1.0))
    core.end(a, Outcome.success, 2.0)
    core.end(b, Outcome.error, 3.0)
    events = core.drain_events()
    assert [(e.kind, e.replica, e.reason) for e in events] == [
        (EventKind.admitted, "r0", "new"),
        (EventKind.admitted, "r1", "new"),
        (EventKind.ended, "r0", "success"),
        (EventKind.ended, "r1", "error"),
    ]
    assert type(events[2].reason) is str  # the plain string, not the enum member
    assert core.drain_events() == []
    assert core.window("r0").counters.ended == {"success": 1} and core.window("r1").counters.ended == {"error": 1}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, StepOutcome.success),
        (TimeoutError(), StepOutcome.timeout),
        (ValueError("boom"), StepOutcome.error),
        (asyncio.CancelledError(), StepOutcome.cancelled),
        (GeneratorExit(), StepOutcome.cancelled),
    ],
)
def test_one_outcome_enum_from_an_exception(exc: BaseException | None, expected: StepOutcome) -> None:
    assert StepOutcome.of_exception(exc) is expected
    assert Outcome is StepOutcome  # the core ends tickets with the request path's enum: nothing is mapped


def test_outcome_of_a_status_the_proxy_answered() -> None:
    assert [StepOutcome.of_status(s) for s in (401, 413, 429, 502, 503)] == ["rejected"] * 3 + ["error"] * 2


def test_agent_priors_are_per_tenant_and_role_and_follow_the_role_key_when_shares_change() -> None:
    w = ReplicaWindow("r0", StaticController(StaticConfig(window=4)), CFG, FifoQueue[int]())
    t = admitted(w.try_admit(step("p", role="planner"), 0.0))
    held = w._held
    [agent] = held
    # an unconfigured role still has priors of its own (per tenant): not the default key's
    assert agent.priors is held.priors_of("planner", "t") and agent.priors is not held.priors_of("default", "t")
    assert agent.priors is not held.priors_of("planner", "other-tenant")
    w.set_shares(WindowShares.from_roles({"planner": RoleConfig(window_share=0.5)}), 1.0)
    assert agent.priors is held.priors_of("planner", "t") and agent.priors is not held.priors_of("default", "t")
    w.try_admit(step("p", role="planner", prompt=300), 2.0)  # in-window step: growth goes to the planner priors
    assert held.priors_of("planner", "t").growth == 200.0 and held.priors_of("default", "t").growth is None
    w.end(t, Outcome.success, 3.0)


def test_unconfigured_role_names_per_tenant_are_bounded() -> None:
    from concurproxy.control.admission.held import ROLE_KEYS_PER_TENANT

    w = ReplicaWindow("r0", StaticController(StaticConfig(window=4)), CFG, FifoQueue[int]())
    held = w._held
    keys = {held.prior_key(f"role-{i}", "t") for i in range(ROLE_KEYS_PER_TENANT + 10)}
    assert len(keys) == ROLE_KEYS_PER_TENANT + 1  # the first names, then the tenant's default for the rest
    assert held.prior_key("role-99", "t") == "t/default" and held.prior_key("role-0", "t") == "t/role-0"
    assert held.prior_key("role-99", "u") == "u/role-99"  # another tenant's names are its own


def test_a_lone_agent_is_never_paused_but_two_are_checked_after_each_step() -> None:
    w = ReplicaWindow("r0", StaticController(StaticConfig(window=1)), CFG, FifoQueue[int]())
    t = admitted(w.try_admit(step("a"), 0.0))
    w.end(t, Outcome.success, 1.0)
    assert w.active == 1 and w.counters.paused == 0
    # Over the window by two agents (a starvation grant can do that): the idle one is paused at a step end.
    shrinking = Settable(2)
    w2 = ReplicaWindow("r0", shrinking, CFG, FifoQueue[int]())
    ta, tb = admitted(w2.try_admit(step("a"), 0.0)), admitted(w2.try_admit(step("b"), 0.0))
    w2.end(ta, Outcome.success, 1.0)
    shrinking.window = 1  # the window shrank while b runs
    w2.end(tb, Outcome.success, 2.0)
    assert [a.agent_id for a in w2._held] == ["a"] and w2.counters.paused == 1


def test_identity_fast_path_matches_the_metadata_path() -> None:
    hdrs = {"X-Agent-Id": "a1", "X-Task-Id": "t1", "X-Agent-Role": "planner", "X-Priority": "low"}
    plain = extract_identity(hdrs, {}, "acme", "r")
    with_meta = extract_identity(hdrs, {"metadata": {"agent_id": "m", "role": "critic"}}, "acme", "r")
    assert plain == with_meta
    # An empty header counts as absent, with or without metadata (no 400 for an empty X-Priority).
    empty = {"X-Agent-Id": "", "X-Task-Id": "", "X-Agent-Role": "", "X-Priority": "", "X-Agent-Done": ""}
    ident = extract_identity(empty, {"user": "u7"}, "t", "r")  # a non-string user is not an id: not used
    assert (ident.agent_id, ident.task_id, ident.role, ident.priority, ident.done) == (
        "u7",
        "u7",
        "default",
        None,
        False,
    )
    meta = extract_identity(empty, {"metadata": {"priority": 0, "agent_done": True, "agent_id": "m"}}, "t", "r")
    assert meta.priority is PriorityClass.critical and meta.done and meta.agent_id == "m"
    assert extract_identity({}, {"metadata": ["not", "a", "mapping"]}, "t", "r").one_shot
    with pytest.raises(ProxyError):
        extract_identity({"X-Task-Id": "bad id"}, {}, "t", "r")


def test_no_tenant_keys_and_anonymous_allowed_resolves_without_reading_the_key() -> None:
    open_door = TenantResolver(TenantDirectory.from_policy([], AuthConfig()))
    assert open_door.directory.everyone_anonymous
    assert open_door.resolve({"Authorization": "Bearer anything"}) == ANONYMOUS == open_door.resolve({})
    keyed = TenantResolver(TenantDirectory({key_digest("k"): "a"}))
    assert not keyed.directory.everyone_anonymous
    assert keyed.resolve({"Authorization": "Bearer k"}) == "a" and keyed.resolve({}) == ANONYMOUS
    closed = TenantResolver(TenantDirectory.from_policy([], AuthConfig(allow_anonymous=False)))
    assert not closed.directory.everyone_anonymous
    with pytest.raises(ProxyError):
        closed.resolve({})
