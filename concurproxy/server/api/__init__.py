"""API codecs: what the one step pipeline needs to know about each generation API.

``CODECS`` lists one codec per admitted route; every other route passes
through (`concurproxy.server.passthrough`). See `base.ApiCodec` for the
members, ``docs/api.md`` for the routes.
"""

from concurproxy.server.api.base import ApiCodec
from concurproxy.server.api.chat import ChatCodec, CompletionsCodec
from concurproxy.server.api.conversation import Conversation, ToolCall, Turn, render
from concurproxy.server.api.messages import MessagesCodec
from concurproxy.server.api.responses import ResponsesCodec
from concurproxy.server.api.shapes import ANTHROPIC, OPENAI, ErrorShape, shape_for_path
from concurproxy.server.api.usage import Usage

CHAT = ChatCodec()
COMPLETIONS = CompletionsCodec()
RESPONSES = ResponsesCodec()
MESSAGES = MessagesCodec()
CODECS: tuple[ApiCodec, ...] = (CHAT, COMPLETIONS, RESPONSES, MESSAGES)

__all__ = [
    "ANTHROPIC",
    "CHAT",
    "CODECS",
    "COMPLETIONS",
    "MESSAGES",
    "OPENAI",
    "RESPONSES",
    "ApiCodec",
    "Conversation",
    "ErrorShape",
    "ToolCall",
    "Turn",
    "Usage",
    "render",
    "shape_for_path",
]
