"""The normalized view of a prompt, the same for every API: a conversation of turns.

Each API codec reads its own request shape (chat ``messages``, a completions
``prompt``, Responses ``instructions`` + ``input`` items, Messages ``system`` +
``messages`` blocks) into one ``Conversation``: a tuple of ``Turn``s, each a
role, its text, the tool calls it makes and, for a tool result, the call it
answers. The proxy uses it for token estimates and prefix hashing today; agent
identity inference reads the same structure later (who sent what, which tool
results came back).

Why this shape:

* **Immutable and ordered.** Turns are ``NamedTuple``s (cheap to build, hashable),
  so an agent's next step can be compared with its previous one turn by turn.
* **Rendering is per turn.** ``render(turns)`` concatenates one string per turn,
  so a conversation that extends another renders to an extension of its text:
  the prefix property the incremental prefix hasher
  (`concurproxy.routing.prompt_cache`) and the engines' prefix caches rely on.
  A turn renders exactly as `concurproxy.tokens.render_chat` renders a chat
  message (``<role>: text\\n``), so the same conversation hashes alike whichever
  API carried it; a raw completions prompt is one turn without a role and
  renders as itself.
* **Tool calls are data, not text.** They are kept beside the text (id, name,
  arguments) and not rendered, as chat tool calls never were: estimates stay
  comparable across APIs, and identity inference can match a tool result to
  the call it answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class ToolCall(NamedTuple):
    id: str
    name: str
    arguments: str  # JSON text (a Messages ``tool_use.input`` object is serialized)


class Turn(NamedTuple):
    role: str  # as the API names it: system, developer, user, assistant, tool; "" for a raw prompt
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool result: the id of the call it answers


Conversation = tuple[Turn, ...]


def render(turns: Iterable[Turn]) -> str:
    """The canonical prompt text: ``<role>: text\\n`` per turn (a role-less turn: its text alone)."""
    return "".join(f"<{t.role}>: {t.text}\n" if t.role else t.text for t in turns)


def parts_text(content: Any, sep: str = " ") -> str:
    """Text of a content field: a string, or a list of parts whose ``text`` members are joined.

    Parts without text (images, audio, files) contribute nothing: their tokens are the engine's
    to count, and the usage it reports settles the estimate."""
    if content.__class__ is str:
        return content
    if isinstance(content, list):
        return sep.join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)


def text_of(value: Any) -> str:
    """A tool output or argument value as text: strings as they are, anything else as JSON-ish text."""
    if value.__class__ is str:
        return value
    if isinstance(value, list):
        return parts_text(value, "\n")
    return "" if value is None else str(value)
