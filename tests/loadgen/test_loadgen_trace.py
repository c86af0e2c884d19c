from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from concurproxy.tokens import count_tokens, pieces, render_chat
from loadgen.generator import iter_tasks
from loadgen.scenario import parse_scenario
from loadgen.trace import TraceError, block_text, mooncake_prompt


def _prompt_pieces(step) -> list[str]:  # type: ignore[no-untyped-def]
    return pieces(render_chat([{"role": r, "content": c} for r, c in step.messages]))


def _write_mooncake(path: Path, rows: list[dict]) -> None:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")


def test_mooncake_prefix_sharing(tmp_path: Path) -> None:
    bs = 16
    rows = [
        {"timestamp": 1000, "input_length": 3 * bs, "output_length": 5, "hash_ids": [1, 2, 3]},
        {"timestamp": 1500, "input_length": 3 * bs + 5, "output_length": 7, "hash_ids": [1, 2, 9]},
        {"timestamp": 3000, "input_length": 2 * bs - 3, "output_length": 2, "hash_ids": [1, 2]},
        {"timestamp": 3000, "input_length": bs, "output_length": 2, "hash_ids": [7]},
    ]
    p = tmp_path / "trace.jsonl"
    _write_mooncake(p, rows)
    sc = parse_scenario({"trace": {"path": str(p), "block_size": bs, "speedup": 2.0}})
    plans = list(iter_tasks(sc))
    assert [pl.arrival_s for pl in plans] == [0.0, 0.25, 1.0, 1.0]
    steps = [pl.phases[0][0][0] for pl in plans]
    toks = [_prompt_pieces(s) for s in steps]
    for s, row, t in zip(steps, rows, toks, strict=True):
        assert s.est_prompt_tokens == len(t)
        assert s.max_tokens == row["output_length"] and s.agent_done
    marker = 1  # "<user>:"
    # same leading hash ids -> identical leading blocks, different ids -> different text
    assert toks[0][: marker + 2 * bs] == toks[1][: marker + 2 * bs]
    assert toks[0][marker + 2 * bs : marker + 3 * bs] != toks[1][marker + 2 * bs : marker + 3 * bs]
    assert toks[2][: marker + 2 * bs - 3] == toks[0][: marker + 2 * bs - 3]  # a cut block is a prefix
    assert toks[3][marker : marker + 4] != toks[0][marker : marker + 4]


def test_mooncake_prompt_sizes() -> None:
    assert count_tokens(mooncake_prompt([5, 6], 40, 16, "r")) == 40  # beyond the blocks: unique filler
    assert mooncake_prompt([5], 10, 16, "r") == block_text(5, 16)[: 10 * 7]
    assert mooncake_prompt([5, 6], 40, 16, "r") != mooncake_prompt([5, 6], 40, 16, "q")


def test_mooncake_limits_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    _write_mooncake(
        p,
        [{"timestamp": i * 1000, "input_length": 4, "output_length": 1000, "hash_ids": [i]} for i in range(10)],
    )
    sc = parse_scenario({"trace": {"path": str(p), "block_size": 4, "max_output_tokens": 64}})
    assert len(list(iter_tasks(sc, max_tasks=3))) == 3
    plans = list(iter_tasks(sc, duration_s=4.5))
    assert len(plans) == 5 and all(s.max_tokens == 64 for pl in plans for s in pl.steps())
    p.write_text('{"timestamp": 1, "input_length": 3}\n')
    with pytest.raises(TraceError, match=r"t.jsonl:1: bad trace row"):
        list(iter_tasks(sc))
    missing = parse_scenario({"trace": {"path": str(tmp_path / "none.jsonl")}})
    with pytest.raises(TraceError, match="not found"):
        list(iter_tasks(missing))


def test_session_csv_turns_share_prefixes(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text(
        "session_id,timestamp,input_tokens,output_tokens,role\n"
        "b,2.0,50,5,coder\n"
        "a,1.0,100,10,\n"
        "a,3.0,300,20,\n"
        "a,6.0,320,30,\n"
    )
    sc = parse_scenario({"trace": {"path": str(p), "format": "sessions"}})
    plans = list(iter_tasks(sc, tag="x-"))
    assert [pl.task_id for pl in plans] == ["x-s00000", "x-s00001"]
    a, b = plans
    assert a.arrival_s == 0.0 and b.arrival_s == 1.0
    steps = list(a.steps())
    assert [s.at_s for s in steps] == [0.0, 2.0, 5.0]
    assert [s.agent_done for s in steps] == [False, False, True]
    toks = [_prompt_pieces(s) for s in steps]
    assert [len(t) for t in toks] == [s.est_prompt_tokens for s in steps]
    assert toks[1][:100] == toks[0][:100] and toks[2][:300] == toks[1][:300]
    assert next(b.steps()).role == "coder"
    p.write_text("session_id,timestamp,input_tokens\nx,1,2\n")
    with pytest.raises(TraceError, match="bad session row"):
        list(iter_tasks(sc))
