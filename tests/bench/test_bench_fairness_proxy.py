"""benchmarks.fairness_proxy: the generated policy validates, rows are computed from the measured window."""

from __future__ import annotations

import hashlib

from benchmarks.fairness_proxy import (
    KEYS,
    EngineRow,
    engine_row,
    format_rows,
    heavy_scenario,
    light_scenario,
    policy_doc,
    tenant_row,
)
from concurproxy.config.models import Policy
from concurproxy.tenancy.directory import TenantDirectory
from loadgen.results import Meta, Results, StepResult


def test_policy_maps_each_key_to_its_tenant_and_sets_the_light_share() -> None:
    policy = Policy.model_validate(policy_doc("http://127.0.0.1:1", "fifo", 0.5))
    assert policy.fairness.policy == "fifo" and policy.roles["planner"].window_share == 0.5
    directory = TenantDirectory.from_policy(policy.tenants, policy.auth)
    assert {directory.lookup(key) for key in KEYS.values()} == {"heavy", "light"}
    assert all(hashlib.sha256(k.encode()).hexdigest() in str(policy.tenants) for k in KEYS.values())
    assert "window_share" not in policy_doc("http://127.0.0.1:1", "vtc", None)["roles"]["planner"]


def test_scenarios_send_their_tenant_role_and_shape() -> None:
    heavy, light = heavy_scenario(12, 1), light_scenario(4, 1)
    assert [t.name for t in heavy.tenants] == ["heavy"] and [t.name for t in light.tenants] == ["light"]
    assert heavy.arrivals.concurrency == 12 and light.arrivals.concurrency == 4  # type: ignore[union-attr]
    assert light.task.planner_steps == 20 and light.task.roles.planner.priority == "high"


def _step(start: float, end: float, wait_ms: float, status: int = 200) -> StepResult:
    return StepResult(
        "t",
        "a",
        "planner",
        "light",
        0,
        1,
        start,
        end,
        status,
        queue_wait_ms=wait_ms,
        prompt_tokens=100,
        completion_tokens=10,
    )


def test_rows_count_only_the_measured_window_and_split_queue_wait() -> None:
    steps = [
        _step(0, 1, 0),
        *(_step(t, t + 0.2, 100) for t in range(10, 20)),
        _step(20, 21, 0, status=503),
        _step(30, 99, 0),
    ]
    res = Results(Meta("s", "x", 1, "", 100.0), steps, [], [])
    row = tenant_row(res, warmup_s=5, until_s=60)
    assert (row.steps, row.errors, row.tokens) == (10, 1, 10 * 120)  # 100 prompt + 2 × 10 completion
    assert round(row.p99_s, 6) == 0.2 and round(row.wait_p99_s, 6) == 0.1 and round(row.served_p99_s, 6) == 0.1
    table = format_rows(row, None, {"vtc": {"heavy": row, "light": row}}, span=55)
    assert "light tenant unloaded: p50 200 ms  p99 200 ms" in table
    assert table.splitlines()[-1].split()[-1] == "1.00"  # light p99 / unloaded p99


def test_prio_variant_opts_the_upstream_in_and_engine_metrics_are_read() -> None:
    doc = policy_doc("http://127.0.0.1:1", "vtc", None, priority_scheduling=True)
    assert Policy.model_validate(doc).upstreams[0].priority_scheduling
    assert not Policy.model_validate(policy_doc("http://127.0.0.1:1", "vtc", None)).upstreams[0].priority_scheduling
    text = (
        "# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total 7.0\n"
        "# TYPE vllm:request_queue_time_seconds histogram\n"
        'vllm:request_queue_time_seconds_bucket{le="+Inf"} 4.0\n'
        "vllm:request_queue_time_seconds_count 4.0\nvllm:request_queue_time_seconds_sum 2.0\n"
    )
    assert engine_row(text) == EngineRow(7.0, 0.5)


def test_variants_parse_their_modifiers_and_reserve_reaches_the_policy() -> None:
    import argparse

    import pytest

    from benchmarks.fairness_proxy import Variant, parse_variant

    a = argparse.Namespace(kv_reserve=0.15, lptt=128)
    assert parse_variant("vtc", a) == Variant("vtc")
    assert parse_variant("vtc:0.5+prio-preempt", a) == Variant("vtc", 0.5, prio=True, preempt=True)
    assert parse_variant("vtc+reserve+lptt", a) == Variant("vtc", kv_reserve=0.15, long_prefill_token_threshold=128)
    assert parse_variant("fifo+reserve@0.25+lptt@256", a) == Variant(
        "fifo", kv_reserve=0.25, long_prefill_token_threshold=256
    )
    assert parse_variant("vtc+long@512", a).long_prefill_tokens == 512
    with pytest.raises(ValueError, match="bad variant"):
        parse_variant("vtc+turbo", a)
    with pytest.raises(ValueError, match="bad variant"):
        parse_variant("vtc+long", a)
    # the shipped default policy takes only the engine flag
    assert parse_variant("default+lptt", a) == Variant("default", long_prefill_token_threshold=128)
    for bad in ("default+reserve", "default:0.5"):
        with pytest.raises(ValueError, match="bad variant"):
            parse_variant(bad, a)
    doc = policy_doc("http://127.0.0.1:1", "vtc", None, kv_reserve=0.15, long_prefill_tokens=512)
    fairness = Policy.model_validate(doc).fairness
    assert (fairness.kv_reserve, fairness.long_prefill_tokens) == (0.15, 512)
