"""Cost per step of the proxy's prompt tokens with a model tokenizer, at 1k, 16k and 128k-token contexts.

    python -m benchmarks.step_tokens [--sizes 1024,16384,131072] [--reps 15]

An agent loop's step k+1 resends step k's history plus the reply and a tool result (~300
tokens). Per context size this times, as the request path calls it
(``StepTokens.step_tokens``, block keys on, ``block_tokens`` 16):

* ``full``: a one-step agent — render the whole chat with the template, encode it, hash every block;
* ``incremental``: the same step for an agent whose previous step is cached — render, check the
  cached prefix, encode and hash only what follows the resumed cut (the state before the step is
  restored between repetitions, so every repetition does the same work);
* ``render``: the template render alone (part of both);
* ``estimator``: today's fallback for models without a tokenizer (incremental too).

Tokenizer: the tier model's byte-level BPE (``scripts/vllm/make_tiny_model.py``, vocabulary
2048, ChatML template); a production vocabulary (~150k) makes fewer, longer tokens per character.
Prints medians in milliseconds; a shared machine is noisy (compare within one run only).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.tokenizer.model import ModelTokenizer
from concurproxy.tokenizer.step import StepTokens

REPO = Path(__file__).resolve().parents[1]
CHAT = "/v1/chat/completions"


def make_tokenizer(out: Path) -> ModelTokenizer:
    sys.path.insert(0, str(REPO))
    from scripts.vllm.make_tiny_model import write_tokenizer

    write_tokenizer(out, 2048)
    return ModelTokenizer.load(ModelTokensConfig(tokenizer=str(out)))


def conversation(m: ModelTokenizer, target_tokens: int, seed: int = 3) -> list[dict[str, Any]]:
    """An agent loop's messages (a system prompt, a task, then reply + tool result turns) of about
    ``target_tokens`` once rendered: grown by characters at the measured characters per token."""
    rng = random.Random(seed)
    words = (REPO / "scripts" / "vllm" / "corpus.txt").read_text().split()

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    msgs: list[dict[str, Any]] = [{"role": "system", "content": text(20)}, {"role": "user", "content": text(30)}]
    sample = m.chat_text({"messages": [*msgs, {"role": "tool", "content": text(400)}]})
    chars_per_token = len(sample) / len(m.encode(sample))
    while len(m.chat_text({"messages": msgs})) < target_tokens * chars_per_token:
        msgs.append({"role": "assistant", "content": text(10)})
        msgs.append({"role": "tool", "content": text(rng.randint(10, 60))})
    return msgs


def median_ms(fn: Callable[[], object], reps: int, before: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(reps):
        before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def measure(m: ModelTokenizer, size: int, reps: int) -> dict[str, float]:
    msgs = conversation(m, size)
    prev = {"model": "m", "messages": msgs[:-2]}  # the step before: without the last reply and tool result
    body = {"model": "m", "messages": msgs}
    st = StepTokens({"m": m}, 16)
    est = StepTokens({}, 16)
    st.step_tokens("a", "m", prev, CHAT)
    est.step_tokens("a", "m", prev, CHAT)
    saved = copy.copy(st._encoders["m"]._entries), copy.copy(est._estimator._entries)  # type: ignore[union-attr]

    def restore() -> None:
        st._encoders["m"]._entries = copy.copy(saved[0])
        est._estimator._entries = copy.copy(saved[1])  # type: ignore[union-attr]

    n_tokens = st.step_tokens(None, "m", body, CHAT)[0]
    out = {"tokens": float(n_tokens), "chars": float(len(m.chat_text(body)))}
    out["incremental"] = median_ms(lambda: st.step_tokens("a", "m", body, CHAT), reps, restore)
    out["render"] = median_ms(lambda: m.chat_text(body), reps)
    out["estimator"] = median_ms(lambda: est.step_tokens("a", "m", body, CHAT), reps, restore)
    out["full"] = median_ms(lambda: StepTokens({"m": m}, 16).step_tokens(None, "m", body, CHAT), max(3, reps // 3))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1024,16384,131072")
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        m = make_tokenizer(Path(d))
        measure(m, 512, 3)  # warm up (first calls allocate and fill caches)
        print(f"{'context':>9} {'chars':>9} {'full ms':>9} {'incr ms':>9} {'render ms':>10} {'estim ms':>9}")
        for size in (int(s) for s in a.sizes.split(",")):
            r = measure(m, size, a.reps)
            print(
                f"{r['tokens']:>9.0f} {r['chars']:>9.0f} {r['full']:>9.2f} {r['incremental']:>9.2f}"
                f" {r['render']:>10.2f} {r['estimator']:>9.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
