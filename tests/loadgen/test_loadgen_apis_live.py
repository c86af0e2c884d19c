"""Short live runs of each client API against the bundled worker (127.0.0.1, a few agents, a few steps)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from concurproxy.worker.fleet import Worker, run_fleet
from loadgen.cli import main
from loadgen.results import Results, load_results
from loadgen.runner import run_scenario
from loadgen.scenario import load_scenario, with_overrides

MODES = [
    {"api": "chat"},
    {"api": "responses"},
    {"api": "responses", "responses_chain": True},
    {"api": "messages"},
]


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with run_fleet("tiny", 1, time_scale=50.0) as ws:
        yield ws[0]


def _by_step(res: Results) -> list[tuple[str, int, int, int | None]]:
    return sorted((s.agent_id, s.step, s.prompt_tokens, s.cached_tokens) for s in res.steps)


async def _run(url: str, client: dict[str, Any], agents: int, steps: int, stream: bool = True) -> Results:
    sc = with_overrides(load_scenario("plain-loop"), client=client, agents=agents, steps=steps)
    sc = sc.model_copy(update={"stream": stream})
    return await run_scenario(sc, url, run_tag="live-")


@pytest.mark.parametrize("client", MODES, ids=lambda c: "+".join(str(v) for v in c.values()))
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_plain_loop_in_each_api(worker: Worker, client: dict[str, Any], stream: bool) -> None:
    res = await _run(worker.url, client, agents=3, steps=3, stream=stream)
    assert len(res.steps) == 9 and all(s.ok for s in res.steps), [s.error for s in res.steps if not s.ok]
    assert res.summary()["tasks"]["completed"] == 3
    assert all(s.completion_tokens == s.max_tokens == 32 for s in res.steps)
    assert all(s.ttft_s is not None and 0 < s.ttft_s <= s.total_s for s in res.steps)
    # usage is the worker's count, which equals the generator's exact estimate in every API (and
    # in a Responses chain too: the worker's own 32-token reply replaces the 32-word stand-in)
    assert [s.prompt_tokens for s in sorted(res.steps, key=lambda s: s.step)][-1] == 157 + 107 * 2
    assert all(s.cached_tokens is not None for s in res.steps)
    assert res.meta.client["api"] == client["api"] and res.meta.client["identity"] == "none"


async def test_same_conversation_same_kv_behaviour_in_every_api() -> None:
    """One agent, fresh worker per API: identical prompt sizes and prefix-cache hits per step."""
    seen = []
    for client in (MODES[0], MODES[1], MODES[3]):
        async with run_fleet("tiny", 1, time_scale=50.0) as ws:
            seen.append(_by_step(await _run(ws[0].url, client, agents=1, steps=4)))
    assert seen[0] == seen[1] == seen[2]
    # each step hits the previous step's prompt, to a whole 16-token block (the stand-in reply differs
    # from the engine's own output, so the reply's blocks are not hits)
    assert [hit for *_, hit in seen[0]] == [0] + [(157 + 107 * k) // 16 * 16 for k in range(3)]


async def test_responses_chain_is_stored_and_continued(worker: Worker) -> None:
    assert worker.state is not None
    await _run(worker.url, MODES[1], agents=1, steps=3)
    assert len(worker.state.responses) == 0  # a client that resends its history sends store: false
    res = await _run(worker.url, MODES[2], agents=2, steps=3)
    assert len(worker.state.responses) == 6 and all(s.ok for s in res.steps)
    prev = [r["previous_response_id"] for r in worker.state.responses.responses()]
    assert sum(p is None for p in prev) == 2  # each agent's first step starts its chain
    # the chain's history holds the engine's own replies, as long as the stand-ins: same sizes
    assert sorted({s.prompt_tokens for s in res.steps}) == [157, 264, 371]


@pytest.fixture
def thread_worker() -> Iterator[str]:
    """A worker on its own loop in a thread, for the synchronous CLI (which calls asyncio.run)."""
    loop = asyncio.new_event_loop()
    urls: list[str] = []
    ready, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        async with run_fleet("tiny", 1, time_scale=50.0) as ws:
            urls.append(ws[0].url)
            ready.set()
            await stop.wait()

    t = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    t.start()
    assert ready.wait(10)
    yield urls[0]
    loop.call_soon_threadsafe(stop.set)
    t.join(10)
    loop.close()


def test_cli_runs_the_plain_loop_in_messages_mode(thread_worker: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["run", "plain-loop", "--target", thread_worker, "--agents", "2", "--steps", "2", "--api", "messages"]
    assert main([*argv, "-q", "--out", str(out)]) == 0
    res = load_results(out)
    assert len(res.steps) == 4 and all(s.ok for s in res.steps) and res.meta.client["api"] == "messages"
