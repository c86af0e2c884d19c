"""Client modes (unit): scenario validation, header sets per mode, bodies per API, chaining, CLI overrides."""

from __future__ import annotations

from typing import Any

import pytest

from concurproxy.tokens import render_chat, tokenize
from concurproxy.worker.conversation import anthropic_messages, responses_messages
from loadgen.apis import ChatApi, Link, MessagesApi, ResponsesApi, chain_link, headers, make_api
from loadgen.cli import _overridden, build_parser
from loadgen.generator import iter_tasks
from loadgen.plan import StepSpec
from loadgen.scenario import ClientSpec, ScenarioError, load_scenario, parse_scenario, with_overrides

SPEC = StepSpec(
    task_id="t1",
    agent_id="t1.exec0",
    role="executor",
    index=1,
    messages=(("system", "tools here"), ("user", "task"), ("assistant", "reply"), ("user", "more"), ("user", "x")),
    max_tokens=8,
    est_prompt_tokens=0,
    priority="high",
    agent_done=True,
)
IDENTITY = {"X-Task-Id", "X-Agent-Id", "X-Agent-Role", "X-Priority"}


def test_client_defaults_keep_todays_behaviour() -> None:
    c = parse_scenario({"max_tasks": 1}).client
    assert (c.api, c.identity, c.done_signal, c.responses_chain) == ("chat", "headers", True, False)


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ({"identity": "none"}, ("none", False)),  # no done signal without identity, by default
        ({"identity": "headers", "done_signal": False}, ("headers", False)),
        ({"api": "messages"}, ("headers", True)),
    ],
)
def test_done_signal_follows_identity(client: dict[str, Any], expected: tuple[str, bool]) -> None:
    c = parse_scenario({"max_tasks": 1, "client": client}).client
    assert (c.identity, c.done_signal) == expected


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({"identity": "none", "done_signal": True}, "done_signal needs identity: headers"),
        ({"api": "chat", "responses_chain": True}, "responses_chain needs api: responses"),
        ({"api": "grpc"}, "client.api"),
        ({"identity": "sometimes"}, "client.identity"),
        ({"apis": "chat"}, "client.apis"),
    ],
)
def test_bad_client_blocks_are_named(client: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"max_tasks": 1, "client": client})


@pytest.mark.parametrize(
    ("client", "api", "expected"),
    [
        (ClientSpec(), ChatApi(), {"Authorization", *IDENTITY, "X-Agent-Done"}),
        (ClientSpec(done_signal=False), ChatApi(), {"Authorization", *IDENTITY}),
        (ClientSpec(identity="none"), ChatApi(), {"Authorization"}),
        (ClientSpec(identity="none", api="responses"), ResponsesApi(), {"Authorization"}),
        (ClientSpec(identity="none", api="messages"), MessagesApi(), {"x-api-key", "anthropic-version"}),
        (ClientSpec(api="messages"), MessagesApi(), {"x-api-key", "anthropic-version", *IDENTITY, "X-Agent-Done"}),
    ],
)
def test_header_sets_per_mode(client: ClientSpec, api: Any, expected: set[str]) -> None:
    h = headers(SPEC, api, "sk-1", client)
    assert set(h) == expected
    assert h.get("Authorization", "Bearer sk-1") == "Bearer sk-1" and h.get("x-api-key", "sk-1") == "sk-1"
    last = headers(StepSpec(**{**_fields(SPEC), "agent_done": False}), api, "sk-1", client)
    assert "X-Agent-Done" not in last


def _fields(s: StepSpec) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__slots__}  # type: ignore[attr-defined]


def test_the_three_bodies_give_the_worker_the_same_tokens() -> None:
    """The worker's conversation model maps each API's body back to the chat conversation."""
    chat = ChatApi().body(SPEC, "m", True, None)
    ref = tokenize(render_chat(chat["messages"]))
    resp = ResponsesApi().body(SPEC, "m", True, None)
    assert resp["instructions"] == "tools here" and resp["store"] is False
    assert tokenize(render_chat(responses_messages(resp["instructions"], resp["input"]))) == ref
    msgs = MessagesApi().body(SPEC, "m", False, None)
    assert msgs["system"] == "tools here" and msgs["max_tokens"] == 8
    assert tokenize(render_chat(anthropic_messages(msgs["system"], msgs["messages"]))) == ref


def test_responses_chaining_sends_only_the_new_input() -> None:
    prev = Link(SPEC.messages[:2], "resp_1")
    link = chain_link(prev, SPEC)
    assert link is prev
    body = ResponsesApi(chain=True).body(SPEC, "m", True, link)
    assert body["previous_response_id"] == "resp_1" and body["store"] is True
    assert body["input"] == [{"role": "user", "content": "more"}, {"role": "user", "content": "x"}]
    assert body["instructions"] == "tools here"  # instructions are not carried over a chain
    other = Link((("user", "different"),), "resp_2")
    assert chain_link(other, SPEC) is None and chain_link(None, SPEC) is None


def test_make_api_per_client() -> None:
    assert isinstance(make_api(ClientSpec(api="messages")), MessagesApi)
    api = make_api(ClientSpec(api="responses", responses_chain=True))
    assert isinstance(api, ResponsesApi) and api.chain
    assert make_api(ClientSpec()).path == "/v1/chat/completions"


def test_plain_loop_defaults_and_overrides() -> None:
    sc = load_scenario("plain-loop")
    assert (sc.client.identity, sc.client.done_signal) == ("none", False)
    plans = list(iter_tasks(sc))
    assert len(plans) == 8 and all(p.n_steps == 8 and len(p.phases) == 1 for p in plans)
    sizes = [s.est_prompt_tokens + s.max_tokens for p in plans for s in p.steps()]
    assert 900 <= max(sizes) <= 1024  # grows to about the whole tiny cache, within max_model_len
    assert all(s.pause_after_s == 0 for p in plans for s in p.steps())
    big = with_overrides(sc, agents=48, steps=3, client={"api": "messages", "identity": None})
    assert big.max_tasks == 48 and big.arrivals.concurrency == 48  # type: ignore[union-attr]
    assert all(p.n_steps == 3 for p in iter_tasks(big)) and big.client.api == "messages"
    with pytest.raises(ScenarioError, match="done_signal needs identity"):
        with_overrides(sc, client={"done_signal": True})


def test_identity_override_rederives_the_done_signal() -> None:
    sc = load_scenario("agents-thrash")
    assert sc.client.done_signal
    assert not with_overrides(sc, client={"identity": "none"}).client.done_signal


def test_agents_needs_a_closed_loop() -> None:
    sc = parse_scenario({"max_tasks": 3, "arrivals": {"mode": "poisson", "rate_per_s": 1}})
    with pytest.raises(ScenarioError, match="closed-loop"):
        with_overrides(sc, agents=4)


def test_cli_flags_reach_the_scenario() -> None:
    argv = ["run", "plain-loop", "--target", "http://x", "--api", "responses", "--responses-chain"]
    args = build_parser().parse_args([*argv, "--agents", "3", "--steps", "2", "--identity", "headers"])
    sc = _overridden(load_scenario("plain-loop"), args)
    assert (sc.client.api, sc.client.responses_chain, sc.client.identity, sc.client.done_signal) == (
        "responses",
        True,
        "headers",
        True,
    )
    assert sc.max_tasks == 3 and sc.task.branch_steps.value == 2  # type: ignore[union-attr]
    plain = _overridden(load_scenario("plain-loop"), build_parser().parse_args(argv[:4]))
    assert plain.client == load_scenario("plain-loop").client
