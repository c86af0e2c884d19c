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
        "and the fairness counters that order the admission queue.",
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
    return b


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
