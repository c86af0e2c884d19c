"""Session ids that clients already send: recognised in order, labelled, namespaced by tenant."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict
from session_helpers import NO_HEADERS, ChatAgent, chat_step, make_resolver

from concurproxy.config.identity import ClientSessionIdConfig, IdentityConfig
from concurproxy.identity import _ID_RE
from concurproxy.sessions import SessionResolver, from_chat

UUID = "0b7c7e7e-3f5a-4c1e-9a57-0d5b8f6f2a11"


def resolve(r: SessionResolver, headers: dict[str, str], body: dict[str, Any] | None = None, tenant: str = "t") -> Any:
    body = body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return r.resolve(tenant, CIMultiDict(headers), body, from_chat(body), request_id="rq")


@pytest.mark.parametrize(
    ("headers", "body", "agent"),
    [
        ({"X-Claude-Code-Session-Id": UUID}, {}, f"claude-code:{UUID}"),
        ({"x-opencode-session": "ses_abc"}, {}, "opencode:ses_abc"),
        ({"x-session-affinity": "ses_abc"}, {}, "opencode:ses_abc"),
        ({"session_id": UUID}, {}, f"codex:{UUID}"),
        ({"session_id": UUID, "x-openai-subagent": "review"}, {}, f"codex:{UUID}/review"),
        ({"X-Session-ID": "conv-1"}, {}, "session:conv-1"),
        ({}, {"session_params": {"session_id": "conv-2"}}, "vllm-router:conv-2"),
        ({}, {"session_params": {"session_id": 42}}, "vllm-router:42"),
        ({}, {"conversation": "conv_68a"}, "conversation:conv_68a"),
        ({}, {"conversation": {"id": "conv_68b"}}, "conversation:conv_68b"),
        ({}, {"metadata": {"user_id": f"user_{'ab' * 32}_account__session_{UUID}"}}, f"claude-code:{UUID}"),
        (
            {},
            {"metadata": {"user_id": f'{{"device_id":"d1","account_uuid":"","session_id":"{UUID}"}}'}},
            f"claude-code:{UUID}",
        ),
    ],
)
def test_each_default_source_is_recognised(headers: dict[str, str], body: dict[str, Any], agent: str) -> None:
    res = resolve(make_resolver(), headers, {"model": "m", "messages": [], **body})
    assert (res.source, res.agent_id, res.one_shot) == ("client-session", agent, False)
    assert res.detail == agent.split(":")[0]


def test_first_source_in_policy_order_wins_and_explicit_identity_wins_over_all() -> None:
    r = make_resolver()
    both = {"x-opencode-session": "b", "X-Claude-Code-Session-Id": "a"}
    assert resolve(r, both).agent_id == "claude-code:a"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    res = r.resolve("t", CIMultiDict(both), body, from_chat(body), request_id="rq", explicit="mine")
    assert (res.agent_id, res.source) == ("mine", "header")
    custom = make_resolver(client_session_ids=[ClientSessionIdConfig(header="x-opencode-session", label="oc")])
    assert resolve(custom, both).agent_id == "oc:b"


def test_a_user_id_that_names_a_user_not_a_session_is_not_an_agent() -> None:
    """Anthropic's metadata.user_id names the end user; only Claude Code's form carries a session."""
    res = resolve(
        make_resolver(),
        {},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {"user_id": "user-42"}},
    )
    assert res.source == "new"


def test_ids_that_are_not_safe_are_hashed_not_refused() -> None:
    r = make_resolver(client_session_ids=[ClientSessionIdConfig(body="metadata.user_id", label="user")])
    json_user_id = '{"device_id":"6199ed6c","account_uuid":"","session_id":"1e528e30"}'
    a = resolve(r, {}, {"model": "m", "messages": [], "metadata": {"user_id": json_user_id}})
    b = resolve(r, {}, {"model": "m", "messages": [], "metadata": {"user_id": "u" * 200}})
    c = resolve(make_resolver(), {"session_id": "bad id\twith spaces"})
    for res in (a, b, c):
        assert _ID_RE.match(res.agent_id), res.agent_id
        assert ":h-" in res.agent_id
    again = resolve(r, {}, {"model": "m", "messages": [], "metadata": {"user_id": json_user_id}})
    assert again.agent_id == a.agent_id  # a digest is stable


@pytest.mark.parametrize("value", [None, "", "   ", True, 1.5, ["a"], {"k": "v"}])
def test_values_that_are_not_ids_are_skipped(value: Any) -> None:
    res = resolve(make_resolver(), {}, {"model": "m", "messages": [], "session_params": {"session_id": value}})
    assert res.source != "client-session"


def test_client_session_ids_are_namespaced_by_tenant() -> None:
    r = make_resolver()
    one = resolve(r, {"X-Claude-Code-Session-Id": UUID}, tenant="acme")
    two = resolve(r, {"X-Claude-Code-Session-Id": UUID}, tenant="globex")
    assert one.agent_id == two.agent_id  # the label and value; the request path scopes it as tenant/agent
    assert one.scoped_id == f"acme/claude-code:{UUID}" and two.scoped_id == f"globex/claude-code:{UUID}"


def test_inferred_sessions_never_join_two_tenants(resolver: SessionResolver) -> None:
    a = ChatAgent(resolver, "same system prompt", "same task", tenant="acme")
    b_steps = []
    for _n in range(3):
        a.step()
        b_steps.append(chat_step(resolver, list(a.messages), tenant="globex"))  # the very same history
    assert "s-1" not in {s.agent_id for s in b_steps}  # globex's copy is its own agent, never acme's
    assert b_steps[0].source == "new" and len({s.agent_id for s in b_steps}) == 1


def test_with_inference_off_only_sent_ids_count() -> None:
    r = make_resolver(infer="off")
    assert resolve(r, {"x-opencode-session": "s"}).agent_id == "opencode:s"
    res = chat_step(r, [{"role": "user", "content": "x"}], headers=NO_HEADERS)
    assert (res.source, res.detail) == ("one-shot", "infer-off")


def test_the_config_section_is_validated() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ClientSessionIdConfig(header="a", body="b", label="x")
    with pytest.raises(ValueError, match="exactly one"):
        ClientSessionIdConfig(label="x")
    with pytest.raises(ValueError):
        ClientSessionIdConfig(header="bad header", label="x")
    with pytest.raises(ValueError, match="not a regular expression"):
        ClientSessionIdConfig(header="a", label="x", match="(")
    with pytest.raises(ValueError, match="needs a group"):
        ClientSessionIdConfig(header="a", label="x", match="abc")
    with pytest.raises(ValueError):
        IdentityConfig(infer="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IdentityConfig(max_entries=10)
