"""Real runs against the in-process OpenAI stub (127.0.0.1, free port), reports, CLI."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from loadgen_stub import OpenAIStub

from loadgen.ab import ab_table, run_ab
from loadgen.cli import main
from loadgen.client import TargetUnreachable
from loadgen.generator import iter_tasks
from loadgen.report import render_html, render_png, write_report
from loadgen.results import load_results
from loadgen.runner import run_scenario
from loadgen.scenario import parse_scenario

SMALL = {
    "name": "small",
    "max_tasks": 4,
    "arrivals": {"mode": "closed", "concurrency": 2},
    "task": {
        "system_prompt_tokens": 30,
        "task_prompt_tokens": 20,
        "branches": 2,
        "branch_steps": 2,
        "critic_reject_p": 0.5,
        "deadline_s": 60,
        "roles": {
            "executor": {"growth_tokens": 20, "output_tokens": 8, "tool_pause_s": 0.005},
            "planner": {"output_tokens": 8},
            "critic": {"output_tokens": 4},
            "summary": {"output_tokens": 8},
        },
    },
    "tenants": [
        {"name": "heavy", "api_key": "kh", "weight": 1},
        {"name": "light", "api_key": "kl", "weight": 1},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_against_stub(stub: OpenAIStub, tmp_path: Path) -> None:
    sc = parse_scenario(SMALL)
    res = await run_scenario(sc, stub.url, scrape=[stub.url + "/metrics"], scrape_interval_s=0.05, run_tag="r-")
    plans = list(iter_tasks(sc, tag="r-"))
    expected = [s for p in plans for s in p.steps()]
    assert len(stub.state.seen) == len(res.steps) == len(expected)
    # exactly the planned requests were sent (concurrency changes only the interleaving)
    sent = Counter(orjson.dumps(s.body) for s in stub.state.seen)
    assert sent == Counter(orjson.dumps(e.body(sc.model, True)) for e in expected)
    for seen in stub.state.seen:
        h = seen.headers
        assert h["Authorization"] in ("Bearer kh", "Bearer kl")
        assert {"X-Task-Id", "X-Agent-Id", "X-Agent-Role", "X-Priority"} <= set(h)
        assert seen.body["ignore_eos"] is True and seen.body["max_tokens"] >= 1
    done = Counter(s.headers["X-Agent-Id"] for s in stub.state.seen if s.headers.get("X-Agent-Done") == "1")
    assert set(done.values()) == {1} and len(done) == len({e.agent_id for e in expected})
    assert all(s.ok and s.ttft_s is not None and s.queue_wait_ms == 1.5 and s.replica == "stub-0" for s in res.steps)
    assert all(s.completion_tokens == s.max_tokens for s in res.steps)
    summ = res.summary()
    assert summ["tasks"]["completed"] == 4 and summ["tasks"]["in_deadline"] == 4
    assert set(summ["by_role"]) == {"planner", "executor", "critic", "summary"}
    assert res.series and any(s.name == "vllm:kv_cache_usage_perc" for s in res.series)
    assert not res.meta.truncated
    out = tmp_path / "r.json"
    res.save(out)
    back = load_results(out)
    assert len(back.steps) == len(res.steps)
    html = render_html([back])
    assert html.count("data:image/png;base64,") == 4  # goodput, CDF, tokens, KV usage
    png = render_png([back, res])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


async def test_429_is_retried_and_counted() -> None:
    sc = parse_scenario({**SMALL, "max_tasks": 1, "retry": {"max_attempts": 3, "backoff_s": 0}})
    async with OpenAIStub(fail_first=2) as s:
        res = await run_scenario(sc, s.url)
    summ = res.summary()
    assert summ["steps"]["http_429"] == 2 and summ["tasks"]["completed"] == 1
    assert [r.attempt for r in res.steps[:3]] == [1, 2, 3]


async def test_step_failure_fails_task() -> None:
    sc = parse_scenario({**SMALL, "max_tasks": 1, "retry": {"max_attempts": 1}})
    async with OpenAIStub(fail_first=1) as s:
        res = await run_scenario(sc, s.url)
    assert [t.status for t in res.tasks] == ["failed"] and len(res.steps) == 1


async def test_open_loop_bursts_and_hard_end() -> None:
    sc = parse_scenario(
        {
            **SMALL,
            "max_tasks": None,
            "duration_s": 0.1,
            "drain_s": 0.3,
            "arrivals": {"mode": "bursts", "every_s": 0.05, "size": 2},
        }
    )
    async with OpenAIStub(delay_s=0.2) as s:
        res = await run_scenario(sc, s.url)
    assert res.meta.truncated
    st = Counter(t.status for t in res.tasks)
    assert st["cancelled"] >= 1 and sum(st.values()) == 6  # bursts at 0, 0.05, 0.1
    assert res.meta.elapsed_s < 1.5


async def test_unreachable_target_is_a_clear_error() -> None:
    sc = parse_scenario(SMALL)
    with pytest.raises(TargetUnreachable, match=r"cannot reach target http://127\.0\.0\.1:"):
        await run_scenario(sc, f"http://127.0.0.1:{_free_port()}")


async def test_ab_same_workload(stub: OpenAIStub) -> None:
    sc = parse_scenario({**SMALL, "max_tasks": 2})
    async with OpenAIStub(queue_wait_ms=None) as other:
        a, b = await run_ab(sc, stub.url, other.url)
    bodies_a = sorted(orjson.dumps(s.body) for s in stub.state.seen)
    bodies_b = sorted(orjson.dumps(s.body) for s in other.state.seen)
    assert bodies_a == bodies_b
    rows = {name: (va, vb, ratio) for name, va, vb, ratio in ab_table(a, b)}
    assert rows["tasks completed"] == (2, 2, 1.0)
    assert rows["queue wait p50 (ms)"][1] is None and rows["queue wait p50 (ms)"][2] is None


@pytest.fixture
def thread_stub() -> Iterator[str]:
    """The stub on its own loop in a thread, for the synchronous CLI (which calls asyncio.run)."""
    loop = asyncio.new_event_loop()
    stub = OpenAIStub()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(stub.__aenter__())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stub.__aexit__(None, None, None))
        loop.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield stub.url
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_cli_run_report_validate(thread_stub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "s.yaml"
    scen.write_text(orjson.dumps({**SMALL, "max_tasks": 2}).decode())  # JSON is YAML
    out = tmp_path / "res.json"
    assert main(["run", str(scen), "--target", thread_stub, "--out", str(out), "--quiet", "--max-tasks", "1"]) == 0
    assert len(load_results(out).tasks) == 1
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    assert main(["report", str(out), str(out), "--html", str(html), "--png", str(png)]) == 0
    assert html.read_text().startswith("<!doctype html>") and png.stat().st_size > 1000
    assert main(["validate", "swe-swarm", "--tasks", "1"]) == 0
    assert main(["list"]) == 0
    capsys.readouterr()
    assert main(["run", str(scen), "--target", f"http://127.0.0.1:{_free_port()}", "-q"]) == 3
    assert "cannot reach target" in capsys.readouterr().err
    scen.write_text("max_tasks: 1\narrivals: {mode: poisson, rate: 2}\n")
    assert main(["validate", str(scen)]) == 2
    err = capsys.readouterr().err
    assert "arrivals.rate_per_s" in err and "arrivals.rate:" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad)]) == 4


def test_write_report_with_window_series(tmp_path: Path) -> None:
    from loadgen.results import Meta, Results, Series

    r = Results(
        Meta("s", "t", 0, "now", 10.0),
        series=[
            Series(
                "http://p/metrics",
                "concurproxy_admission_window",
                {"replica": "r0"},
                [[0.0, 4.0], [1.0, 5.0]],
            )
        ],
    )
    write_report([r], html_path=tmp_path / "x.html")
    assert (tmp_path / "x.html").read_text().count("data:image/png") == 4  # + admission window


async def test_session_trace_replay_run(stub: OpenAIStub, tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("session_id,timestamp,input_tokens,output_tokens\na,0,40,3\na,0.15,80,3\nb,0.05,20,2\n")
    sc = parse_scenario({"trace": {"path": str(p), "format": "sessions"}})
    res = await run_scenario(sc, stub.url, run_tag="")
    assert [t.status for t in res.tasks] == ["ok", "ok"]
    by = {(s.agent_id, s.step): s for s in res.steps}
    assert by[("s00000", 1)].start_s >= 0.15 and by[("s00001", 0)].start_s >= 0.05
    assert [s.headers.get("X-Agent-Done") for s in stub.state.seen if s.headers["X-Agent-Id"] == "s00000"] == [
        None,
        "1",
    ]
    assert by[("s00000", 1)].prompt_tokens == 80 + 2  # "<user>:" marker + final newline
