"""Incremental prompt hashing equals the full computation, and only re-tokenizes new text."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.routing.prefix import hash_tokens
from concurproxy.routing.prompt_cache import IncrementalPrefixHasher, stable_cut
from concurproxy.tokens import render_chat, synth_text, tokenize

WS = [" ", "\n", "\t", "\u00a0", "\u2003", "\x1c", "\r\n"]
chunk = st.lists(
    st.one_of(st.sampled_from(WS), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789é<>:", max_size=20)),
    max_size=12,
).map("".join)


def full(text: str, bt: int) -> tuple[tuple[int, ...], int]:
    toks = tokenize(text)
    return tuple(hash_tokens(toks, bt)), len(toks)


@settings(max_examples=300, deadline=None)
@given(
    base=chunk,
    steps=st.lists(st.tuples(st.booleans(), chunk, st.integers(0, 30)), max_size=6),
    bt=st.sampled_from([1, 2, 4, 16]),
)
def test_incremental_equals_full(base: str, steps: list[tuple[bool, str, int]], bt: int) -> None:
    h = IncrementalPrefixHasher(bt)
    text = base
    for append, piece, cut in [*steps, (True, "", 0)]:
        # mostly extend the previous text; sometimes truncate and diverge
        text = text + piece if append else text[: max(0, len(text) - cut)] + piece
        got = h.hashes("agent", text)
        assert (got.keys, got.n_tokens) == full(text, bt)


def _stable_cut_by_scan(text: str) -> int:
    """The start of the whitespace run before the last word (0 if none), scanning from the end."""
    i = len(text) - 1
    while i >= 0 and text[i].isspace():  # trailing whitespace run
        i -= 1
    while i >= 0 and not text[i].isspace():  # the last word
        i -= 1
    if i < 0:
        return 0
    while i > 0 and text[i - 1].isspace():  # to the start of that whitespace run
        i -= 1
    return i


@settings(max_examples=500, deadline=None)
@given(text=chunk)
def test_stable_cut_equals_the_scan_from_the_end(text: str) -> None:
    assert stable_cut(text) == _stable_cut_by_scan(text)


def test_repeated_prompt_keeps_its_entry() -> None:
    h = IncrementalPrefixHasher(4)
    text = render_chat([{"role": "user", "content": synth_text(30)}])
    first = h.hashes("a", text)
    again = h.hashes("a", text)
    assert again == h.hashes("a", text) and again.reused_tokens > 0
    assert (again.keys, again.n_tokens) == (first.keys, first.n_tokens) == full(text, 4)
    assert h.prompt("a", text) == (again.n_tokens, again.keys, again.reused_tokens)


def test_stable_cut() -> None:
    assert stable_cut("") == 0
    assert stable_cut("word") == 0
    assert stable_cut("foo bar") == 3
    assert stable_cut("foo   bar\n") == 3
    assert stable_cut("a b  ") == 1


def test_growing_chat_reuses_the_history_and_stays_exact() -> None:
    h = IncrementalPrefixHasher(16)
    msgs = [{"role": "system", "content": synth_text(500)}]
    reused = []
    for step in range(6):
        msgs.append({"role": "user", "content": synth_text(200, seed=step)})
        text = render_chat(msgs)
        got = h.hashes("a1", text)
        assert (got.keys, got.n_tokens) == full(text, 16)
        reused.append(got.reused_tokens)
        msgs.append({"role": "assistant", "content": synth_text(50, seed=100 + step)})
    assert reused[0] == 0 and all(r > 400 for r in reused[1:])
    other = h.hashes("a1", "something else entirely")  # not an extension: recomputed
    assert other.reused_tokens == 0 and (other.keys, other.n_tokens) == full("something else entirely", 16)


def test_bounded_and_anonymous() -> None:
    h = IncrementalPrefixHasher(16, max_agents=3)
    for i in range(10):
        h.hashes(f"a{i}", synth_text(40, seed=i))
    assert len(h) == 3
    h.hashes(None, synth_text(40))
    assert len(h) == 3
    h.forget("a9")
    assert len(h) == 2


def test_incremental_step_is_much_cheaper_than_a_full_one() -> None:
    texts = [synth_text(4096)]
    for k in range(1, 11):
        texts.append(texts[-1] + synth_text(256, seed=k))

    def incremental() -> float:
        h = IncrementalPrefixHasher(16)
        h.hashes("a", texts[0])
        t0 = time.perf_counter()
        for t in texts[1:]:
            h.hashes("a", t)
        return time.perf_counter() - t0

    def fresh() -> float:
        t0 = time.perf_counter()
        for t in texts[1:]:
            hash_tokens(tokenize(t), 16)
        return time.perf_counter() - t0

    # best of 3 against a shared, noisy box; measured ~10x cheaper
    assert min(incremental() for _ in range(3)) < min(fresh() for _ in range(3)) / 2
