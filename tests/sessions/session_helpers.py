"""Helpers of tests/sessions: a virtual clock, a resolver with counted ids, an agent-loop driver."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from multidict import CIMultiDict

from concurproxy.config.identity import IdentityConfig
from concurproxy.sessions import Resolved, SessionResolver, from_chat, reply_from_chat

NO_HEADERS: CIMultiDict[str] = CIMultiDict()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_resolver(clock: Clock | None = None, **config: Any) -> SessionResolver:
    ids = itertools.count(1)
    return SessionResolver(IdentityConfig(**config), clock=clock or Clock(), new_id=lambda: f"s-{next(ids)}")


Step = Callable[..., Resolved]


def chat_step(r: SessionResolver, messages: list[dict[str, Any]], tenant: str = "t", **kw: Any) -> Resolved:
    body = {"model": "m", "messages": messages}
    return r.resolve(tenant, kw.pop("headers", NO_HEADERS), body, from_chat(body), request_id="rq", **kw)


def chat_answer(r: SessionResolver, resolved: Resolved, message: dict[str, Any]) -> None:
    r.remember(resolved, reply_from_chat({"choices": [{"index": 0, "message": message}]}))


def tool_call_reply(call_id: str, name: str = "search", args: str = '{"q": "x"}') -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}],
    }


class ChatAgent:
    """An agent loop as frameworks run it: each step resends the whole history plus the answer."""

    def __init__(self, r: SessionResolver, system: str, task: str, tenant: str = "t") -> None:
        self.r, self.tenant = r, tenant
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": task}]
        self.n = 0

    def step(self, answer: dict[str, Any] | None = None, remember: bool = True) -> Resolved:
        res = chat_step(self.r, list(self.messages), self.tenant)
        self.n += 1
        answer = answer or tool_call_reply(f"call_{id(self)}_{self.n}")
        if remember:
            chat_answer(self.r, res, answer)
        self.messages.append(answer)
        if answer.get("tool_calls"):
            for c in answer["tool_calls"]:
                self.messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"result {self.n}"})
        else:
            self.messages.append({"role": "user", "content": f"go on {self.n}"})
        return res


def agents_of(results: Iterator[Resolved] | list[Resolved]) -> set[str]:
    return {r.agent_id for r in results}
