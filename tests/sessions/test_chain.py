"""An agent's steps land on one agent without identity headers: chat, Anthropic Messages, Responses."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from session_helpers import NO_HEADERS, ChatAgent, chat_answer, chat_step, make_resolver, tool_call_reply

from concurproxy.identity import extract_identity
from concurproxy.sessions import (
    ChatStreamReply,
    MessagesStreamReply,
    SessionResolver,
    from_messages,
    from_responses,
    reply_from_chat,
    reply_from_messages,
    reply_from_responses,
)
from concurproxy.sessions.fingerprint import reply_key


def test_a_chain_of_chat_steps_is_one_agent(resolver: SessionResolver) -> None:
    agent = ChatAgent(resolver, "You are a coding agent.", "Fix the failing test.")
    steps = [agent.step() for _ in range(6)]
    steps.append(agent.step({"role": "assistant", "content": "Done: the test passes."}))
    steps.append(agent.step())  # the user's next turn after a text answer
    assert {s.agent_id for s in steps} == {"s-1"}
    assert [s.source for s in steps] == ["new"] + ["chain"] * 7
    assert {s.detail for s in steps[1:]} == {"reply"}
    assert resolver.state()["recent"][0] == {"tenant": "t", "agent": "s-1", "steps": 8, "parent": None, "idle_s": 0.0}


def test_the_chain_holds_when_the_client_reserialises_what_it_resends(resolver: SessionResolver) -> None:
    """LangChain-style: arguments parsed and dumped again, content null vs "", whitespace, cache markers."""
    system = {"role": "system", "content": "sys"}
    first = chat_step(resolver, [system, {"role": "user", "content": "go"}])
    engine = tool_call_reply("call_1", args='{"q":"x","n":2}')
    engine["content"] = "\n"
    chat_answer(resolver, first, engine)
    resent = tool_call_reply("call_1", args=json.dumps({"n": 2, "q": "x"}, indent=1))
    resent["content"] = ""
    user = {"role": "user", "content": [{"type": "text", "text": "go", "cache_control": {"type": "ephemeral"}}]}
    second = chat_step(resolver, [system, user, resent, {"role": "tool", "tool_call_id": "call_1", "content": "r"}])
    assert (second.agent_id, second.detail) == (first.agent_id, "reply")


def test_without_answers_the_chain_holds_through_the_previous_prompt(resolver: SessionResolver) -> None:
    """A request path that cannot read the answer (a stream it did not parse) still keeps the agent."""
    agent = ChatAgent(resolver, "sys", "task")
    steps = [agent.step(remember=False) for _ in range(4)]
    assert {s.agent_id for s in steps} == {"s-1"}
    assert [s.detail for s in steps[1:]] == ["prompt"] * 3


def test_streamed_answers_remember_the_same_key_as_whole_ones(resolver: SessionResolver) -> None:
    first = chat_step(resolver, [{"role": "user", "content": "hi"}])
    whole = tool_call_reply("call_9", args='{"q": "long query"}')
    whole["content"] = "Let me look."
    acc = ChatStreamReply()
    for chunk in [
        {"choices": [{"delta": {"role": "assistant", "content": "Let me"}}]},
        {"choices": [{"delta": {"content": " look."}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "search"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "lo'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ng query"}'}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": 3}},
        "not an object",
    ]:
        acc.feed(chunk)
    assert first.keys is not None
    streamed = reply_key(first.keys, acc.reply())
    assert streamed == reply_key(first.keys, reply_from_chat({"choices": [{"message": whole}]}))


def _anthropic(r: SessionResolver, body: dict[str, Any]) -> Any:
    return r.resolve("t", NO_HEADERS, body, from_messages(body), request_id="rq")


def test_an_anthropic_conversation_without_headers_is_one_agent(resolver: SessionResolver) -> None:
    """Claude Code's layout: a billing block whose hash changes per request, then the prompt blocks."""
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.88; cch=00000;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}},
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "fix the bug"}]}]
    seen = []
    for n in range(5):
        system[0]["text"] = f"x-anthropic-billing-header: cc_version=2.1.88; cch={n:05x};"
        body = {"model": "claude", "max_tokens": 100, "system": system, "messages": list(messages)}
        res = _anthropic(resolver, body)
        seen.append(res)
        answer = {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": f"step {n}"},
                {"type": "tool_use", "id": f"toolu_{n}", "name": "Bash", "input": {"command": "ls", "timeout": 5}},
            ],
        }
        resolver.remember(res, reply_from_messages(answer))
        resent = [b for b in answer["content"] if b["type"] != "thinking"]  # some clients drop thinking
        messages.append({"role": "assistant", "content": resent})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": [{"type": "text", "text": "ok"}]}
        messages.append({"role": "user", "content": [result, {"type": "text", "text": "<system-reminder/>"}]})
    assert {s.agent_id for s in seen} == {"s-1"}
    assert [s.detail for s in seen[1:]] == ["reply"] * 4


def test_anthropic_streamed_answer_matches_the_resent_blocks(resolver: SessionResolver) -> None:
    body = {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    first = _anthropic(resolver, body)
    acc = MessagesStreamReply()
    for event in [
        {"type": "message_start", "message": {"id": "m", "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Sure"}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "tu1", "name": "R"}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"p": '}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"a"}'}},
        {"type": "message_stop"},
    ]:
        acc.feed(event)
    resolver.remember(first, acc.reply())
    resent = [{"type": "text", "text": "Sure"}, {"type": "tool_use", "id": "tu1", "name": "R", "input": {"p": "a"}}]
    tool = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "x"}]}
    body2 = {**body, "messages": [*body["messages"], {"role": "assistant", "content": resent}, tool]}
    second = _anthropic(resolver, body2)
    assert (second.agent_id, second.detail) == (first.agent_id, "reply")


def test_a_responses_conversation_resent_as_items_is_one_agent(resolver: SessionResolver) -> None:
    """store=false clients (Codex) resend the output items; previous_response_id is the codec's case."""
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}
    ]
    seen = []
    for n in range(4):
        body = {"model": "m", "instructions": "be brief", "input": list(items), "store": False}
        res = resolver.resolve("t", NO_HEADERS, body, from_responses(body), request_id="rq")
        seen.append(res)
        output = [
            {"type": "reasoning", "id": f"rs_{n}", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"a{n}"}]},
            {"type": "function_call", "call_id": f"fc_{n}", "name": "shell", "arguments": '{"cmd": ["ls"]}'},
        ]
        resolver.remember(res, reply_from_responses({"id": f"resp_{n}", "output": output}))
        items += [*output, {"type": "function_call_output", "call_id": f"fc_{n}", "output": "files"}]
    assert {s.agent_id for s in seen} == {"s-1"}
    assert [s.detail for s in seen[1:]] == ["reply"] * 3


def test_a_string_system_prompt_loses_its_billing_line_too(resolver: SessionResolver) -> None:
    def body(n: int) -> dict[str, Any]:
        system = f"x-anthropic-billing-header: cch={n};\nYou are Claude Code."
        return {"model": "c", "max_tokens": 9, "system": system, "messages": [{"role": "user", "content": "x"}]}

    first, second = _anthropic(resolver, body(1)), _anthropic(resolver, body(2))
    assert (second.agent_id, second.detail) == (first.agent_id, "retry")


class CodecTurn(NamedTuple):
    """The API codecs' Turn (branch h-codecs): the same fields, another type."""

    role: str
    text: str
    tool_calls: tuple[Any, ...] = ()
    tool_call_id: str | None = None


class CodecCall(NamedTuple):
    id: str
    name: str
    arguments: str


def test_a_codec_view_hashes_like_the_adapters(resolver: SessionResolver) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "q"},
            tool_call_reply("c1"),
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    }
    view = (
        CodecTurn("user", "q"),
        CodecTurn("assistant", "", (CodecCall("c1", "search", '{"q":"x"}'),)),
        CodecTurn("tool", "r", (), "c1"),
    )
    mine = chat_step(resolver, body["messages"])
    theirs = resolver.resolve("t", NO_HEADERS, body, view, request_id="rq")
    assert mine.keys is not None and theirs.keys is not None
    assert (mine.keys.prompt, mine.keys.chain, mine.keys.previous) == (
        theirs.keys.prompt,
        theirs.keys.chain,
        theirs.keys.previous,
    )


def test_an_agent_decided_by_the_codec_or_a_header_passes_through(resolver: SessionResolver) -> None:
    body = {"model": "m", "input": "next", "previous_response_id": "resp_1"}
    res = resolver.resolve(
        "t", NO_HEADERS, body, from_responses(body), request_id="rq", explicit="a-7", explicit_source="codec"
    )
    assert (res.agent_id, res.source, res.one_shot) == ("a-7", "codec", False)
    resolver.remember(res, reply_from_responses({"output": []}))  # nothing to remember for a decided agent
    assert len(resolver.table) == 0


def test_resolved_identity_replaces_the_one_step_agent() -> None:
    r = make_resolver()
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    ident = extract_identity(NO_HEADERS, body, "t", "rq1")
    assert ident.one_shot and ident.done
    res = chat_step(r, body["messages"])
    inferred = res.identity(ident)
    assert (inferred.agent_id, inferred.task_id, inferred.one_shot, inferred.done) == ("s-1", "s-1", False, False)
    assert res.scoped_id == "t/s-1"
    off = make_resolver(infer="off")
    one = chat_step(off, body["messages"])
    assert (one.source, one.agent_id, one.identity(ident)) == ("one-shot", "req-rq", ident)
