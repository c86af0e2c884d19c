"""With the model's tokenizer configured, the proxy's token ids are vLLM's, and its exact prefix index sees
what the engine's prefix cache hits.

The tier's ``tiny`` engine (conftest: its byte-level BPE, the tool-calling ChatML template written into
its ``tokenizer_config.json``, 12 KV blocks of 128 tokens, KV cache events on a ZMQ publisher,
per-request cached tokens in ``usage.prompt_tokens_details`` and request-supplied chat templates
allowed, so several templates are compared against one engine).

* ids: for every conversation (system prompts, multi-turn, tool calls and results, parallel calls,
  unicode, content parts, a developer message) and every template (the model's own, the tool
  template, one that iterates content parts), ``ModelTokenizer.chat_ids`` equals ``POST /tokenize``.
* prefixes: 3 agents × 3 growing steps (a shared system prompt, tools, tool calls; ~460 → ~740
  tokens, under the engine's 1024) through the proxy, one at a time, each step sent once the exact
  index holds the previous one's prompt; per step the exact index's match (``matched_blocks ×
  block_tokens``) and the engine's ``cached_tokens`` are recorded. Asserted: every step's prompt
  token count equals the engine's ``prompt_tokens``, every match is within one engine block (128
  tokens) of the engine's hit (the engine evicts in its 12 blocks; the index follows its removal
  events), and the totals are printed.
  The same loop with the proxy's estimator instead (no ``models`` entry) matches nothing in the exact
  index while the engine hits: what the proxy saw before it could use the model's tokenizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_cases import CONVERSATIONS, OPENAI_TEMPLATE, TOOLS, agent_step

from concurproxy.config import load_policy
from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.routing.prefix import hash_tokens
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.hooks import StepContext
from concurproxy.tokenizer.model import ModelTokenizer
from scripts.vllm.engines import Engine

ENGINE_BLOCK = 128  # the CPU build's KV block size
BLOCK_TOKENS = 16
STEPS = 3


@pytest.fixture
def model_dir(tiny_model: Path) -> Path:
    return tiny_model


@pytest.fixture
def kv_engine(engine: Engine, kv_events: dict[str, str]) -> tuple[Engine, dict[str, str]]:
    return engine, kv_events


def _load(model_dir: Path, template: str | None) -> ModelTokenizer:
    return ModelTokenizer.load(ModelTokensConfig(tokenizer=str(model_dir), chat_template=template))


def test_chat_token_ids_equal_vllm_tokenize(kv_engine: tuple[Engine, dict[str, str]], model_dir: Path) -> None:
    engine, _ = kv_engine
    (model_dir / "openai.jinja").write_text(OPENAI_TEMPLATE)
    variants = {"tool (the model's)": None, "chatml": model_dir / "chatml.jinja", "parts": model_dir / "openai.jinja"}
    checked = 0
    with httpx.Client(base_url=engine.url, timeout=60) as client:
        for label, path in variants.items():
            ours = _load(model_dir, str(path) if path else None)
            for name, body in CONVERSATIONS.items():
                req: dict[str, Any] = {"model": "tiny", **body}
                if path is not None:
                    req["chat_template"] = path.read_text()
                r = client.post("/tokenize", json=req)
                assert r.status_code == 200, (label, name, r.text)
                theirs = r.json()["tokens"]
                mine = ours.chat_ids({"model": "tiny", **body})
                assert mine == theirs, (label, name, ours.chat_text(body))
                checked += 1
    print(f"\n{checked} conversation x template cases: proxy ids == vLLM /tokenize")


Row = tuple[int, int, int, int]  # (proxy prompt tokens, engine prompt tokens, proxy exact match, engine cached)


async def test_exact_prefix_match_agrees_with_engine_cache_hits(
    kv_engine: tuple[Engine, dict[str, str]], model_dir: Path
) -> None:
    engine, kv_events = kv_engine
    ours = _load(model_dir, None)
    arms = {"model tokenizer": {"tiny": {"tokenizer": str(model_dir)}}, "estimator": {}}
    results = {name: await _agent_loop(engine, kv_events, models, ours) for name, models in arms.items()}
    for name, rows in results.items():
        print(f"\n{name}:")
        for ours_n, engine_n, matched, cached in rows:
            print(
                f"  prompt {ours_n:5d} (engine {engine_n:5d}) proxy exact match {matched:5d} engine cached {cached:5d}"
            )
        print(
            f"  {len(rows)} steps: proxy matched {sum(r[2] for r in rows)}, engine hit {sum(r[3] for r in rows)} tokens"
        )
    rows = results["model tokenizer"]
    assert all(r[0] == r[1] for r in rows)  # the proxy's count is the engine's, every step
    assert all(abs(r[2] - r[3]) <= ENGINE_BLOCK for r in rows), rows  # within one engine block, every step
    assert sum(r[3] for r in rows) > 0
    # the proxy's own estimator never meets the engine's ids: its exact index matches nothing
    estimated = results["estimator"]
    assert sum(r[2] for r in estimated) == 0 < sum(r[3] for r in estimated)


async def _agent_loop(
    engine: Engine, kv_events: dict[str, str], models: dict[str, Any], ours: ModelTokenizer
) -> list[Row]:
    """3 agents x 3 growing steps through a fresh proxy; each step sent once the engine's events for the
    previous one are in the exact index (waited on with the keys of the engine's own ids)."""
    policy = load_policy(
        overrides={
            "upstreams": [{"url": engine.url, "name": "r0", "kv_events": kv_events}],
            "admission": {"controller": "none"},
            "routing": {"policy": "prefix-affinity", "block_tokens": BLOCK_TOKENS},
            "models": models,
        },
        env={},
    )
    comps = build_components(policy)
    steps: list[StepContext] = []
    comps.listeners.append(type("Rec", (), {"on_step_end": lambda self, ctx, now: steps.append(ctx)})())
    async with httpx.AsyncClient(base_url=engine.url, timeout=60) as eng:
        assert (await eng.post("/reset_prefix_cache")).status_code == 200
    async with running_proxy(policy, comps) as url, httpx.AsyncClient(base_url=url, timeout=120) as client:
        # Requests make the engine publish; the subscriber replays what it missed from seq 0 once it
        # sees a batch. Its SUB socket connects asynchronously, so the first batches may pass it by.
        for i in range(20):
            warm = {"model": "tiny", "messages": [{"role": "user", "content": f"warm up {i} " * 100}], "max_tokens": 1}
            assert (await client.post("/v1/chat/completions", json=warm)).status_code == 200
            with contextlib.suppress(AssertionError):
                await _until(lambda: comps.kv_events.is_exact("r0"), "", timeout_s=1.0)
                break
        assert comps.kv_events.is_exact("r0"), str(comps.kv_events.state())
        steps.clear()
        histories = {a: agent_step(a, None, 0) for a in range(3)}
        for k in range(STEPS):
            for a, messages in histories.items():
                body = {"model": "tiny", "messages": messages, "tools": TOOLS, "tool_choice": "none"}
                body |= {"max_tokens": 12, "ignore_eos": True}
                r = await client.post("/v1/chat/completions", json=body, headers={"X-Agent-Id": f"agent-{a}"})
                assert r.status_code == 200, r.text
                ids = ours.chat_ids(body)
                keys = hash_tokens(ids[: len(ids) // ENGINE_BLOCK * ENGINE_BLOCK], BLOCK_TOKENS)
                await _until(lambda keys=keys: comps.kv_events.index.match(keys, 0).get("r0", 0) >= len(keys), "events")
                histories[a] = agent_step(a, r.json()["choices"][0]["message"]["content"], k + 1, messages)
    return [
        (
            s.local_prompt_tokens,
            s.usage.prompt_tokens,
            s.route_decision.matched_blocks * BLOCK_TOKENS,
            s.usage.cached_tokens,
        )
        for s in steps
        if s.usage is not None and s.usage.cached_tokens is not None
    ]


async def _until(cond: Any, what: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        await asyncio.sleep(0.02)
