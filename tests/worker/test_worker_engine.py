"""Engine invariants: capacity, prefix hits, preemption by recompute, counters, timing."""

from __future__ import annotations

import random

import pytest

from concurproxy.tokens import synth_text
from concurproxy.worker.engine import Engine, EngineConfig, OutputLengths, RequestRejected, StepTimeModel

TIMING = StepTimeModel(fixed_s=0.01, prefill_s_per_token=1e-3, decode_s_per_token=2e-3, kv_read_s_per_token=1e-5)


def make(num_blocks: int = 16, bs: int = 4, budget: int = 64, max_len: int | None = None, **kw: object) -> Engine:
    return Engine(
        EngineConfig(
            num_blocks=num_blocks,
            block_size=bs,
            max_num_batched_tokens=budget,
            max_model_len=max_len or num_blocks * bs,
            timing=TIMING,
            **kw,
        )
    )  # type: ignore[arg-type]


def drain(engine: Engine, now: float = 0.0, check: bool = True) -> tuple[float, list]:
    results = []
    while engine.has_work():
        res = engine.step(now)
        now = res.end
        results.append(res)
        if check:
            assert_capacity(engine)
    return now, results


def assert_capacity(engine: Engine) -> None:
    engine.pool.check()
    bs = engine.config.block_size
    owned: dict[int, int] = {}
    for req in engine.running:
        assert len(req.blocks) >= -(-req.num_computed // bs), "computed tokens without blocks"
        assert len(set(req.blocks)) == len(req.blocks)
        for b in req.blocks:
            owned[b] = owned.get(b, 0) + 1
    for req in engine.waiting:
        assert req.blocks == [] and req.num_computed == 0
    assert len(owned) <= engine.config.num_blocks
    for b, n in owned.items():
        assert engine.pool.ref_count(b) == n, "ref count disagrees with the requests holding the block"
    assert engine.pool.num_used == len(owned)


def test_single_request_output_and_step_time_formula() -> None:
    e = make()
    e.add_request("a", list(range(10)), max_tokens=3, arrival=0.0)
    r1 = e.step(0.0)
    # prefill 10 tokens, attention reads 10
    assert r1.duration == pytest.approx(0.01 + 10 * 1e-3 + 10 * 1e-5)
    assert r1.prefill_tokens == 10 and r1.decode_tokens == 0
    assert [o.new_text for o in r1.outputs] == [synth_text(3)[:6]]
    r2 = e.step(r1.end)
    assert r2.decode_tokens == 1 and r2.duration == pytest.approx(0.01 + 2e-3 + 11 * 1e-5)
    end, rest = drain(e, r2.end)
    final = rest[-1].outputs[0]
    assert final.finished and final.finish_reason == "length" and final.output_tokens == 3
    text = "".join(o.new_text for r in [r1, r2, *rest] for o in r.outputs)
    assert text == synth_text(3)
    assert final.timing is not None and final.timing.ttft == pytest.approx(r1.duration)
    assert final.timing.e2e == pytest.approx(end)
    assert e.pool.num_used == 0


def test_chunked_prefill_respects_the_token_budget() -> None:
    e = make(num_blocks=32, budget=16)
    e.add_request("a", list(range(40)), max_tokens=1)
    r = [e.step(0.0), None, None]
    assert r[0].prefill_tokens == 16 and not r[0].outputs
    r[1] = e.step(r[0].end)
    r[2] = e.step(r[1].end)
    assert r[1].prefill_tokens == 16 and r[2].prefill_tokens == 8
    assert r[2].outputs[0].finished


def test_long_prefill_token_threshold_chunks_each_request_and_leaves_budget_to_waiting_ones() -> None:
    """vLLM's --long-prefill-token-threshold: no request gets more than 8 new tokens in a step, even with a
    budget of 32, so a short request that arrives during a long prefill is admitted in the next step (without
    the threshold the long prefill would take the whole budget and the short one would wait)."""
    e = make(num_blocks=32, budget=32, long_prefill_token_threshold=8)
    e.add_request("long", list(range(100)), max_tokens=1)
    r0 = e.step(0.0)
    assert r0.prefill_tokens == 8
    e.add_request("short", list(range(100, 106)), max_tokens=2)
    r1 = e.step(r0.end)
    assert r1.prefill_tokens == 8 + 6 and r1.num_scheduled == 2  # both in one step
    assert [o.req_id for o in r1.outputs] == ["short"]  # its first token comes after one step
    r2 = e.step(r1.end)
    assert (r2.prefill_tokens, r2.decode_tokens) == (8, 1)  # decodes are not chunked
    drain(e, r2.end)
    without = make(num_blocks=32, budget=32)
    without.add_request("long", list(range(100)), max_tokens=1)
    w0 = without.step(0.0)
    without.add_request("short", list(range(100, 106)), max_tokens=2)
    w1 = without.step(w0.end)
    assert (w1.prefill_tokens, w1.num_scheduled) == (32, 1)  # the running prefill took the whole budget
    with pytest.raises(ValueError, match="long_prefill_token_threshold"):
        make(long_prefill_token_threshold=-1)


def test_prefix_hit_only_on_identical_chained_blocks() -> None:
    e = make(num_blocks=32)
    base = list(range(100, 120))  # 5 full blocks of 4
    e.add_request("a", base, max_tokens=1)
    drain(e)
    # same first 12 tokens then different: 3 blocks hit
    e.add_request("b", [*base[:12], 7, 7, 7, 7, 7], max_tokens=1)
    drain(e)
    # same tokens from block 1 on, different block 0: nothing hits (chained hashes)
    e.add_request("c", [1, 2, 3, 4, *base[4:]], max_tokens=1)
    drain(e)
    # identical prompt: all but the last token may hit -> 4 blocks (16 tokens) of 20
    e.add_request("d", list(base), max_tokens=1)
    drain(e)
    hits = [e.stats.prefix_hits]
    assert e.stats.prefix_queries == 20 + 17 + 20 + 20
    assert hits == [12 + 0 + 16]


def test_cached_tokens_reported_per_request() -> None:
    e = make(num_blocks=32)
    e.add_request("a", list(range(16)), max_tokens=1)
    drain(e)
    e.add_request("b", [*list(range(16)), 99], max_tokens=2)
    _, res = drain(e)
    assert res[-1].outputs[0].cached_tokens == 16


def test_freed_blocks_are_evicted_lru_and_then_miss() -> None:
    e = make(num_blocks=8)  # 32 tokens of KV
    e.add_request("a", list(range(16)), max_tokens=1)
    drain(e)
    e.add_request("b", list(range(1000, 1028)), max_tokens=1)  # needs 7 blocks: evicts most of a
    drain(e)
    e.add_request("a2", [*list(range(16)), 5], max_tokens=1)
    drain(e)
    assert e.stats.prefix_hits < 16
    assert e.pool.evictions > 0
    assert e.stats.evicted_prefix_recompute_tokens > 0


def test_preemption_frees_blocks_newest_first_and_request_completes() -> None:
    # 6 blocks of 4 = 24 tokens; two requests of 8 prompt tokens growing to 8+10 cannot both fit.
    e = make(num_blocks=6, max_len=24)
    e.add_request("old", list(range(8)), max_tokens=10, arrival=0.0)
    e.add_request("new", list(range(50, 58)), max_tokens=10, arrival=0.0)
    _now, results = drain(e)
    preempted = [rid for r in results for rid in r.preempted]
    assert preempted and preempted[0] == "new", "the newest running request is preempted first"
    assert e.stats.preemptions == len(preempted)
    outs = {o.req_id: o for r in results for o in r.outputs if o.finished}
    for rid in ("old", "new"):
        assert outs[rid].output_tokens == 10 and outs[rid].finish_reason == "length"
        text = "".join(o.new_text for r in results for o in r.outputs if o.req_id == rid)
        assert text == synth_text(10)
    assert outs["new"].timing is not None and outs["new"].timing.num_preemptions >= 1
    assert e.stats.recomputed_prefill_tokens > 0
    assert e.stats.generation_tokens == 20 and e.stats.prompt_tokens == 16
    assert e.pool.num_used == 0 and e.kv_usage() == 0.0


def test_preempted_request_holds_no_blocks_while_waiting() -> None:
    e = make(num_blocks=6, max_len=24)
    e.add_request("old", list(range(8)), max_tokens=10)
    e.add_request("new", list(range(50, 58)), max_tokens=10)
    now = 0.0
    while True:
        res = e.step(now)
        now = res.end
        if res.preempted:
            victim = e.waiting[0]
            assert victim.req_id == res.preempted[0] and victim.blocks == [] and victim.num_computed == 0
            assert_capacity(e)
            break


def test_counters_agree_with_a_random_workload() -> None:
    rng = random.Random(7)
    e = make(num_blocks=24, bs=4, budget=32, max_len=64)
    now = 0.0
    prompts: dict[str, int] = {}
    gen = 0
    finished: dict[str, int] = {}
    preempted = 0
    for i in range(60):
        if rng.random() < 0.6:
            p = [rng.randrange(5) for _ in range(rng.randint(1, 30))]
            mt = rng.randint(1, 64 - len(p))
            e.add_request(f"r{i}", p, max_tokens=mt, arrival=now)
            prompts[f"r{i}"] = len(p)
        if e.has_work():
            res = e.step(now)
            now = res.end
            assert_capacity(e)
            preempted += len(res.preempted)
            for o in res.outputs:
                gen += len(o.new_token_ids)
                if o.finished:
                    finished[o.req_id] = o.output_tokens
    _, rest = drain(e, now)
    for res in rest:
        preempted += len(res.preempted)
        for o in res.outputs:
            gen += len(o.new_token_ids)
            if o.finished:
                finished[o.req_id] = o.output_tokens
    s = e.stats
    assert set(finished) == set(prompts)
    assert s.generation_tokens == gen == sum(finished.values())
    assert s.prompt_tokens == sum(prompts.values())
    assert s.preemptions == preempted
    assert s.finished["length"] == len(prompts) and s.e2e.count == len(prompts) == s.ttft.count
    assert 0 <= s.prefix_hits <= s.prefix_queries
    assert s.prefill_tokens_computed + s.prefix_hits >= s.prompt_tokens


def test_abort_frees_blocks_and_counts() -> None:
    e = make()
    e.add_request("a", list(range(20)), max_tokens=30)
    e.step(0.0)
    assert e.pool.num_used > 0
    out = e.abort("a", 1.0)
    assert out is not None and out.finish_reason == "abort" and e.pool.num_used == 0
    assert not e.has_work() and e.stats.finished["abort"] == 1
    assert e.abort("a", 1.0) is None


def test_rejections() -> None:
    e = make(num_blocks=4, bs=4, max_len=16)
    with pytest.raises(RequestRejected):
        e.add_request("a", list(range(10)), max_tokens=10)
    with pytest.raises(RequestRejected):
        e.add_request("b", [], max_tokens=1)
    e.add_request("c", [1], max_tokens=1)
    with pytest.raises(RequestRejected):
        e.add_request("c", [1], max_tokens=1)
    with pytest.raises(ValueError):
        EngineConfig(num_blocks=2, block_size=4, max_model_len=100, timing=TIMING)


def test_seeded_output_lengths_and_ignore_eos() -> None:
    lengths = OutputLengths(mode="uniform", seed=3)
    e = make(num_blocks=64, output_lengths=lengths)
    drawn = [e.add_request(f"r{i}", [1, 2], max_tokens=40).target_len for i in range(20)]
    assert len(set(drawn)) > 1 and all(1 <= n <= 40 for n in drawn)
    assert drawn == [lengths.draw(f"r{i}", 40, False) for i in range(20)]
    assert e.add_request("x", [1, 2], max_tokens=40, ignore_eos=True).target_len == 40
    _, res = drain(e)
    reasons = {o.req_id: o.finish_reason for r in res for o in r.outputs if o.finished}
    assert reasons["x"] == "length" and "stop" in reasons.values()


def test_next_event_time_and_idle() -> None:
    e = make()
    assert e.next_event_time() is None
    e.add_request("a", [1, 2, 3], max_tokens=2, arrival=5.0)
    assert e.next_event_time() == 5.0
    r = e.step(0.0)
    assert r.start == 5.0 and e.next_event_time() == r.end
    r2 = e.step(0.0)  # a step never starts before the previous one ended
    assert r2.start == r.end


def test_virtual_timeline_steps_engines_in_time_order() -> None:
    from concurproxy.worker.vtime import VirtualTimeline

    a, b = make(), make()
    tl = VirtualTimeline([a, b])
    assert tl.next_time() is None and tl.run_until(100.0) == []
    a.add_request("x", [1, 2, 3], max_tokens=3, arrival=1.0)
    b.add_request("y", [4, 5, 6, 7, 8], max_tokens=2, arrival=1.5)
    assert tl.next_time() == 1.0
    steps = tl.run_until(100.0)
    starts = [r.start for _, r in steps]
    assert starts == sorted(starts) and starts[0] == 1.0
    assert {i for i, _ in steps} == {0, 1}
    assert not a.has_work() and not b.has_work()
    done = {o.req_id: o.output_tokens for _, r in steps for o in r.finished}
    assert done == {"x": 3, "y": 2}


def test_prefill_time_and_inter_token_latency_are_recorded_as_vllm_does() -> None:
    """First scheduled -> first token is the prefill; every later token adds one inter-token latency (one
    iteration while the request decodes): the histograms the proxy reads a prefill's cost from."""
    e = make()
    e.add_request("a", list(range(10)), max_tokens=4, arrival=0.0)
    r1 = e.step(0.5)  # scheduled at 0.5, not at arrival: queueing is not prefill
    end, _ = drain(e, r1.end)
    s = e.stats
    assert (s.prefill_time.count, s.prefill_time.total) == (1, pytest.approx(r1.duration))
    assert s.itl.count == 3 and s.itl.total == pytest.approx(end - r1.end)
    assert s.prefill_iterations == pytest.approx(r1.duration / ((end - r1.end) / 3))


def test_the_fast_forwarded_engine_records_the_same_latencies() -> None:
    from concurproxy.simulate.fastengine import make_engine

    engines, calls = [], []
    for mode in ("fast", "exact"):
        e = make_engine(make(num_blocks=64, budget=256).config, mode)
        for i in range(4):
            e.add_request(f"r{i}", list(range(i * 20, i * 20 + 12)), max_tokens=30, arrival=0.0)
        now, n = 0.0, 0
        while e.has_work():
            now = e.advance(now).end
            n += 1
        e.sync(float("inf"))
        engines.append(e)
        calls.append(n)
    fast, exact = (e.stats for e in engines)
    assert calls[0] < calls[1]  # decode runs were fast-forwarded
    assert fast.itl.count == exact.itl.count == 4 * 29
    assert fast.itl.counts == exact.itl.counts and fast.itl.total == pytest.approx(exact.itl.total)
    assert fast.prefill_time.total == pytest.approx(exact.prefill_time.total)
