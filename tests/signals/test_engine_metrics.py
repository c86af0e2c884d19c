from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.signals.engine_metrics import EngineSample, MetricsParseError, parse_engine_metrics

FIX = Path(__file__).parent / "fixtures"


def load(name: str) -> str:
    return (FIX / name).read_text()


def test_vllm_v1() -> None:
    s = parse_engine_metrics(load("vllm_v1.txt"), ts=12.5)
    assert s == EngineSample(
        ts=12.5,
        flavour="vllm",
        kv_usage=0.8125,
        running=7,
        waiting=3,
        preemptions_total=4.0,
        prefix_queries_total=120000.0,
        prefix_hits_total=90000.0,
        prompt_tokens_total=150000.0,
        generation_tokens_total=20000.0,
        num_gpu_blocks=12038,
        block_size=16,
    )
    assert s.kv_capacity_tokens == 12038 * 16


def test_vllm_v1_data_parallel_sums_counts_and_averages_usage() -> None:
    s = parse_engine_metrics(load("vllm_v1_dp2.txt"), ts=0.0)
    assert (s.running, s.waiting, s.preemptions_total) == (8, 1, 12.0)
    assert (s.prefix_queries_total, s.prefix_hits_total) == (4000.0, 2000.0)
    assert s.kv_usage == pytest.approx(0.7)
    assert (s.num_gpu_blocks, s.block_size, s.kv_capacity_tokens) == (2000, 16, 32000)


def test_vllm_legacy_names() -> None:
    s = parse_engine_metrics(load("vllm_legacy.txt"), ts=1.0)
    assert s.flavour == "vllm-legacy"
    assert (s.kv_usage, s.running, s.waiting, s.preemptions_total) == (0.97, 12, 6, 77.0)
    assert (s.prefix_queries_total, s.prefix_hits_total) == (5000.0, 1000.0)
    assert s.prompt_tokens_total == 9.5e6
    assert s.kv_capacity_tokens is None


def test_vllm_legacy_counter_without_total_suffix_and_v0_hit_rate_gauge() -> None:
    body = (
        "vllm:gpu_cache_usage_perc 0.5\n"
        "vllm:gpu_prefix_cache_queries 10\n"
        "vllm:gpu_prefix_cache_hits 4\n"
        'vllm:gpu_prefix_cache_hit_rate{model_name="x"} 0.25\n'
    )
    s = parse_engine_metrics(body, ts=0.0)
    assert (s.flavour, s.prefix_queries_total, s.prefix_hits_total, s.prefix_hit_rate_gauge) == (
        "vllm-legacy",
        10.0,
        4.0,
        0.25,
    )


def test_sglang() -> None:
    s = parse_engine_metrics(load("sglang.txt"), ts=3.0)
    assert s.flavour == "sglang"
    assert (s.kv_usage, s.running, s.waiting) == (0.28, 24, 5)
    assert s.prefix_hit_rate_gauge == pytest.approx(0.0075075526)
    assert s.preemptions_total is None and s.prefix_queries_total is None
    assert s.kv_capacity_tokens == 161721
    assert s.prompt_tokens_total == 8128902.0


def test_ignores_longer_names_sharing_a_prefix_timestamps_and_nan() -> None:
    body = (
        "vllm:num_requests_waiting 2 1700000000000\n"
        'vllm:num_requests_waiting_by_reason{reason="capacity"} 99\n'
        "vllm:num_preemptions_created 1.7e9\n"
        "vllm:num_preemptions_total 5\n"
        "vllm:kv_cache_usage_perc NaN\n"
    )
    s = parse_engine_metrics(body, ts=0.0)
    assert (s.waiting, s.preemptions_total, s.kv_usage) == (2, 5.0, None)


def test_label_values_with_spaces_and_braces() -> None:
    body = 'vllm:num_requests_running{model_name="my model {v2}",engine="0"} 4\n'
    assert parse_engine_metrics(body, ts=0.0).running == 4


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", "no vllm: or sglang:"),
        ("<html>502 Bad Gateway</html>", "no vllm: or sglang:"),
        ("up 1\nprocess_cpu_seconds_total 3\n", "no vllm: or sglang:"),
        ('vllm:num_requests_running{engine="0"} abc\n', "line 1: vllm:num_requests_running: bad value"),
        ("vllm:num_requests_running\n", "without a value"),
        ('vllm:num_requests_running{engine="0" 3\n', "unterminated label block"),
        ('vllm:num_requests_running{engine="0"}\n', "without a value"),
    ],
)
def test_garbage_raises_a_clear_error(body: str, match: str) -> None:
    with pytest.raises(MetricsParseError, match=match):
        parse_engine_metrics(body, ts=0.0)


def test_non_text_input() -> None:
    with pytest.raises(MetricsParseError):
        parse_engine_metrics(b"vllm:num_requests_running 1", ts=0.0)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(body: str) -> None:
    try:
        parse_engine_metrics(body, ts=0.0)
    except MetricsParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "vllm:num_requests_running",
                "vllm:kv_cache_usage_perc",
                "sglang:token_usage",
                "vllm:cache_config_info",
                "vllm:prefix_cache_hits_total",
                "vllm:gpu_prefix_cache_queries",
            ]
        ),
        min_size=1,
        max_size=8,
    ),
    st.text(alphabet='{}",= abc01\n.', max_size=40),
)
def test_known_names_with_junk_never_crash(names: list[str], junk: str) -> None:
    body = "\n".join(n + junk for n in names)
    try:
        parse_engine_metrics(body, ts=0.0)
    except MetricsParseError:
        pass
