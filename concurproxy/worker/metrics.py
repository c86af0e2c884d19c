"""Prometheus exposition of the engine's state under vLLM's exact metric names.

A custom collector reads the engine's counters at scrape time, so the
exported numbers are the engine's own (nothing is counted twice). Each server
builds its own :class:`~prometheus_client.CollectorRegistry` with
:func:`make_registry`; there is no global registry.

Names and label shape follow vLLM V1 (``vllm/v1/metrics/loggers.py``): every
series carries ``{engine="0", model_name="…"}``; counters end in ``_total``;
``vllm:request_success_total`` adds ``finished_reason``; histogram buckets are
vLLM's; ``vllm:cache_config_info`` is a gauge fixed at 1 whose labels describe
the cache. Worker-only series use the ``concurworker_`` prefix. With
``legacy_names`` the pre-0.12 ``vllm:gpu_cache_usage_perc`` and
``vllm:gpu_prefix_cache_{queries,hits}_total`` are exported as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from concurproxy.worker.engine import Engine
from concurproxy.worker.engine.stats import FINISH_REASONS, Histogram

LABELS = ["model_name", "engine"]


class EngineCollector(Collector):
    def __init__(
        self,
        engine: Engine,
        model_name: str,
        engine_index: str = "0",
        gpu_memory_utilization: float = 0.9,
        legacy_names: bool = False,
        host_lag_s: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.host_lag_s = host_lag_s  # the driver's lag (real time only; None in virtual time)
        self.model_name = model_name
        self.engine_index = engine_index
        self.gpu_memory_utilization = gpu_memory_utilization
        self.legacy_names = legacy_names

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=LABELS)
        g.add_metric([self.model_name, self.engine_index], value)
        return g

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=LABELS)
        c.add_metric([self.model_name, self.engine_index], value)
        return c

    def _histogram(self, name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
        f = HistogramMetricFamily(name, doc, labels=LABELS)
        f.add_metric([self.model_name, self.engine_index], h.cumulative(), sum_value=h.total)
        return f

    def collect(self) -> Iterator[Metric]:
        e, s, cfg = self.engine, self.engine.stats, self.engine.config
        yield self._gauge("vllm:num_requests_running", "Number of requests in model execution batches.", e.num_running)
        yield self._gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", e.num_waiting)
        yield self._gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage())
        yield self._counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_queries,
        )
        yield self._counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", s.prefix_hits
        )
        yield self._counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.preemptions)
        yield self._counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        yield self._counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*LABELS, "finished_reason"],
        )
        for reason in FINISH_REASONS:
            success.add_metric([self.model_name, self.engine_index, reason], s.finished.get(reason, 0))
        yield success
        yield self._histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft
        )
        yield self._histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e)
        yield self._histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            s.queue_time,
        )
        yield self._histogram(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", s.prefill_time
        )
        yield self._histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.itl)
        info = {
            "block_size": str(cfg.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(cfg.enable_prefix_caching),
            "gpu_memory_utilization": str(self.gpu_memory_utilization),
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(cfg.num_blocks),
            "engine": self.engine_index,
        }
        cache_info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=list(info)
        )
        cache_info.add_metric(list(info.values()), 1.0)
        yield cache_info
        if self.legacy_names:  # vLLM V1 before ~0.12, for scrapers that must accept both
            yield self._gauge(
                "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", e.kv_usage()
            )
            yield self._counter(
                "vllm:gpu_prefix_cache_queries",
                "GPU prefix cache queries, in terms of number of queried tokens.",
                s.prefix_queries,
            )
            yield self._counter(
                "vllm:gpu_prefix_cache_hits",
                "GPU prefix cache hits, in terms of number of cached tokens.",
                s.prefix_hits,
            )
        # worker-only
        yield self._counter(
            "concurworker_recomputed_prefill_tokens",
            "Prefill tokens recomputed after a preemption.",
            s.recomputed_prefill_tokens,
        )
        yield self._counter(
            "concurworker_evicted_prefix_recompute_tokens",
            "Prefill tokens of full blocks that had been cached and were evicted.",
            s.evicted_prefix_recompute_tokens,
        )
        yield self._counter(
            "concurworker_prefill_tokens",
            "Prefill tokens computed, recomputation included.",
            s.prefill_tokens_computed,
        )
        yield self._counter(
            "concurworker_prefix_cache_evicted_blocks",
            "Cached blocks reused for new content.",
            e.pool.evictions,
        )
        yield self._counter("concurworker_engine_steps", "Engine iterations run.", s.steps)
        yield self._counter("concurworker_engine_busy_seconds", "Engine-clock seconds spent in steps.", s.busy_time)
        if self.host_lag_s is not None:
            yield self._counter(
                "concurworker_host_lag_seconds",
                "Engine-clock seconds the engine was ready to step but waited for the host CPU (a busy host "
                "stretches every latency the worker shows by this much; a real GPU would not wait).",
                self.host_lag_s(),
            )
        yield self._gauge("concurworker_kv_blocks_total", "KV cache blocks.", cfg.num_blocks)
        yield self._gauge(
            "concurworker_kv_blocks_cached", "Blocks holding a reusable cached prefix.", e.pool.num_cached
        )


def make_registry(
    engine: Engine,
    model_name: str,
    gpu_memory_utilization: float = 0.9,
    legacy_names: bool = False,
    host_lag_s: Callable[[], float] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    collector = EngineCollector(
        engine, model_name, gpu_memory_utilization=gpu_memory_utilization, legacy_names=legacy_names,
        host_lag_s=host_lag_s,
    )  # fmt: skip
    registry.register(collector)
    return registry
