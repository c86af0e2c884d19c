"""Hand-written engine metrics parser vs prometheus_client's parser.

    python -m benchmarks.metrics_parse [ENGINES]

Builds a vLLM V1 body shaped like a real one (the gauges/counters we read, 12 histograms
with vLLM's bucket counts, process/python metrics), per data-parallel engine.
"""

from __future__ import annotations

import argparse
import timeit
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from concurproxy.signals.engine_metrics import parse_engine_metrics

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "signals" / "fixtures"


def realistic_vllm_body(engines: int = 1) -> str:
    base = (FIXTURES / "vllm_v1.txt").read_text()
    lines = [base]
    model = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'
    hists = [
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_inference_time_seconds",
        "request_prefill_time_seconds",
        "request_decode_time_seconds",
        "request_prompt_tokens",
        "request_generation_tokens",
        "request_max_num_generation_tokens",
        "request_params_n",
        "iteration_tokens_total",
    ]
    for e in range(engines):
        for h in hists:
            lines.append(f"# HELP vllm:{h} Histogram of {h}.\n# TYPE vllm:{h} histogram")
            for i in range(30):
                lines.append(f'vllm:{h}_bucket{{engine="{e}",le="{0.001 * 2**i:g}",{model}}} {i * 3.0}')
            lines.append(f'vllm:{h}_bucket{{engine="{e}",le="+Inf",{model}}} 100.0')
            lines.append(f'vllm:{h}_count{{engine="{e}",{model}}} 100.0')
            lines.append(f'vllm:{h}_sum{{engine="{e}",{model}}} 12.5')
    for i in range(40):
        lines.append(f"process_metric_{i} {i}.0")
    return "\n".join(lines) + "\n"


WANTED = {
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:num_preemptions",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
}


def with_prometheus_client(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in WANTED:
            for s in fam.samples:
                if not s.name.endswith("_created"):
                    out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.metrics_parse", description=__doc__.split("\n")[0])
    ap.add_argument("engines", nargs="?", type=int, default=1, help="data-parallel engines in the body (default 1)")
    engines = ap.parse_args(argv).engines
    body = realistic_vllm_body(engines)
    n = 200
    ours = min(timeit.repeat(lambda: parse_engine_metrics(body, 0.0), number=n, repeat=3)) / n
    ref = min(timeit.repeat(lambda: with_prometheus_client(body), number=20, repeat=3)) / 20
    print(f"body: {len(body.splitlines())} lines, {len(body) / 1024:.1f} KiB, {engines} engine(s)")
    print(f"hand-written parser : {ours * 1e6:8.1f} µs/parse")
    print(f"prometheus_client   : {ref * 1e6:8.1f} µs/parse  ({ref / ours:.0f}x slower)")


if __name__ == "__main__":
    main()
