"""Chained prefix block hashes of a prompt.

Formula (stable across processes, machines and languages)::

    key_0 = H(ROOT || tok[0:B])          ROOT = 8 zero bytes
    key_i = H(le64(key_{i-1}) || tok[i*B:(i+1)*B])
    H(x)  = int.from_bytes(blake2b(x, digest_size=8).digest(), "little")

where tokens are packed as little-endian uint32 and ``B`` is ``block_tokens``. Only full
blocks are hashed (an engine caches only full blocks). Because each key covers its parent,
equal ``key_i`` means the whole prefix ``tok[0:(i+1)*B]`` is equal, so a replica's match is
the longest run of leading keys it holds.

Tokens come from :mod:`concurproxy.tokens` (the proxy's estimator and the bundled worker's
tokenizer), so the router's keys equal the keys that :mod:`concurproxy.kvevents` recomputes
from the ``token_ids`` the engine publishes. Cost, measured on the dev box: ~0.6 µs per
block (150 µs for a 4096-token prompt); tokenizing the text costs ~5× more than hashing.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from concurproxy.tokens import prompt_text, tokenize

ROOT = bytes(8)
_MASK32 = 0xFFFFFFFF


def _pack(tokens: Sequence[int]) -> bytes:
    try:
        arr = array("I", tokens)
    except OverflowError:  # ids outside uint32 (negative or huge): fold them, stay deterministic
        arr = array("I", (t & _MASK32 for t in tokens))
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


def hash_tokens(tokens: Sequence[int], block_tokens: int, parent: int | None = None) -> list[int]:
    """Chained keys of the full blocks of ``tokens``; ``parent`` continues an existing chain."""
    if block_tokens < 1:
        raise ValueError("block_tokens must be >= 1")
    n_blocks = len(tokens) // block_tokens
    if n_blocks == 0:
        return []
    buf = _pack(tokens[: n_blocks * block_tokens])
    step = block_tokens * 4
    prev = ROOT if parent is None else (parent & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    blake2b = hashlib.blake2b
    digests: list[bytes] = []
    append = digests.append
    for start in range(0, n_blocks * step, step):
        prev = blake2b(prev + buf[start : start + step], digest_size=8).digest()
        append(prev)
    from_bytes = int.from_bytes
    return [from_bytes(d, "little") for d in digests]


def hash_text(text: str, block_tokens: int) -> list[int]:
    """Keys of a canonical prompt text (tokenized with :func:`concurproxy.tokens.tokenize`)."""
    return hash_tokens(tokenize(text), block_tokens)


def hash_body(body: Mapping[str, Any], block_tokens: int) -> list[int]:
    """Keys of an OpenAI chat/completions request body's canonical prompt."""
    return hash_text(prompt_text(body), block_tokens)
