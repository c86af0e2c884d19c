"""Cost per step of session inference (fingerprints + table), at 1k, 16k and 128k-token contexts.

    python -m benchmarks.session_fingerprint [--sizes 1024,16384,131072] [--reps 31]

An agent loop's step k+1 resends step k's messages plus the answer (a tool call) and the tool
result. Per context size this times, as the request path would call them, the next step of an
agent the resolver already knows (steady state: every repetition does the same work):

* ``adapter``: the chat body → `Message` tuple (``from_chat``; the codecs' view can replace it);
* ``resolve``: `SessionResolver.resolve`: the step's keys (one SHA-1 pass over its text) and the
  table look-ups, ending on a ``chain``/``reply`` hit;
* ``remember``: `SessionResolver.remember`: the answer's key (the prompt is not read again) and
  its table entry;
* ``step``: the three together, the per-step cost on the request path;
* ``naive``: for comparison, what incrementality avoids: hashing the JSON of every message prefix
  (``sha1(orjson.dumps(messages[:k]))`` for each k), quadratic in the conversation's length.

Contexts are sized with the proxy's token estimator (``concurproxy.tokens.count_tokens``), about
four characters per token of English text. Prints medians in microseconds and the hashing rate; a
shared machine is noisy (compare within one run only).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from multidict import CIMultiDict

from concurproxy.config.identity import IdentityConfig
from concurproxy.sessions import SessionResolver, from_chat, reply_from_chat
from concurproxy.tokens import count_tokens

WORDS = (
    "the agent reads file test error value config build module import function return class method "
    "request response token cache replica window latency step tool result output input search query"
).split()
HEADERS: CIMultiDict[str] = CIMultiDict()


def conversation(target_tokens: int, seed: int = 7) -> list[dict[str, Any]]:
    """A system prompt, a task, then tool-call answers and tool results until ``target_tokens``."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": text(min(400, target_tokens // 4))},
        {"role": "user", "content": text(60)},
    ]
    total, n = sum(count_tokens(m["content"]) for m in msgs), 0
    while total < target_tokens:
        n += 1
        args = orjson.dumps({"path": f"src/{rng.choice(WORDS)}.py", "query": text(4)}).decode()
        msgs.append(answer(n, args, text(12)))
        result = text(rng.randint(40, 400))
        msgs.append({"role": "tool", "tool_call_id": f"call_{n}", "content": result})
        total += count_tokens(result) + count_tokens(args) + 16
    return msgs


def answer(n: int, args: str, content: str = "") -> dict[str, Any]:
    call = {"id": f"call_{n}", "type": "function", "function": {"name": "read_file", "arguments": args}}
    return {"role": "assistant", "content": content, "tool_calls": [call]}


def median_us(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def measure(size: int, reps: int) -> dict[str, float]:
    msgs = conversation(size)
    prev = {"model": "m", "messages": msgs[:-2]}  # the step before: without its answer and tool result
    body = {"model": "m", "messages": msgs}
    nxt = answer(10_000, '{"path": "src/next.py"}')
    reply = reply_from_chat({"choices": [{"message": nxt}]})
    r = SessionResolver(IdentityConfig(), clock=time.monotonic)
    first = r.resolve("tenant", HEADERS, prev, from_chat(prev), request_id="0")
    r.remember(first, reply_from_chat({"choices": [{"message": msgs[-2]}]}))
    conv = from_chat(body)
    res = r.resolve("tenant", HEADERS, body, conv, request_id="1")
    assert res.source == "chain" and res.detail == "reply", res

    def step() -> None:
        resolved = r.resolve("tenant", HEADERS, body, from_chat(body), request_id="1")
        r.remember(resolved, reply_from_chat({"choices": [{"message": nxt}]}))

    def naive() -> None:
        for k in range(1, len(msgs) + 1):
            hashlib.sha1(orjson.dumps(msgs[:k]), usedforsecurity=False).digest()

    chars = sum(len(m["content"]) for m in msgs)
    out = {"tokens": float(sum(count_tokens(m["content"]) for m in msgs)), "chars": float(chars)}
    out["messages"] = float(len(msgs))
    out["adapter"] = median_us(lambda: from_chat(body), reps)
    out["resolve"] = median_us(lambda: r.resolve("tenant", HEADERS, body, conv, request_id="1"), reps)
    out["remember"] = median_us(lambda: r.remember(res, reply), reps)
    out["step"] = median_us(step, reps)
    out["naive"] = median_us(naive, max(3, reps // 5))
    out["mb_s"] = chars / out["resolve"]  # bytes per microsecond = MB/s
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1024,16384,131072")
    p.add_argument("--reps", type=int, default=31)
    a = p.parse_args(argv)
    measure(512, 5)  # warm up
    print(
        f"{'tokens':>7} {'msgs':>5} {'chars':>8} {'adapter µs':>11} {'resolve µs':>11} {'remember µs':>12}"
        f" {'step µs':>9} {'naive µs':>10} {'MB/s':>6}"
    )
    for size in (int(s) for s in a.sizes.split(",")):
        r = measure(size, a.reps)
        print(
            f"{r['tokens']:>7.0f} {r['messages']:>5.0f} {r['chars']:>8.0f} {r['adapter']:>11.1f} {r['resolve']:>11.1f}"
            f" {r['remember']:>12.1f} {r['step']:>9.1f} {r['naive']:>10.0f} {r['mb_s']:>6.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
