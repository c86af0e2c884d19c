"""Per-agent incremental encoding: a step pays for the text it added, not for its whole history.

An agent's step ``k+1`` renders to its step ``k`` text plus a reply and new turns, so encoding
the whole render every step (~300 ms at 128k tokens with a byte-level BPE) is wasted work. The
cache keeps, per agent, a few *cuts* of the previous text and resumes from the newest one the
new text still shares, encoding only what follows it.

*Where a cut is exact.* A cut is the start ``a`` of an added token that is matched on the raw
text (``normalized=False``) and strips nothing around itself (no ``lstrip``/``rstrip``/
``single_word``): chat templates' role markers (``<|im_start|>``, ``<|start_header_id|>``, …),
where the text holds that token's content (a byte-fallback model can emit an added token's id
for other text: not a cut).
The ``tokenizers`` library splits a text at its added tokens first and normalizes, pre-tokenizes
and BPE-merges every piece between them on its own, so no merge crosses such a token. If a new
text equals the old one on ``[0, a + m)`` with ``m`` at least the longest added token, the
leftmost-longest matcher finds the same added tokens before ``a`` and the same one at ``a``, so
``ids(new) = ids(old)[:j] + encode(new[a:])`` where ``j`` is that token's index. The suffix
starts with the added token at offset 0, so position-dependent steps (Metaspace's
``prepend_scheme: first``) still see the following piece as not first. Hypothesis-tested
against full encoding on byte-level, Metaspace and normalizing tokenizers.

*Checking the prefix* without keeping the text: a cut stores ``hash(text[:a + m])`` (Python's
string hash: SipHash, 64 bits, keyed per process, so an entry never outlives its process); the
new text resumes from the newest cut whose prefix hashes the same. Cuts are tried newest first
(at most ``max_cuts`` hashes), and each step adds its last ``cuts_per_step`` cut tokens, so a
template that re-renders the last turn (e.g. moves its tool list) falls back a few turns, not to
zero. Nothing matches: the text is encoded whole (always correct, just slower).

*Block keys* (for prefix routing) are continued the same way: a cut stores how many full
``block_tokens`` blocks precede it and the ids after the last one; the entry keeps its agent's
keys. Memory per agent: the keys (≈ 40 bytes per block) and ``max_cuts`` small tuples; at most
``max_agents`` agents (LRU). Pure and single-threaded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from concurproxy.routing.prefix import hash_tokens

Encode = Callable[[str], tuple[list[int], Callable[[int], tuple[int, int]]]]
"""text → (ids, token index → (char start, char end)): ``tokenizers.Encoding``'s ids and token_to_chars."""


@dataclass(frozen=True, slots=True)
class _Cut:
    end: int  # chars checked: text[:end] must hash to ``digest``
    digest: int
    start: int  # char position of the cut token (the resumed encoding starts here)
    n: int  # tokens before it (the fixed prefix ``pre`` included)
    head: tuple[int, ...]  # the n % block_tokens ids after the last full block before it


@dataclass(frozen=True, slots=True)
class _Entry:
    pre: tuple[int, ...]
    cuts: tuple[_Cut, ...]  # oldest first
    keys: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Encoded:
    n_tokens: int
    keys: tuple[int, ...] | None  # None without block_tokens
    reused_tokens: int  # tokens taken from the cache instead of encoded


class IncrementalEncoder:
    def __init__(
        self,
        encode: Encode,
        cut_tokens: Mapping[int, str],
        margin: int,
        block_tokens: int | None,
        *,
        max_agents: int = 4096,
        max_cuts: int = 8,
        cuts_per_step: int = 4,
    ) -> None:
        if (block_tokens is not None and block_tokens < 1) or max_agents < 1 or max_cuts < 1:
            raise ValueError("block_tokens, max_agents and max_cuts must be >= 1")
        self._encode = encode
        self.cut_tokens = dict(cut_tokens)
        self.margin = margin
        self.block_tokens = block_tokens
        self.max_agents = max_agents
        self.max_cuts = max_cuts
        self.cuts_per_step = cuts_per_step
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def encode(self, agent_id: str | None, text: str, pre: Sequence[int] = (), post: Sequence[int] = ()) -> Encoded:
        """Count (and hash) ``pre + encode(text) + post``; ``agent_id=None`` computes without caching."""
        pre = tuple(pre)
        entry = self._entries.get(agent_id) if agent_id is not None else None
        base: _Cut | None = None
        kept: tuple[_Cut, ...] = ()
        if entry is not None and entry.pre == pre:
            n_text = len(text)
            for i in range(len(entry.cuts) - 1, -1, -1):
                c = entry.cuts[i]
                if c.end <= n_text and hash(text[: c.end]) == c.digest:
                    base, kept = c, entry.cuts[: i + 1]
                    break
        if base is not None:
            start, base_n, head = base.start, base.n, base.head
            ids, chars = self._encode(text[start:])
        else:
            start, base_n, head = 0, len(pre), pre
            ids, chars = self._encode(text)
        n_tokens = base_n + len(ids) + len(post)
        bt = self.block_tokens
        keys: tuple[int, ...] | None = None
        first = base_n - len(head)  # absolute index of toks[0]: a block boundary
        toks: list[int] = [*head, *ids, *post] if head or post else ids
        if bt is not None:
            base_keys = entry.keys[: first // bt] if base is not None and entry is not None else ()
            keys = base_keys
            if len(toks) >= bt:
                keys = base_keys + tuple(hash_tokens(toks, bt, base_keys[-1] if base_keys else None))
        if agent_id is not None:
            self._remember(agent_id, text, pre, kept, start, base_n, ids, chars, toks, first, keys)
        return Encoded(n_tokens, keys, base_n - len(pre))

    def _remember(
        self,
        agent_id: str,
        text: str,
        pre: tuple[int, ...],
        kept: tuple[_Cut, ...],
        start: int,
        base_n: int,
        ids: list[int],
        chars: Callable[[int], tuple[int, int]],
        toks: list[int],
        first: int,
        keys: tuple[int, ...] | None,
    ) -> None:
        bt, cut_tokens, limit = self.block_tokens, self.cut_tokens, len(text) - self.margin
        new: list[_Cut] = []
        for i in range(len(ids) - 1, 0 if kept else -1, -1):  # the last few cut tokens of the new text
            content = cut_tokens.get(ids[i])
            if content is None:
                continue  # (index 0 after a resumed cut is that cut itself: kept already)
            s, e = chars(i)
            a = start + s
            if a > limit or text[a : start + e] != content:
                # too close to the end to prove the next text matches there; or the model's own token
                # with an added token's id (byte fallback), which the added-token matcher did not split at
                continue
            n = base_n + i
            head = tuple(toks[n - n % bt - first : n - first]) if bt is not None else ()
            new.append(_Cut(a + self.margin, hash(text[: a + self.margin]), a, n, head))
            if len(new) >= self.cuts_per_step:
                break
        cuts = (kept + tuple(reversed(new)))[-self.max_cuts :]
        if not cuts:
            self._entries.pop(agent_id, None)
            return
        self._entries[agent_id] = _Entry(pre, cuts, keys or ())
        self._entries.move_to_end(agent_id)
        while len(self._entries) > self.max_agents:
            self._entries.popitem(last=False)

    def forget(self, agent_id: str) -> None:
        self._entries.pop(agent_id, None)

    def __len__(self) -> int:
        return len(self._entries)
