"""Deterministic prompt text where one word is exactly one token.

``words(key, n)`` returns ``n`` words of 6 hex characters, each with a leading
space. Under ``concurproxy.tokens`` (a token is a run of at most 8 non-space
characters with its leading whitespace) every such word is one token, so a
prompt built from them has a known size. The text depends only on ``key``
(seeded from it with ``random.Random(str)``, which is stable across processes
and independent of PYTHONHASHSEED), so the same key always gives the same
text: shared prefixes are byte-identical, which is what prefix caches need.

Against a real engine the words are ~2-4 BPE tokens each; sizes are then
approximate and the engine's reported usage is what the results record.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Message = tuple[str, str]  # (chat role, content)

_WORD_HEX = 6


def words(key: str, n: int) -> str:
    """``n`` deterministic one-token words (each ``" xxxxxx"``) derived from ``key``."""
    if n <= 0:
        return ""
    h = random.Random(key).randbytes(n * _WORD_HEX // 2).hex()
    return "".join([" " + h[i : i + _WORD_HEX] for i in range(0, n * _WORD_HEX, _WORD_HEX)])


def message_tokens(role: str, n_words: int) -> int:
    """Tokens of one ``<role>: content\\n`` line of ``concurproxy.tokens.render_chat``
    whose content is ``n_words`` words from :func:`words` (the marker is cut every 8 chars)."""
    return n_words + math.ceil((len(role) + 3) / 8)


def chat_tokens(messages: Sequence[tuple[str, int]]) -> int:
    """Exact token count of a rendered chat of (role, n_words) messages (+1 for the final newline)."""
    if not messages:
        return 0
    return sum(message_tokens(r, n) for r, n in messages) + 1
