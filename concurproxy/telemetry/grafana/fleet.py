"""The fleet dashboards: overview (health at a glance) and the per-replica drill-down."""

from __future__ import annotations

from concurproxy.telemetry.grafana.board import (
    INSTANCE_VAR,
    REP,
    REPLICA_VAR,
    RI,
    Board,
    q,
    thrash_annotation,
)


def overview() -> Board:
    b = Board(
        "concurproxy-overview",
        "concurproxy / Overview",
        "Fleet health at a glance: goodput, latency, KV pressure against the admission window, "
        "queues and rejections. Red annotations mark window decreases (thrash back-offs).",
        [REPLICA_VAR],
    )
    thrash_annotation(b)
    ok = 'status=~"2.."'
    b.stat("Goodput (steps/s)", f"sum(rate(concurproxy_requests_total{{{ok}}}[{RI}]))", unit="reqps")
    b.stat("Output tokens/s", f'sum(rate(concurproxy_tokens_total{{direction="output"}}[{RI}]))', unit="short")
    b.stat(
        "Error ratio (5xx)",
        f'(sum(rate(concurproxy_requests_total{{status=~"5.."}}[{RI}])) or vector(0)) / '
        f"clamp_min(sum(rate(concurproxy_requests_total[{RI}])), 1e-9)",
        unit="percentunit",
    )
    b.stat("Replicas healthy", f"sum(concurproxy_replica_healthy{{{REP}}})")
    b.stat("Agents active", f"sum(concurproxy_admission_active_agents{{{REP}}})")
    b.stat("Agents queued", f"sum(concurproxy_admission_queued_agents{{{REP}}})")
    b.row("Throughput and latency")
    b.ts(
        "Steps by status",
        [(f"sum by (status) (rate(concurproxy_requests_total[{RI}]))", "{{status}}")],
        unit="reqps",
    )
    b.ts(
        "Step latency",
        [(q(p, "concurproxy_step_duration_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95, 0.99)],
        unit="s",
        description="Arrival to last byte, queue wait included.",
    )
    b.ts(
        "Time to first token",
        [(q(p, "concurproxy_time_to_first_token_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95)],
        unit="s",
    )
    b.row("KV pressure and admission")
    b.ts(
        "KV usage vs admission window",
        [
            (f"max by (replica) (concurproxy_pressure_kv_usage_ratio{{{REP}}})", "kv {{replica}}"),
            (f"max by (replica) (concurproxy_admission_window{{{REP}}})", "window {{replica}}"),
        ],
        unit="percentunit",
        w=12,
        right_axis="window .*",
        description="KV usage (left, 0..1) and the AIMD window W (right, agents) per replica.",
    )
    b.ts(
        "Queue depth (agents waiting for admission)",
        [(f"sum by (replica) (concurproxy_admission_queued_agents{{{REP}}})", "{{replica}}")],
        w=12,
    )
    b.ts(
        "Thrash events (window decreases)",
        [
            (
                "sum by (replica) (increase(concurproxy_admission_window_changes_total"
                f'{{direction="down",{REP}}}[{RI}]))',
                "{{replica}}",
            )
        ],
        description="Multiplicative back-offs of the window.",
    )
    b.ts(
        "Admission queue wait",
        [(q(p, "concurproxy_queue_wait_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95)],
        unit="s",
    )
    b.ts(
        "Pressure data age",
        [(f"max by (replica) (concurproxy_pressure_snapshot_age_seconds{{{REP}}})", "{{replica}}")],
        unit="s",
        description="Stale pressure throttles admission.",
    )
    b.row("Rejections and errors")
    b.ts(
        "Budget rejections",
        [
            (
                f"sum by (tenant, role, reason) (rate(concurproxy_budget_rejections_total[{RI}]))",
                "{{tenant}}/{{role}} {{reason}}",
            )
        ],
        unit="reqps",
    )
    b.ts(
        "Admission decisions",
        [
            (
                f"sum by (decision, reason) (rate(concurproxy_admission_decisions_total{{{REP}}}[{RI}]))",
                "{{decision}} {{reason}}",
            )
        ],
        unit="reqps",
    )
    b.ts(
        "Upstream errors",
        [
            (
                f"sum by (replica, kind) (rate(concurproxy_upstream_errors_total{{{REP}}}[{RI}]))",
                "{{replica}} {{kind}}",
            )
        ],
        unit="reqps",
    )
    return b


def replica() -> Board:
    b = Board(
        "concurproxy-replica",
        "concurproxy / Replica",
        "One replica (or a few) in depth: the window and what drove it, the pressure the proxy read, "
        "upstream latency and errors, and the engine's own metrics.",
        [REPLICA_VAR, INSTANCE_VAR],
    )
    thrash_annotation(b)
    b.row("Admission window")
    b.ts(
        "Window, active and queued agents",
        [
            (f"concurproxy_admission_window{{{REP}}}", "window {{replica}}"),
            (f"concurproxy_admission_active_agents{{{REP}}}", "active {{replica}}"),
            (f"concurproxy_admission_queued_agents{{{REP}}}", "queued {{replica}}"),
        ],
        w=12,
    )
    b.ts(
        "Window changes",
        [
            (
                f"sum by (replica, direction, reason) (increase("
                f"concurproxy_admission_window_changes_total{{{REP}}}[{RI}]))",
                "{{replica}} {{direction}} {{reason}}",
            )
        ],
        w=12,
    )
    b.row("Pressure as read by the proxy")
    b.ts("KV usage", [(f"concurproxy_pressure_kv_usage_ratio{{{REP}}}", "{{replica}}")], unit="percentunit")
    b.ts(
        "Prefix-cache hit rate",
        [(f"concurproxy_pressure_prefix_hit_ratio{{{REP}}}", "{{replica}}")],
        unit="percentunit",
    )
    b.ts("Preemptions/s", [(f"concurproxy_pressure_preemptions_per_second{{{REP}}}", "{{replica}}")])
    b.ts(
        "Engine running / waiting",
        [
            (f"concurproxy_pressure_running_requests{{{REP}}}", "running {{replica}}"),
            (f"concurproxy_pressure_waiting_requests{{{REP}}}", "waiting {{replica}}"),
        ],
    )
    b.ts("Snapshot age", [(f"concurproxy_pressure_snapshot_age_seconds{{{REP}}}", "{{replica}}")], unit="s")
    b.ts(
        "Poll errors",
        [
            (
                f"sum by (replica, kind) (rate(concurproxy_pressure_poll_errors_total{{{REP}}}[{RI}]))",
                "{{replica}} {{kind}}",
            )
        ],
        unit="reqps",
    )
    b.ts(
        "Prefill cost (decode iterations)",
        [(f"concurproxy_pressure_prefill_iterations{{{REP}}}", "{{replica}}")],
        description="Mean prefill time over mean inter-token latency from the engine's own histograms "
        "(vLLM >= 0.10; 30 s decaying window): how many decode iterations one prefill is worth. Measured, "
        "not acted on (docs/vllm.md).",
    )
    b.row("Upstream")
    b.ts(
        "Upstream latency",
        [
            (
                q(p, "concurproxy_upstream_duration_seconds", by=", replica"),
                f"p{int(p * 100)} {{{{replica}}}}",
            )
            for p in (0.5, 0.95)
        ],
        unit="s",
    )
    b.ts(
        "TTFT p95",
        [(q(0.95, "concurproxy_time_to_first_token_seconds", by=", replica"), "{{replica}}")],
        unit="s",
    )
    b.ts("Health", [(f"concurproxy_replica_healthy{{{REP}}}", "{{replica}}")])
    b.ts(
        "Errors and retries",
        [
            (
                f"sum by (replica, kind) (rate(concurproxy_upstream_errors_total{{{REP}}}[{RI}]))",
                "error {{kind}}",
            ),
            (
                f"sum by (replica, kind) (rate(concurproxy_upstream_retries_total{{{REP}}}[{RI}]))",
                "retry {{kind}}",
            ),
        ],
        unit="reqps",
        w=12,
    )
    b.ts(
        "Routed here, by reason",
        [
            (
                f"sum by (replica, reason) (rate(concurproxy_routing_decisions_total{{{REP}}}[{RI}]))",
                "{{replica}} {{reason}}",
            )
        ],
        unit="reqps",
        w=12,
    )
    inst = 'instance=~"$instance"'
    b.row("Engine (vLLM metrics, scraped directly)")
    b.ts("Engine KV usage", [(f"vllm:kv_cache_usage_perc{{{inst}}}", "{{instance}}")], unit="percentunit")
    b.ts(
        "Engine running / waiting",
        [
            (f"sum by (instance) (vllm:num_requests_running{{{inst}}})", "running {{instance}}"),
            (f"sum by (instance) (vllm:num_requests_waiting{{{inst}}})", "waiting {{instance}}"),
        ],
    )
    b.ts(
        "Engine preemptions/s",
        [(f"sum by (instance) (rate(vllm:num_preemptions_total{{{inst}}}[{RI}]))", "{{instance}}")],
    )
    b.ts(
        "Engine prefix-cache hit rate",
        [
            (
                f"sum by (instance) (rate(vllm:prefix_cache_hits_total{{{inst}}}[{RI}])) / clamp_min("
                f"sum by (instance) (rate(vllm:prefix_cache_queries_total{{{inst}}}[{RI}])), 1e-9)",
                "{{instance}}",
            )
        ],
        unit="percentunit",
    )
    b.ts(
        "Engine TTFT p95",
        [(q(0.95, "vllm:time_to_first_token_seconds", inst, ", instance"), "{{instance}}")],
        unit="s",
    )
    b.ts(
        "Engine tokens/s",
        [
            (f"sum by (instance) (rate(vllm:prompt_tokens_total{{{inst}}}[{RI}]))", "prompt {{instance}}"),
            (
                f"sum by (instance) (rate(vllm:generation_tokens_total{{{inst}}}[{RI}]))",
                "generation {{instance}}",
            ),
        ],
    )
    return b
