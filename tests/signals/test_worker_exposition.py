"""The bundled worker exports vLLM's names: our parser must read it like a real vLLM."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from concurproxy.signals.engine_metrics import parse_engine_metrics


def test_parser_reads_the_simulated_workers_metrics() -> None:
    worker_profile = pytest.importorskip("concurproxy.worker.profile")
    engine_mod = pytest.importorskip("concurproxy.worker.engine")
    worker_metrics = pytest.importorskip("concurproxy.worker.metrics")
    cfg = worker_profile.load_profile("tiny").engine_config()
    engine = engine_mod.Engine(cfg)
    text = generate_latest(worker_metrics.make_registry(engine, "tiny")).decode()
    s = parse_engine_metrics(text, ts=1.0)
    assert s.flavour == "vllm"
    assert (s.kv_usage, s.running, s.waiting, s.preemptions_total) == (0.0, 0, 0, 0.0)
    assert s.num_gpu_blocks == cfg.num_blocks and s.block_size == cfg.block_size


def test_the_workers_prefill_and_inter_token_histograms_give_the_engines_ratio() -> None:
    from concurproxy.signals.pressure import PressureTracker
    from concurproxy.worker.engine import Engine
    from concurproxy.worker.metrics import make_registry
    from concurproxy.worker.profile import load_profile

    engine = Engine(load_profile("tiny").engine_config())
    registry = make_registry(engine, "tiny")
    tracker = PressureTracker()
    tracker.observe(parse_engine_metrics(generate_latest(registry).decode(), ts=0.0))
    for i in range(8):
        engine.add_request(f"r{i}", list(range(i * 100, i * 100 + 200)), max_tokens=16, arrival=0.0)
    now = 0.0
    while engine.has_work():
        now = engine.step(now).end
    s = parse_engine_metrics(generate_latest(registry).decode(), ts=0.25)
    assert (s.prefills_total, s.itls_total) == (8, 8 * 15)
    snap = tracker.observe(s)
    assert snap.prefill_iterations == pytest.approx(engine.stats.prefill_iterations)
