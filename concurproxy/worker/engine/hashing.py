"""Chained block hashes over token ids (prefix-cache keys).

``h_0 = H(ROOT, tokens[0:B])``, ``h_i = H(h_{i-1}, tokens[i*B:(i+1)*B])`` for
each *full* block of ``B`` tokens; a partial last block has no hash. Two
blocks share a hash only if they hold the same tokens *and* the same whole
prefix before them, which is what makes a hit on block ``i`` mean the KV of
all tokens up to ``(i+1)*B`` can be reused.

``H`` is Python's hash of a tuple of ints: deterministic across processes
(``PYTHONHASHSEED`` only randomises str/bytes hashing) and fast.
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT_HASH = 0x636F6E63  # "conc"


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    return hash((parent, *tokens))


def extend_block_hashes(hashes: list[int], token_ids: Sequence[int], block_size: int) -> list[int]:
    """Append the hashes of the full blocks of ``token_ids`` not yet in ``hashes``; return it."""
    n_full = len(token_ids) // block_size
    parent = hashes[-1] if hashes else ROOT_HASH
    for i in range(len(hashes), n_full):
        parent = block_hash(parent, token_ids[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
    return hashes


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    return extend_block_hashes([], token_ids, block_size)
