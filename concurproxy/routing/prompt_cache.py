"""Per-agent incremental prompt hashing: pay only for the text a step adds.

An agent's step ``k+1`` prompt is its step ``k`` prompt plus new messages, so re-tokenizing
the whole history every step (~1.3 ms for 4096 tokens) is wasted work. This cache keeps, per
agent, a *stable cut* of the previous text and resumes from it:

* A position ``b`` is a token boundary that no appended text can move when ``text[b]`` is
  whitespace and ``text[b-1]`` is not (:mod:`concurproxy.tokens` pieces are
  ``\\s*\\S{1,8}``: a piece never spans a non-space→space transition, and leading
  whitespace belongs to the following piece). The cut is the last such position.
* The entry stores ``hash(text[:b])`` (Python's string hash: SipHash-1-3, 64 bits, keyed per
  process, so an entry never outlives the process that made it), the token count before
  ``b``, the chained keys of the full blocks before ``b`` and the (< ``block_tokens``) tokens
  after them. The next text resumes iff its first ``b`` characters hash the same and
  ``text[b]`` is whitespace (or the text ends there); else it is hashed from scratch.

Result: exactly ``hash_tokens(tokenize(text), block_tokens)`` and ``len(tokenize(text))``
(tested by a hypothesis property against the full computation). Per step the cost is one
string hash of the old prefix (~8 µs per 20 kB, 7x cheaper than a blake2b of its UTF-8), one
of the new cut's prefix when the cut moved, plus tokenizing and hashing only the new text.
Memory: at most ``max_agents`` entries (LRU), each holding its agent's block keys
(≈ 40 bytes per block: ~10 kB for a 4096-token prompt). Pure; not thread-safe.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from concurproxy.routing.prefix import hash_tokens
from concurproxy.tokens import count_tokens, tokenize


@dataclass(frozen=True, slots=True)
class PromptHashes:
    keys: tuple[int, ...]  # chained block keys of the full blocks
    n_tokens: int  # len(tokenize(text)): usable as the prompt-size estimate
    reused_tokens: int = 0  # tokens taken from the cache instead of re-tokenized


# One agent's entry, a plain tuple (built once per step on the request path):
# (stable cut b in characters, hash(text[:b]), tokens before b,
#  keys of the n_tokens // B full blocks before b, tokens between the last full block and b)
_Entry = tuple[int, int, int, tuple[int, ...], tuple[int, ...]]


def stable_cut(text: str) -> int:
    """The start of the whitespace run before the last word (0 if none): the last position ``b``
    with ``text[b]`` whitespace and ``text[b-1]`` not, not counting trailing whitespace."""
    # rsplit(None, 1) splits at the last whitespace run before the last word; its head ends
    # right before that run (str.isspace and str.split agree on what whitespace is).
    parts = text.rstrip().rsplit(None, 1)
    return len(parts[0]) if len(parts) == 2 else 0


class IncrementalPrefixHasher:
    def __init__(self, block_tokens: int, max_agents: int = 4096) -> None:
        if block_tokens < 1 or max_agents < 1:
            raise ValueError("block_tokens and max_agents must be >= 1")
        self.block_tokens = block_tokens
        self.max_agents = max_agents
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def hashes(self, agent_id: str | None, text: str) -> PromptHashes:
        """Keys and token count of ``text``; ``agent_id=None`` computes without caching."""
        n_tokens, keys, reused = self.prompt(agent_id, text)
        return PromptHashes(keys=keys, n_tokens=n_tokens, reused_tokens=reused)

    def prompt(self, agent_id: str | None, text: str) -> tuple[int, tuple[int, ...], int]:
        """``(token count, keys, reused tokens)`` of ``text`` (the request path's form of :meth:`hashes`)."""
        bt = self.block_tokens
        entries = self._entries
        e = entries.get(agent_id) if agent_id is not None else None
        if e is not None:
            b = e[0]
            n = len(text)
            # resumes iff text[b] is whitespace (or the text ends at b) and text[:b] is unchanged
            if not ((n == b or (n > b and text[b].isspace())) and hash(text[:b]) == e[1]):
                e = None
        if e is not None:
            start, _, base_n, base_keys, head = e
            rest = text[start:] if start else text
        else:
            start, base_n, base_keys, head = 0, 0, (), ()
            rest = text
        new = tokenize(rest)
        toks = [*head, *new] if head else new  # tokens from block len(base_keys) onwards
        keys = base_keys
        if len(toks) >= bt:
            keys = base_keys + tuple(hash_tokens(toks, bt, parent=base_keys[-1] if base_keys else None))
        n_tokens = base_n + len(new)
        if agent_id is None:
            return n_tokens, keys, base_n
        cut = start + stable_cut(rest)  # rest starts at a boundary (whitespace after a word) or at 0
        if e is not None and cut == start:
            entries.move_to_end(agent_id)  # nothing new became stable: the entry stays as it is
            return n_tokens, keys, base_n
        n_stable = n_tokens - count_tokens(text[cut:])  # a piece ends at every stable cut
        k = n_stable // bt
        first = len(base_keys) * bt  # token index of toks[0]
        entries[agent_id] = (
            cut,
            hash(text[:cut]),
            n_stable,
            keys[:k] if k != len(keys) else keys,
            tuple(toks[k * bt - first : n_stable - first]),
        )
        entries.move_to_end(agent_id)
        while len(entries) > self.max_agents:
            entries.popitem(last=False)
        return n_tokens, keys, base_n

    def forget(self, agent_id: str) -> None:
        self._entries.pop(agent_id, None)

    def __len__(self) -> int:
        return len(self._entries)
