"""The incremental encoder equals encoding the whole text, on every kind of tokenizer, whatever the texts do."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokdirs import WORDS

from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.routing.prefix import hash_tokens
from concurproxy.tokenizer.incremental import IncrementalEncoder
from concurproxy.tokenizer.model import ModelTokenizer
from concurproxy.tokenizer.step import _encode_fn

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "[INST]", "[/INST]", "<s>", "</s>", "<mask>", "cache"]
# Words, bits of words (so a later piece can glue onto them), whitespace, specials mid-text.
piece = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(SPECIALS),
    st.sampled_from([" ", "\n", "  ", "\t", "hel", "lo", "ü", "ber", "<|im", "_start|>", "[IN", "ST]"]),
    st.text(alphabet="abcé日🙂 <>|_[]/\n", max_size=6),
)
chunk = st.lists(piece, max_size=10).map("".join)
# a step: keep the previous text (or all but its last few characters) and append a chunk
step = st.tuples(st.integers(0, 3), chunk)


def load(path: Path) -> ModelTokenizer:
    return ModelTokenizer.load(ModelTokensConfig(tokenizer=str(path)))


def full(m: ModelTokenizer, text: str, bt: int | None, pre: tuple[int, ...] = ()) -> tuple[int, tuple[int, ...] | None]:
    ids = [*pre, *m.encode(text)]
    return len(ids), (tuple(hash_tokens(ids, bt)) if bt else None)


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace", "prepend"])
@settings(max_examples=150, deadline=None)
@given(base=chunk, steps=st.lists(step, max_size=6), bt=st.sampled_from([None, 1, 3, 16]), pre=st.booleans())
def test_incremental_equals_full(
    tokenizer_dirs: dict[str, Path], kind: str, base: str, steps: list[tuple[int, str]], bt: int | None, pre: bool
) -> None:
    m = load(tokenizer_dirs[kind])
    enc = IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, bt, max_cuts=3, cuts_per_step=2)
    bos = (7,) if pre else ()
    text = base
    for drop, more in [*steps, (0, "")]:
        text = text[: len(text) - drop] + more
        got = enc.encode("agent", text, bos)
        assert (got.n_tokens, got.keys) == full(m, text, bt, bos), repr(text)


CHAT_STEPS = [
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n",
    "<|im_start|>assistant\n<tool_call>get_weather</tool_call><|im_end|>\n",
    "<|im_start|>user\n<tool_response>21 °C</tool_response><|im_end|>\n",
    "<|im_start|>assistant\nIt is 21 °C in Paris 🙂<|im_end|>\n",
]


@pytest.mark.parametrize("kind", ["bytelevel", "prepend"])
def test_an_agent_loop_resumes_from_the_previous_step(tokenizer_dirs: dict[str, Path], kind: str) -> None:
    m = load(tokenizer_dirs[kind])
    enc = IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, 16)
    history, reused = "", []
    for turn in CHAT_STEPS:
        history += turn
        text = history + "<|im_start|>assistant\n"  # the generation prompt, replaced by the reply next step
        got = enc.encode("a", text)
        assert (got.n_tokens, got.keys) == full(m, text, 16)
        reused.append(got.reused_tokens)
    assert reused[0] == 0 and all(r > 0 for r in reused[1:])  # later steps encode only what they added
    # the step before the last: the whole previous prompt but its generation prompt came from the cache
    assert reused[-1] == len(m.encode(history[: -len(CHAT_STEPS[-1])]))


def test_a_merge_across_the_previous_end_is_handled(tokenizer_dirs: dict[str, Path]) -> None:
    """Appending glues onto the previous text's last word: splicing at the old end would be wrong."""
    m = load(tokenizer_dirs["bytelevel"])
    old = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhel"
    new = old + "lo world"
    naive = m.encode(old) + m.encode(new[len(old) :])
    assert naive != m.encode(new)  # "hel" + "lo" is one token in the full encoding
    enc = IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, 4)
    enc.encode("a", old + "<|im_end|>\n" + "x" * 20)  # cuts at the <|im_start|> and <|im_end|> tokens
    got = enc.encode("a", new)
    assert got.n_tokens == len(m.encode(new))
    assert got.reused_tokens == len(m.encode("<|im_start|>user\nhi<|im_end|>\n"))  # resumed before the merge


def test_an_edited_history_falls_back_to_an_older_cut_or_to_zero(tokenizer_dirs: dict[str, Path]) -> None:
    m = load(tokenizer_dirs["bytelevel"])
    enc = IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, 16)
    a = "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nsecond<|im_end|>\n" * 3
    enc.encode("a", a)
    edited = a.replace("second", "SECOND", 1)  # the client rewrote an early turn
    got = enc.encode("a", edited)
    assert (got.n_tokens, got.keys) == full(m, edited, 16)
    assert got.reused_tokens == 0


def test_lstrip_and_normalized_added_tokens_are_never_cut_points(tokenizer_dirs: dict[str, Path]) -> None:
    m = load(tokenizer_dirs["metaspace"])
    vocab = m.tokenizer.get_vocab()
    assert vocab["<mask>"] not in m.cut_tokens and vocab["cache"] not in m.cut_tokens
    assert vocab["[INST]"] in m.cut_tokens


def test_agents_are_bounded_and_forgotten(tokenizer_dirs: dict[str, Path]) -> None:
    m = load(tokenizer_dirs["bytelevel"])
    enc = IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, 16, max_agents=2)
    for agent in "abc":
        enc.encode(agent, CHAT_STEPS[0] + "<|im_start|>assistant\n")
    assert len(enc) == 2
    enc.forget("c")
    assert len(enc) == 1
    assert enc.encode(None, CHAT_STEPS[0]).n_tokens == len(m.encode(CHAT_STEPS[0]))
    assert len(enc) == 1  # a one-step agent leaves nothing behind
