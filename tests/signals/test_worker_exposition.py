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
