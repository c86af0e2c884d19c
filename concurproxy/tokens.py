"""Deterministic tokenizer shared by the bundled worker and the proxy's estimator.

The worker uses it as its real tokenizer; the proxy uses it to *estimate* prompt
size before a step (for budgets and the admission-time KV footprint) without an
extra upstream call. Against a real engine the count is an estimate that is
settled later from the usage the engine reports.

Rule: a token is a run of non-space characters with its leading whitespace,
and runs longer than ``MAX_PIECE`` characters are split every ``MAX_PIECE``
characters. That makes "w w w ..." exactly one token per word, which is what
the load generator relies on to build prompts of a given length, and it keeps
prefixes stable: extending a text never changes the ids of its earlier tokens
(except the last piece when it was cut mid-word).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_PIECE = 8
# Per-message overhead of the chat rendering below, in tokens (role marker + newline).
_PIECE_RE = re.compile(rf"\s*\S{{1,{MAX_PIECE}}}|\s+$")


def pieces(text: str) -> list[str]:
    """Split text into token pieces (see the module rule)."""
    return _PIECE_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(_PIECE_RE.findall(text))


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


def tokenize(text: str) -> list[int]:
    crc32 = zlib.crc32  # token_id, inlined: one call per token less
    return [crc32(p.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF for p in _PIECE_RE.findall(text)]


def _content_text(content: Any) -> str:
    """OpenAI message content: a string or a list of parts ({"type":"text","text":...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
        return " ".join(out)
    return str(content)


def render_chat(messages: Iterable[Any]) -> str:
    """Canonical prompt text of a chat: one ``<role>: content`` line per message.

    Both the worker (to tokenize) and the router (to hash prefixes) use this,
    so the same conversation always yields the same tokens and prefix hashes.
    """
    lines = []
    for m in messages:
        # plain dicts (parsed JSON) skip the ABC check; string content skips the helper
        if m.__class__ is not dict and not isinstance(m, Mapping):
            continue
        content = m.get("content")
        if content.__class__ is not str:
            content = _content_text(content)
        lines.append(f"<{m.get('role', 'user')}>: {content}\n")
    return "".join(lines)


def prompt_text(body: Mapping[str, Any]) -> str:
    """The canonical prompt of a /v1/chat/completions or /v1/completions body."""
    messages = body.get("messages")
    if messages.__class__ is list or (isinstance(messages, Sequence) and not isinstance(messages, str | bytes)):
        return render_chat(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "".join(prompt)
    return ""


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    return count_tokens(prompt_text(body))


def synth_text(n_tokens: int, seed: int = 0) -> str:
    """Deterministic text of exactly ``n_tokens`` tokens (used for generated output)."""
    words = ("lorem", "ipsum", "dolor", "sit", "amet", "agent", "cache", "token", "block", "step")
    return "".join(" " + words[(seed + i * 7) % len(words)] for i in range(n_tokens))
