"""Session stage: the agent of a step that names none, from the ids clients already send or its conversation.

Adapter between the request path and `concurproxy.sessions.SessionResolver` (issue 20). A step
whose client sent no agent id (no ``X-Agent-Id``/``X-Session-Id``, no ``user``/``metadata``) and
that is not a Responses ``previous_response_id`` chain (its codec decided the agent) is given:

* the client's own session id (Claude Code's, OpenCode's, Codex's, vllm-router's ..., the
  ``identity.client_session_ids`` list), namespaced by tenant; else
* the agent whose earlier step this step's history continues (``identity.infer: chain``); else
* a new inferred agent.

The agent is on the response (``x-concurproxy-agent-id``) and, inferred, does not end with the step:
its slot is held across the tool pause and yields once it is dormant (admission's return bound).
At the end of a successful step, the answer the client received is remembered (``remember``) so
the next step's history — prompt + this answer — continues the same agent even when two agents'
prompts were identical. The answer's bytes are kept only for inferred steps (``capture``), and
parsed once, after the stream ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from concurproxy.identity import Identity
from concurproxy.server.api import ApiCodec
from concurproxy.server.sse import data_of
from concurproxy.sessions import SessionResolver
from concurproxy.sessions.replies import (
    ChatStreamReply,
    MessagesStreamReply,
    reply_from_chat,
    reply_from_messages,
    reply_from_responses,
)
from concurproxy.sessions.resolver import Resolved
from concurproxy.sessions.shared import SharedSessions

AGENT_HEADER = "x-concurproxy-agent-id"


class SessionStage:
    def __init__(self, resolver: SessionResolver, shared: SharedSessions | None = None) -> None:
        self.resolver = resolver
        self.shared = shared

    async def resolve(
        self, codec: ApiCodec, body: dict[str, Any], headers: Mapping[str, str], ident: Identity, request_id: str
    ) -> tuple[Identity, Resolved]:
        """The step's identity with its agent (``ident`` as it came when the client named one)."""
        r = self.resolver.resolve(ident.tenant, headers, body, codec.conversation(body), request_id=request_id)
        if r.source == "new" and self.shared is not None:
            r = await self.shared.fill(r)
        return r.identity(ident), r

    def remember(self, codec: ApiCodec, resolved: Resolved, answer: list[bytes], stream: bool) -> None:
        """The answer the client received (its bytes, as relayed), remembered for the agent's next step."""
        if not resolved.inferred or not answer:
            return
        try:
            reply = _reply(codec.name, b"".join(answer), stream)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return  # an answer that does not read: the next step still continues through its prompt
        self.resolver.remember(resolved, reply)


def _reply(api: str, raw: bytes, stream: bool) -> Any:
    if not stream:
        answer = orjson.loads(raw)
        if api == "messages":
            return reply_from_messages(answer)
        if api == "responses":
            return reply_from_responses(answer)
        return reply_from_chat(answer)
    if api == "responses":  # the closing event carries the whole response
        for event in reversed(raw.split(b"\n\n")):
            if b'"response.completed"' in event or b'"response.incomplete"' in event:
                return reply_from_responses(orjson.loads(data_of(event)).get("response") or {})
        return ()
    acc: ChatStreamReply | MessagesStreamReply = MessagesStreamReply() if api == "messages" else ChatStreamReply()
    for event in raw.split(b"\n\n"):
        data = data_of(event)
        if data and data != b"[DONE]":
            acc.feed(orjson.loads(data))
    return acc.reply()
