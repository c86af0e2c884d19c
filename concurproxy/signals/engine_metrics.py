"""Parse an engine's Prometheus text exposition into one timestamped :class:`EngineSample`.

Algorithm
    A hand-written line scanner: it splits the body into lines and only looks
    at lines that start with one of the metric names we need
    (``str.startswith`` with a tuple, in C); every other line — ``# HELP``,
    ``# TYPE``, the many histogram buckets — is skipped without being
    tokenised. For a wanted line the value is the first field after the label
    block (an optional trailing timestamp is ignored). Only
    ``vllm:cache_config_info`` has its labels parsed (``num_gpu_blocks``,
    ``block_size``). This is ~10× faster than ``prometheus_client``'s parser
    on a real vLLM body (see docs/node-agent.md for the measurement), which
    matters because the proxy polls every replica every 250 ms.

Aggregation over data-parallel engines
    vLLM V1 labels each sample with ``engine="<rank>"``; SGLang with
    ``dp_rank``. Counts and counters are **summed** over all samples of a
    name; fractions (KV usage, SGLang's cache hit rate) are **averaged**
    (equal-sized engines: the mean is used/total of the whole replica);
    ``num_gpu_blocks`` is summed, ``block_size`` taken from the first.

Names accepted (flavour)
    ``vllm``        — V1: ``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_{queries,hits}_total``…
    ``vllm-legacy`` — ``vllm:gpu_cache_usage_perc``, ``vllm:gpu_prefix_cache_{queries,hits}[_total]``,
                      V0's ``vllm:gpu_prefix_cache_hit_rate`` gauge.
    both vLLM flavours, when exported (vLLM >= 0.10): ``vllm:request_prefill_time_seconds`` and
                      ``vllm:inter_token_latency_seconds`` (``time_per_output_token`` before ~0.11)
                      histograms' ``_sum``/``_count``, what a prefill costs in decode iterations.
    ``sglang``      — ``sglang:token_usage``, ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``,
                      ``sglang:cache_hit_rate`` (a gauge), ``sglang:max_total_num_tokens``.

Pure: no I/O, no clock; the caller passes ``ts``. Bad input raises
:class:`MetricsParseError` (a ``ValueError``) with the line number, never
anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Flavour = Literal["vllm", "vllm-legacy", "sglang"]


class MetricsParseError(ValueError):
    """The body is not a Prometheus exposition of a known engine."""


@dataclass(frozen=True, slots=True)
class EngineSample:
    """Engine state read at ``ts`` (the caller's clock). ``None`` = not exported."""

    ts: float
    flavour: Flavour
    kv_usage: float | None = None  # 0..1
    running: int | None = None
    waiting: int | None = None
    preemptions_total: float | None = None
    prefix_queries_total: float | None = None  # tokens (vLLM)
    prefix_hits_total: float | None = None  # tokens (vLLM)
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    prefix_hit_rate_gauge: float | None = None  # engines that export a ratio (SGLang, vLLM V0)
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_total_tokens: int | None = None  # SGLang's capacity in tokens
    prefill_seconds_total: float | None = None  # Σ requests' PREFILL phase (vLLM histogram _sum)
    prefills_total: float | None = None  # its _count
    itl_seconds_total: float | None = None  # Σ inter-token latencies (vLLM histogram _sum)
    itls_total: float | None = None  # its _count

    @property
    def kv_capacity_tokens(self) -> int | None:
        if self.num_gpu_blocks is not None and self.block_size is not None:
            return self.num_gpu_blocks * self.block_size
        return self.max_total_tokens


# exposition name -> (field, flavour hint, how to aggregate over engines)
_SUM, _MEAN = "sum", "mean"
_NAMES: dict[str, tuple[str, str | None, str]] = {
    # vLLM V1
    "vllm:kv_cache_usage_perc": ("kv_usage", "vllm", _MEAN),
    "vllm:num_requests_running": ("running", None, _SUM),
    "vllm:num_requests_waiting": ("waiting", None, _SUM),
    "vllm:num_preemptions_total": ("preemptions_total", None, _SUM),
    "vllm:prefix_cache_queries_total": ("prefix_queries_total", "vllm", _SUM),
    "vllm:prefix_cache_hits_total": ("prefix_hits_total", "vllm", _SUM),
    "vllm:prompt_tokens_total": ("prompt_tokens_total", None, _SUM),
    "vllm:generation_tokens_total": ("generation_tokens_total", None, _SUM),
    # what a prefill costs in decode iterations (signals/cost.py): vLLM >= 0.10; both names of the inter-token
    # histogram at once (0.10-0.11) double its sum and count alike, so the mean is unchanged
    "vllm:request_prefill_time_seconds_sum": ("prefill_seconds_total", None, _SUM),
    "vllm:request_prefill_time_seconds_count": ("prefills_total", None, _SUM),
    "vllm:inter_token_latency_seconds_sum": ("itl_seconds_total", None, _SUM),
    "vllm:inter_token_latency_seconds_count": ("itls_total", None, _SUM),
    "vllm:time_per_output_token_seconds_sum": ("itl_seconds_total", None, _SUM),  # its name before ~0.11
    "vllm:time_per_output_token_seconds_count": ("itls_total", None, _SUM),
    # vLLM, older names (V0 and V1 before ~0.12)
    "vllm:gpu_cache_usage_perc": ("kv_usage", "vllm-legacy", _MEAN),
    "vllm:gpu_prefix_cache_queries_total": ("prefix_queries_total", "vllm-legacy", _SUM),
    "vllm:gpu_prefix_cache_queries": ("prefix_queries_total", "vllm-legacy", _SUM),
    "vllm:gpu_prefix_cache_hits_total": ("prefix_hits_total", "vllm-legacy", _SUM),
    "vllm:gpu_prefix_cache_hits": ("prefix_hits_total", "vllm-legacy", _SUM),
    "vllm:gpu_prefix_cache_hit_rate": ("prefix_hit_rate_gauge", "vllm-legacy", _MEAN),
    # SGLang
    "sglang:token_usage": ("kv_usage", "sglang", _MEAN),
    "sglang:num_running_reqs": ("running", "sglang", _SUM),
    "sglang:num_queue_reqs": ("waiting", "sglang", _SUM),
    "sglang:cache_hit_rate": ("prefix_hit_rate_gauge", "sglang", _MEAN),
    "sglang:prompt_tokens_total": ("prompt_tokens_total", "sglang", _SUM),
    "sglang:generation_tokens_total": ("generation_tokens_total", "sglang", _SUM),
    "sglang:max_total_num_tokens": ("max_total_tokens", "sglang", _SUM),
}
_CACHE_INFO = "vllm:cache_config_info"
_PREFIXES = (*_NAMES, _CACHE_INFO)
_INT_FIELDS = frozenset({"running", "waiting", "max_total_tokens"})


def _split_sample(line: str, lineno: int) -> tuple[str, str, str]:
    """Return (name, label block without braces, value text) of one sample line."""
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        close = line.rfind("}")
        if close < brace:
            raise MetricsParseError(f"line {lineno}: unterminated label block: {line[:120]!r}")
        name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    elif space != -1:
        name, labels, rest = line[:space], "", line[space:]
    else:
        raise MetricsParseError(f"line {lineno}: sample without a value: {line[:120]!r}")
    fields = rest.split()
    if not fields:
        raise MetricsParseError(f"line {lineno}: sample without a value: {line[:120]!r}")
    return name, labels, fields[0]


def _labels(block: str) -> dict[str, str]:
    """Minimal label parser (values without escaped quotes are all we need here)."""
    out: dict[str, str] = {}
    for part in block.split('",'):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().strip(",")] = value.strip().strip('"')
    return out


def _to_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_engine_metrics(text: str, ts: float) -> EngineSample:
    """Parse one ``/metrics`` body read at ``ts``. Raises :class:`MetricsParseError`."""
    if not isinstance(text, str):
        raise MetricsParseError(f"expected text, got {type(text).__name__}")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    flavours: set[str] = set()
    blocks: int | None = None
    block_size: int | None = None
    seen_any = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith(_PREFIXES):
            continue
        name, label_block, value_text = _split_sample(line, lineno)
        if name == _CACHE_INFO:
            labels = _labels(label_block)
            nb = _to_int(labels.get("num_gpu_blocks"))
            if nb is not None:
                blocks = nb + (blocks or 0)
            if block_size is None:
                block_size = _to_int(labels.get("block_size"))
            flavours.add("vllm-info")
            continue
        spec = _NAMES.get(name)
        if spec is None:  # a longer name sharing a prefix (…_created, …_by_reason)
            continue
        try:
            value = float(value_text)
        except ValueError:
            raise MetricsParseError(f"line {lineno}: {name}: bad value {value_text[:40]!r}") from None
        seen_any = True
        field, hint, _ = spec
        if hint is not None:
            flavours.add(hint)
        if math.isnan(value):
            continue
        sums[field] = sums.get(field, 0.0) + value
        counts[field] = counts.get(field, 0) + 1
    if not seen_any:
        raise MetricsParseError("no vllm: or sglang: engine metrics found in the body")
    values: dict[str, float | int | None] = {}
    for field, _, how in _NAMES.values():
        if field in values or field not in sums:
            continue
        total = sums[field]
        agg = total / counts[field] if how == _MEAN else total
        values[field] = int(agg) if field in _INT_FIELDS else agg
    if "sglang" in flavours:
        flavour: Flavour = "sglang"
    elif "vllm-legacy" in flavours and "vllm" not in flavours:
        flavour = "vllm-legacy"
    else:
        flavour = "vllm"
    return EngineSample(ts=ts, flavour=flavour, num_gpu_blocks=blocks, block_size=block_size, **values)  # type: ignore[arg-type]
