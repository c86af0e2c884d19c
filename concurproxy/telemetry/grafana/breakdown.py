"""Drill-downs by dimension: tenants/roles (budgets, fairness) and routing."""

from __future__ import annotations

from concurproxy.telemetry.grafana.board import (
    REP,
    REPLICA_VAR,
    RI,
    ROLE_VAR,
    TENANT_VAR,
    Board,
    q,
)


def tenants() -> Board:
    tr = 'tenant=~"$tenant",role=~"$role"'
    b = Board(
        "concurproxy-tenants",
        "concurproxy / Tenants, roles, budgets, fairness",
        "Who is served and who is refused: traffic, tokens, budget use and rejections per tenant and role, "
        "the fairness counters that order the admission queue, and what dispatch holds back for control steps.",
        [TENANT_VAR, ROLE_VAR],
    )
    b.ts(
        "Steps by tenant/role/status",
        [
            (
                f"sum by (tenant, role, status) (rate(concurproxy_requests_total{{{tr}}}[{RI}]))",
                "{{tenant}}/{{role}} {{status}}",
            )
        ],
        unit="reqps",
        w=12,
    )
    b.ts(
        "Tokens/s by tenant/role",
        [
            (
                f"sum by (tenant, role, direction) (rate(concurproxy_tokens_total{{{tr}}}[{RI}]))",
                "{{tenant}}/{{role}} {{direction}}",
            )
        ],
        w=12,
    )
    b.ts(
        "Budget consumption (tokens/s)",
        [
            (
                f"sum by (tenant, role) (rate(concurproxy_budget_consumed_tokens_total{{{tr}}}[{RI}]))",
                "{{tenant}}/{{role}}",
            )
        ],
        w=12,
    )
    b.ts(
        "Budget rejections",
        [
            (
                f"sum by (tenant, role, reason) (rate(concurproxy_budget_rejections_total{{{tr}}}[{RI}]))",
                "{{tenant}}/{{role}} {{reason}}",
            )
        ],
        unit="reqps",
        w=12,
    )
    b.ts(
        "Fairness virtual counters",
        [('concurproxy_fairness_virtual_tokens{tenant=~"$tenant"}', "{{tenant}}")],
        w=12,
        description="VTC: weighted tokens served / tenant weight. The lowest backlogged tenant goes next.",
    )
    b.ts(
        "Fairness spread (max - min)",
        [
            (
                'max(concurproxy_fairness_virtual_tokens{tenant=~"$tenant"}) - '
                'min(concurproxy_fairness_virtual_tokens{tenant=~"$tenant"})',
                "spread",
            )
        ],
        w=12,
        description="Bounded for a fair scheduler; growing means one tenant is starved.",
    )
    b.ts(
        "Queue wait p95 by role",
        [(q(0.95, "concurproxy_queue_wait_seconds", 'role=~"$role"', ", role"), "{{role}}")],
        unit="s",
        w=12,
    )
    b.ts(
        "Step latency p95 by role",
        [(q(0.95, "concurproxy_step_duration_seconds", 'role=~"$role"', ", role"), "{{role}}")],
        unit="s",
        w=12,
    )
    dispatch(b)
    return b


def dispatch(b: Board) -> None:
    """What the prefill gate and the KV reserve hold back for control steps (fairness.protect_priority)."""
    b.row("Dispatch: prefill gate and KV reserve")
    b.ts(
        "Steps held at dispatch",
        [
            (f"sum by (stage) (rate(concurproxy_dispatch_held_total[{RI}]))", "held {{stage}}"),
            (f"sum by (stage) (rate(concurproxy_dispatch_forced_total[{RI}]))", "forced {{stage}}"),
        ],
        unit="reqps",
        description="Held: a long prefill waited for a control step (prefill_gate) or a step waited for the KV "
        "headroom kept for control steps (kv_reserve). Forced: sent at the hold bound, not released; forced close "
        "to held means the bound, not the rule, decides.",
    )
    b.ts(
        "Dispatch wait p95 (held steps)",
        [(q(0.95, "concurproxy_dispatch_wait_seconds", 'stage=~".+"', ", stage"), "{{stage}}")],
        unit="s",
        description="Only steps that waited are observed; bounded by max_prefill_hold_s / kv_reserve_max_hold_s.",
    )
    b.ts(
        "KV reserve: footprint in flight vs limit",
        [
            ("sum by (replica) (concurproxy_dispatch_reserve_in_flight_tokens)", "in flight {{replica}}"),
            ("max by (replica) (concurproxy_dispatch_reserve_limit_tokens)", "limit {{replica}}"),
        ],
        description="Prompt + max_tokens of the steps the reserve limits; while control steps are about, a step "
        "that would pass the limit (capacity x (1 - kv_reserve)) waits.",
    )


def routing() -> Board:
    b = Board(
        "concurproxy-routing",
        "concurproxy / Routing",
        "Where steps go and why: scorer decisions, session pins, expected prefix-cache reuse, re-pins.",
        [REPLICA_VAR],
    )
    b.ts(
        "Decisions by replica and reason",
        [
            (
                f"sum by (replica, reason) (rate(concurproxy_routing_decisions_total{{{REP}}}[{RI}]))",
                "{{replica}} {{reason}}",
            )
        ],
        unit="reqps",
        w=12,
    )
    b.ts(
        "Pin hit ratio",
        [
            (
                f"sum(rate(concurproxy_routing_pin_hits_total{{{REP}}}[{RI}])) / clamp_min(sum(rate("
                f"concurproxy_routing_decisions_total{{{REP}}}[{RI}])), 1e-9)",
                "pin hits",
            )
        ],
        unit="percentunit",
        w=12,
    )
    b.ts(
        "Prefix-match tokens/s",
        [
            (
                f"sum by (replica) (rate(concurproxy_routing_prefix_match_tokens_total{{{REP}}}[{RI}]))",
                "{{replica}}",
            )
        ],
        w=12,
    )
    b.ts(
        "Expected prefix reuse (matched / prompt tokens)",
        [
            (
                f"sum(rate(concurproxy_routing_prefix_match_tokens_total[{RI}])) / clamp_min(sum(rate("
                f'concurproxy_tokens_total{{direction="input"}}[{RI}])), 1e-9)',
                "matched fraction",
            )
        ],
        unit="percentunit",
        w=12,
    )
    b.ts(
        "Re-pins by reason",
        [(f"sum by (reason) (rate(concurproxy_routing_repins_total[{RI}]))", "{{reason}}")],
        unit="reqps",
        w=12,
    )
    b.ts(
        "Load per replica (engine running)",
        [(f"concurproxy_pressure_running_requests{{{REP}}}", "{{replica}}")],
        w=12,
    )
    return b
