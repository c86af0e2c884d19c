"""Retries, forks and look-alike agents behave as docs/sessions.md ("Forks, retries, look-alikes") says."""

from __future__ import annotations

from typing import Any

from session_helpers import ChatAgent, chat_answer, chat_step, tool_call_reply

from concurproxy.sessions import SessionResolver

SYSTEM = {"role": "system", "content": "You are a research agent. Use the tools."}


def _tool(call_id: str, out: str = "result") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": out}


def test_a_retried_first_step_before_its_answer_is_remembered_is_the_same_agent(resolver: SessionResolver) -> None:
    messages = [SYSTEM, {"role": "user", "content": "task"}]
    first = chat_step(resolver, messages)  # times out at the client: never remembered
    retry = chat_step(resolver, messages)
    assert (retry.agent_id, retry.source, retry.detail) == (first.agent_id, "chain", "retry")
    chat_answer(resolver, retry, tool_call_reply("c1"))
    nxt = chat_step(resolver, [*messages, tool_call_reply("c1"), _tool("c1")])
    assert (nxt.agent_id, nxt.detail) == (first.agent_id, "reply")
    assert resolver.forks == 0


def test_a_retried_later_step_is_the_same_agent(resolver: SessionResolver) -> None:
    agent = ChatAgent(resolver, "sys", "task")
    for _ in range(3):
        agent.step()
    first = chat_step(resolver, list(agent.messages))
    retry = chat_step(resolver, list(agent.messages))
    assert first.agent_id == retry.agent_id == "s-1"


def test_a_retry_whose_first_attempt_also_completed(resolver: SessionResolver) -> None:
    """Same answer: nothing changes. A different answer: the later answer continues as a child agent."""
    messages = [SYSTEM, {"role": "user", "content": "task"}]
    a = chat_step(resolver, messages)
    chat_answer(resolver, a, tool_call_reply("c1"))
    same = chat_step(resolver, messages)
    chat_answer(resolver, same, tool_call_reply("c1"))
    assert resolver.forks == 0
    other = chat_step(resolver, messages)
    assert other.agent_id == a.agent_id  # the step itself still runs as the agent
    chat_answer(resolver, other, tool_call_reply("c2", args='{"q": "y"}'))
    assert resolver.forks == 1
    from_first = chat_step(resolver, [*messages, tool_call_reply("c1"), _tool("c1")])
    from_second = chat_step(resolver, [*messages, tool_call_reply("c2", args='{"q": "y"}'), _tool("c2")])
    assert from_first.agent_id == "s-1"
    assert from_second.agent_id == "s-2" and from_second.detail == "reply"
    child = next(a for a in resolver.state()["recent"] if a["agent"] == "s-2")
    assert child["parent"] == "s-1"


def test_parallel_branches_of_one_remembered_prefix_stay_one_agent(resolver: SessionResolver) -> None:
    """A framework that runs two branches from one state (two tool results, or a user turn each)."""
    messages = [SYSTEM, {"role": "user", "content": "compare A and B"}]
    root = chat_step(resolver, messages)
    answer = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "ca", "type": "function", "function": {"name": "read", "arguments": '{"f": "A"}'}},
            {"id": "cb", "type": "function", "function": {"name": "read", "arguments": '{"f": "B"}'}},
        ],
    }
    chat_answer(resolver, root, answer)
    left = chat_step(resolver, [*messages, answer, _tool("ca", "A"), _tool("cb", "")])
    right = chat_step(resolver, [*messages, answer, _tool("ca", ""), _tool("cb", "B")])
    assert left.agent_id == right.agent_id == root.agent_id
    chat_answer(resolver, left, tool_call_reply("l1"))
    chat_answer(resolver, right, tool_call_reply("r1"))
    assert resolver.forks == 0  # two different prompts, each answered once: no child
    deeper = chat_step(resolver, [*messages, answer, _tool("ca", ""), _tool("cb", "B"), tool_call_reply("r1")])
    assert deeper.agent_id == root.agent_id


def test_two_agents_with_identical_system_prompts_stay_two(resolver: SessionResolver) -> None:
    a = ChatAgent(resolver, "The same long system prompt.", "Summarise file A.")
    b = ChatAgent(resolver, "The same long system prompt.", "Summarise file B.")
    steps_a, steps_b = [], []
    for _ in range(4):
        steps_a.append(a.step())
        steps_b.append(b.step())
    assert {s.agent_id for s in steps_a} == {"s-1"}
    assert {s.agent_id for s in steps_b} == {"s-2"}


def test_two_agents_with_an_identical_first_step_split_when_their_answers_differ(resolver: SessionResolver) -> None:
    """Indistinguishable while identical (one agent for that step), two agents once they diverge."""
    a = ChatAgent(resolver, "sys", "the same task")
    b = ChatAgent(resolver, "sys", "the same task")
    first_a, first_b = a.step(), b.step()  # different answers (their call ids differ)
    assert first_a.agent_id == first_b.agent_id == "s-1"
    assert first_b.detail == "retry"
    later_a = [a.step() for _ in range(3)]
    later_b = [b.step() for _ in range(3)]
    assert {s.agent_id for s in later_a} == {"s-1"}
    assert {s.agent_id for s in later_b} == {"s-2"}
    assert resolver.forks == 1


def test_agents_identical_in_every_byte_are_one_agent(resolver: SessionResolver) -> None:
    """Documented limit: the same messages and the same answers cannot be told apart."""
    results = []
    for _ in range(2):
        messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": "task"}]
        for n in range(3):
            res = chat_step(resolver, list(messages))
            results.append(res)
            chat_answer(resolver, res, tool_call_reply(f"c{n}"))
            messages += [tool_call_reply(f"c{n}"), _tool(f"c{n}")]
    assert {r.agent_id for r in results} == {"s-1"}
    assert resolver.forks == 0
