"""Hypothesis: any workload keeps the KV pool consistent and completes every request exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.tokens import synth_text
from concurproxy.worker.engine import Engine, EngineConfig, StepTimeModel

TIMING = StepTimeModel(0.01, 1e-3, 1e-3, 1e-5, 1e-7)

requests = st.lists(
    st.tuples(
        st.lists(st.integers(0, 3), min_size=1, max_size=40),  # prompt over a tiny vocabulary: many shared prefixes
        st.integers(1, 20),  # max_tokens
        st.integers(0, 3),  # steps to wait before the next arrival
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(reqs=requests, num_blocks=st.integers(16, 40), budget=st.integers(4, 64), abort_every=st.integers(0, 7))
def test_engine_invariants_under_random_workloads(
    reqs: list[tuple[list[int], int, int]], num_blocks: int, budget: int, abort_every: int
) -> None:
    e = Engine(
        EngineConfig(
            num_blocks=num_blocks,
            block_size=4,
            max_num_batched_tokens=budget,
            max_num_seqs=8,
            max_model_len=64,
            timing=TIMING,
        )
    )
    now = 0.0
    texts: dict[str, str] = {}
    expected: dict[str, int] = {}
    aborted: set[str] = set()
    pending = list(enumerate(reqs))
    wait = 0
    steps = 0
    while pending or e.has_work():
        if pending and wait == 0:
            i, (prompt, max_tokens, gap) = pending.pop(0)
            e.add_request(f"r{i}", prompt, max_tokens=max_tokens, arrival=now)
            expected[f"r{i}"] = max_tokens
            texts[f"r{i}"] = ""
            wait = gap
            if abort_every and i % abort_every == abort_every - 1 and i > 0 and f"r{i - 1}" in e.requests:
                e.abort(f"r{i - 1}", now)
                aborted.add(f"r{i - 1}")
            continue
        wait = max(0, wait - 1)
        if not e.has_work():
            continue
        res = e.step(now)
        now = res.end
        steps += 1
        assert steps < 20000, "engine made no progress"
        e.pool.check()
        assert e.pool.num_used <= num_blocks
        held = [b for r in e.running for b in r.blocks]
        assert len(set(held)) == e.pool.num_used
        for r in e.waiting:
            assert not r.blocks
        for o in res.outputs:
            texts[o.req_id] += o.new_text
    for rid, n in expected.items():
        if rid not in aborted:
            assert texts[rid] == synth_text(n), rid
    assert e.pool.num_used == 0
    s = e.stats
    assert s.finished["length"] == len(expected) - len(aborted) and s.finished["abort"] == len(aborted)
    assert s.prefix_hits <= s.prefix_queries
