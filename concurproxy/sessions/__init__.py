"""Agents as they are: which agent a step belongs to when the client sends no ``X-Agent-Id`` (issue 20).

Entry point: `SessionResolver.resolve` at step start, `SessionResolver.remember` at a successful
step's end (docs/sessions.md). Pure modules: `conversation` and `replies` (what a step and its
answer say), `fingerprint` (keys of a conversation), `table` (bounded fingerprint → agent map),
`client_ids` (session ids clients already send), `resolver`. The Redis fill-in lives in
`concurproxy.sessions.shared` (import it from there: it needs the event loop). Nothing here has
side effects on import.
"""

from concurproxy.sessions.conversation import Conversation, Message, ToolCall, from_chat, from_messages, from_responses
from concurproxy.sessions.replies import (
    ChatStreamReply,
    MessagesStreamReply,
    reply_from_chat,
    reply_from_messages,
    reply_from_responses,
)
from concurproxy.sessions.resolver import Resolved, SessionResolver

__all__ = [
    "ChatStreamReply",
    "Conversation",
    "Message",
    "MessagesStreamReply",
    "Resolved",
    "SessionResolver",
    "ToolCall",
    "from_chat",
    "from_messages",
    "from_responses",
    "reply_from_chat",
    "reply_from_messages",
    "reply_from_responses",
]
