"""What one locally made model costs on a real vLLM CPU engine: prefill vs decode.

    python -m benchmarks.vllm_model_costs [--size tiny|small|medium|large] [--out DIR]

Makes the model (``make_tiny_model.py``) if ``DIR/model-SIZE`` has none, starts one engine
(12 blocks, pinned to core 0) and sends straight to it, one at a time: a warm-up, prompts of
~240 and ~750 tokens with ``max_tokens: 1`` (prefill time: each prompt is new, so nothing comes
from the prefix cache), then 64 generated tokens at batch 1 and batch 3 (decode time per engine
iteration). Prints the ratio that decides whether admission pays on this model: how many decode
iterations one recompute of a ~750-token (6-block) agent context costs. Wall-clock figures from
one run on a shared machine: compare sizes in the same sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import httpx

from scripts.vllm.engines import REPO, find_vllm_python, make_model_dir, spawn_engines


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.randbytes(3).hex() for _ in range(n))


async def _complete(c: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """Seconds for one non-streamed completion, and its prompt tokens."""
    t = time.monotonic()
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
    r = await c.post(url + "/v1/completions", json=body, timeout=300)
    r.raise_for_status()
    return time.monotonic() - t, int(r.json()["usage"]["prompt_tokens"])


async def measure(url: str) -> tuple[list[tuple[int, float]], dict[int, float]]:
    """(prompt tokens, prefill ms) for two new prompts, and ms per decode iteration by batch size."""
    prefill: list[tuple[int, float]] = []
    decode: dict[int, float] = {}
    async with httpx.AsyncClient() as c:
        await _complete(c, url, _words(50, 0), 4)
        for words in (60, 200):
            dt, tokens = await _complete(c, url, _words(words, words), 1)
            prefill.append((tokens, dt * 1000))
        for batch in (1, 3):
            t = time.monotonic()
            await asyncio.gather(*(_complete(c, url, _words(20, 1000 + 10 * batch + i), 64) for i in range(batch)))
            decode[batch] = (time.monotonic() - t) / 64 * 1000
    return prefill, decode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vllm_model_costs", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("tiny", "small", "medium", "large"), default="medium")
    p.add_argument("--out", type=Path, default=REPO / "results" / "vllm-models")
    a = p.parse_args(argv)
    py = find_vllm_python()
    if py is None:
        print("vLLM is not installed; run: bash scripts/vllm/install.sh", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    model = make_model_dir(py, a.out, a.size)
    with spawn_engines([(model, 12, "0")], log_dir=a.out, python=py, start_timeout_s=600) as engines:
        prefill, decode = asyncio.run(measure(engines[0].url))
    for tokens, ms in prefill:
        print(f"{a.size}: prefill of {tokens} new tokens {ms:.0f} ms ({tokens / ms * 1000:.0f} tok/s)")
    for batch, ms in decode.items():
        print(f"{a.size}: decode at batch {batch}: {ms:.1f} ms per iteration")
    tokens, ms = prefill[-1]
    iteration = sum(decode.values()) / len(decode)
    print(f"{a.size}: one recompute of {tokens} tokens costs {ms / iteration:.0f} decode iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
