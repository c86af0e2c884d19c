"""Generate the concurproxy Grafana dashboards (grafana/dashboards/*.json).

    python grafana/generate.py          # rewrite the JSON files
    python grafana/generate.py --check  # exit 1 if the committed JSON is out of date

Dashboards are code so that every panel is built the same way (datasource and
replica templating, units, legends) and the tests can walk every expression.
Every expression must query a metric declared in concurproxy/telemetry/catalog.py
or a vLLM engine metric (``vllm:...``); tests/telemetry checks both, and the
Prometheus proof test checks each one returns data from a live scrape.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
REP = 'replica=~"$replica"'


class Board:
    """Lays panels out on Grafana's 24-column grid, left to right, top to bottom."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = [datasource_var(), *variables]
        self.panels: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1, "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1}})
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0

    def add(self, kind: str, title: str, targets: list[tuple[str, str]], *, unit: str = "short", w: int = 8,
            h: int = 8, description: str = "", right_axis: str | None = None, **options: Any) -> None:
        if self._x + w > 24:
            self._newline()
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
            "datasource": DS, "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                         "range": True} for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": options or {"legend": {"displayMode": "list", "placement": "bottom"},
                                   "tooltip": {"mode": "multi"}},
        }
        if right_axis:  # series whose legend matches go to a right-hand axis (e.g. window vs KV ratio)
            panel["fieldConfig"]["overrides"].append({
                "matcher": {"id": "byRegexp", "options": right_axis},
                "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "short"}],
            })
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def ts(self, title: str, targets: list[tuple[str, str]], **kw: Any) -> None:
        self.add("timeseries", title, targets, **kw)

    def stat(self, title: str, expr: str, **kw: Any) -> None:
        kw.setdefault("w", 4)
        kw.setdefault("h", 4)
        self.add("stat", title, [(expr, "")], reduceOptions={"calcs": ["lastNotNull"]}, colorMode="value", **kw)

    def annotate(self, name: str, expr: str, color: str) -> None:
        self.annotations.append({"name": name, "datasource": DS, "enable": True, "expr": expr, "iconColor": color,
                                 "step": "15s", "titleFormat": name, "textFormat": "{{replica}} {{reason}}",
                                 "useValueForTime": False})

    def json(self) -> dict[str, Any]:
        builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                   "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                   "type": "dashboard"}
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["concurproxy"],
            "editable": True, "schemaVersion": 39, "version": 1, "refresh": "10s", "timezone": "utc",
            "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
            "annotations": {"list": [builtin, *self.annotations]},
            "templating": {"list": self.variables}, "panels": self.panels,
            "links": [{"type": "dashboards", "tags": ["concurproxy"], "asDropdown": True, "title": "concurproxy"}],
        }


def datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1}


def query_var(name: str, query: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query, "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
            "sort": 1, "hide": 0}


REPLICA_VAR = query_var("replica", "label_values(concurproxy_replica_healthy, replica)", "Replica")
INSTANCE_VAR = query_var("instance", "label_values(vllm:num_requests_running, instance)", "Engine instance")
TENANT_VAR = query_var("tenant", "label_values(concurproxy_tokens_total, tenant)", "Tenant")
ROLE_VAR = query_var("role", "label_values(concurproxy_tokens_total, role)", "Role")


def q(p: float, metric: str, sel: str = REP, by: str = "") -> str:
    return f"histogram_quantile({p}, sum by (le{by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def thrash_annotation(b: Board) -> None:
    b.annotate("Window decrease (thrash)",
               f'sum by (replica, reason) (increase(concurproxy_admission_window_changes_total'
               f'{{direction="down",{REP}}}[1m])) > 0', "red")


def overview() -> Board:
    b = Board("concurproxy-overview", "concurproxy / Overview",
              "Fleet health at a glance: goodput, latency, KV pressure against the admission window, "
              "queues and rejections. Red annotations mark window decreases (thrash back-offs).", [REPLICA_VAR])
    thrash_annotation(b)
    ok = 'status=~"2.."'
    b.stat("Goodput (steps/s)", f"sum(rate(concurproxy_requests_total{{{ok}}}[{RI}]))", unit="reqps")
    b.stat("Output tokens/s", f'sum(rate(concurproxy_tokens_total{{direction="output"}}[{RI}]))', unit="short")
    b.stat("Error ratio (5xx)",
           f'(sum(rate(concurproxy_requests_total{{status=~"5.."}}[{RI}])) or vector(0)) / '
           f"clamp_min(sum(rate(concurproxy_requests_total[{RI}])), 1e-9)", unit="percentunit")
    b.stat("Replicas healthy", f"sum(concurproxy_replica_healthy{{{REP}}})")
    b.stat("Agents active", f"sum(concurproxy_admission_active_agents{{{REP}}})")
    b.stat("Agents queued", f"sum(concurproxy_admission_queued_agents{{{REP}}})")
    b.row("Throughput and latency")
    b.ts("Steps by status", [(f"sum by (status) (rate(concurproxy_requests_total[{RI}]))", "{{status}}")],
         unit="reqps")
    b.ts("Step latency", [(q(p, "concurproxy_step_duration_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95, 0.99)],
         unit="s", description="Arrival to last byte, queue wait included.")
    b.ts("Time to first token", [(q(p, "concurproxy_time_to_first_token_seconds"), f"p{int(p * 100)}")
                                 for p in (0.5, 0.95)], unit="s")
    b.row("KV pressure and admission")
    b.ts("KV usage vs admission window", [
        (f"max by (replica) (concurproxy_pressure_kv_usage_ratio{{{REP}}})", "kv {{replica}}"),
        (f"max by (replica) (concurproxy_admission_window{{{REP}}})", "window {{replica}}"),
    ], unit="percentunit", w=12, right_axis="window .*",
         description="KV usage (left, 0..1) and the AIMD window W (right, agents) per replica.")
    b.ts("Queue depth (agents waiting for admission)",
         [(f"sum by (replica) (concurproxy_admission_queued_agents{{{REP}}})", "{{replica}}")], w=12)
    b.ts("Thrash events (window decreases)",
         [(f'sum by (replica) (increase(concurproxy_admission_window_changes_total{{direction="down",{REP}}}'
           f"[{RI}]))", "{{replica}}")], description="Multiplicative back-offs of the window.")
    b.ts("Admission queue wait", [(q(p, "concurproxy_queue_wait_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95)],
         unit="s")
    b.ts("Pressure data age", [(f"max by (replica) (concurproxy_pressure_snapshot_age_seconds{{{REP}}})",
                                "{{replica}}")], unit="s", description="Stale pressure throttles admission.")
    b.row("Rejections and errors")
    b.ts("Budget rejections", [(f"sum by (tenant, role, reason) (rate(concurproxy_budget_rejections_total[{RI}]))",
                                "{{tenant}}/{{role}} {{reason}}")], unit="reqps")
    b.ts("Admission decisions", [(f"sum by (decision, reason) (rate(concurproxy_admission_decisions_total"
                                  f"{{{REP}}}[{RI}]))", "{{decision}} {{reason}}")], unit="reqps")
    b.ts("Upstream errors", [(f"sum by (replica, kind) (rate(concurproxy_upstream_errors_total{{{REP}}}[{RI}]))",
                              "{{replica}} {{kind}}")], unit="reqps")
    return b


def replica() -> Board:
    b = Board("concurproxy-replica", "concurproxy / Replica",
              "One replica (or a few) in depth: the window and what drove it, the pressure the proxy read, "
              "upstream latency and errors, and the engine's own metrics.", [REPLICA_VAR, INSTANCE_VAR])
    thrash_annotation(b)
    b.row("Admission window")
    b.ts("Window, active and queued agents", [
        (f"concurproxy_admission_window{{{REP}}}", "window {{replica}}"),
        (f"concurproxy_admission_active_agents{{{REP}}}", "active {{replica}}"),
        (f"concurproxy_admission_queued_agents{{{REP}}}", "queued {{replica}}")], w=12)
    b.ts("Window changes", [(f"sum by (replica, direction, reason) (increase("
                             f"concurproxy_admission_window_changes_total{{{REP}}}[{RI}]))",
                             "{{replica}} {{direction}} {{reason}}")], w=12)
    b.row("Pressure as read by the proxy")
    b.ts("KV usage", [(f"concurproxy_pressure_kv_usage_ratio{{{REP}}}", "{{replica}}")], unit="percentunit")
    b.ts("Prefix-cache hit rate", [(f"concurproxy_pressure_prefix_hit_ratio{{{REP}}}", "{{replica}}")],
         unit="percentunit")
    b.ts("Preemptions/s", [(f"concurproxy_pressure_preemptions_per_second{{{REP}}}", "{{replica}}")])
    b.ts("Engine running / waiting", [
        (f"concurproxy_pressure_running_requests{{{REP}}}", "running {{replica}}"),
        (f"concurproxy_pressure_waiting_requests{{{REP}}}", "waiting {{replica}}")])
    b.ts("Snapshot age", [(f"concurproxy_pressure_snapshot_age_seconds{{{REP}}}", "{{replica}}")], unit="s")
    b.ts("Poll errors", [(f"sum by (replica, kind) (rate(concurproxy_pressure_poll_errors_total{{{REP}}}[{RI}]))",
                          "{{replica}} {{kind}}")], unit="reqps")
    b.row("Upstream")
    b.ts("Upstream latency", [(q(p, "concurproxy_upstream_duration_seconds", by=", replica"),
                               f"p{int(p * 100)} {{{{replica}}}}") for p in (0.5, 0.95)], unit="s")
    b.ts("TTFT p95", [(q(0.95, "concurproxy_time_to_first_token_seconds", by=", replica"), "{{replica}}")],
         unit="s")
    b.ts("Health", [(f"concurproxy_replica_healthy{{{REP}}}", "{{replica}}")])
    b.ts("Errors and retries", [
        (f"sum by (replica, kind) (rate(concurproxy_upstream_errors_total{{{REP}}}[{RI}]))", "error {{kind}}"),
        (f"sum by (replica, kind) (rate(concurproxy_upstream_retries_total{{{REP}}}[{RI}]))", "retry {{kind}}")],
         unit="reqps", w=12)
    b.ts("Routed here, by reason", [(f"sum by (replica, reason) (rate(concurproxy_routing_decisions_total"
                                     f"{{{REP}}}[{RI}]))", "{{replica}} {{reason}}")], unit="reqps", w=12)
    inst = 'instance=~"$instance"'
    b.row("Engine (vLLM metrics, scraped directly)")
    b.ts("Engine KV usage", [(f"vllm:kv_cache_usage_perc{{{inst}}}", "{{instance}}")], unit="percentunit")
    b.ts("Engine running / waiting", [
        (f"sum by (instance) (vllm:num_requests_running{{{inst}}})", "running {{instance}}"),
        (f"sum by (instance) (vllm:num_requests_waiting{{{inst}}})", "waiting {{instance}}")])
    b.ts("Engine preemptions/s", [(f"sum by (instance) (rate(vllm:num_preemptions_total{{{inst}}}[{RI}]))",
                                   "{{instance}}")])
    b.ts("Engine prefix-cache hit rate", [
        (f"sum by (instance) (rate(vllm:prefix_cache_hits_total{{{inst}}}[{RI}])) / clamp_min(sum by (instance) "
         f"(rate(vllm:prefix_cache_queries_total{{{inst}}}[{RI}])), 1e-9)", "{{instance}}")], unit="percentunit")
    b.ts("Engine TTFT p95", [(q(0.95, "vllm:time_to_first_token_seconds", inst, ", instance"), "{{instance}}")],
         unit="s")
    b.ts("Engine tokens/s", [
        (f"sum by (instance) (rate(vllm:prompt_tokens_total{{{inst}}}[{RI}]))", "prompt {{instance}}"),
        (f"sum by (instance) (rate(vllm:generation_tokens_total{{{inst}}}[{RI}]))", "generation {{instance}}")])
    return b


def tenants() -> Board:
    tr = 'tenant=~"$tenant",role=~"$role"'
    b = Board("concurproxy-tenants", "concurproxy / Tenants, roles, budgets, fairness",
              "Who is served and who is refused: traffic, tokens, budget use and rejections per tenant and role, "
              "and the fairness counters that order the admission queue.", [TENANT_VAR, ROLE_VAR])
    b.ts("Steps by tenant/role/status", [(f"sum by (tenant, role, status) (rate(concurproxy_requests_total{{{tr}}}"
                                          f"[{RI}]))", "{{tenant}}/{{role}} {{status}}")], unit="reqps", w=12)
    b.ts("Tokens/s by tenant/role", [(f"sum by (tenant, role, direction) (rate(concurproxy_tokens_total{{{tr}}}"
                                      f"[{RI}]))", "{{tenant}}/{{role}} {{direction}}")], w=12)
    b.ts("Budget consumption (tokens/s)", [(f"sum by (tenant, role) (rate(concurproxy_budget_consumed_tokens_total"
                                            f"{{{tr}}}[{RI}]))", "{{tenant}}/{{role}}")], w=12)
    b.ts("Budget rejections", [(f"sum by (tenant, role, reason) (rate(concurproxy_budget_rejections_total{{{tr}}}"
                                f"[{RI}]))", "{{tenant}}/{{role}} {{reason}}")], unit="reqps", w=12)
    b.ts("Fairness virtual counters", [('concurproxy_fairness_virtual_tokens{tenant=~"$tenant"}', "{{tenant}}")],
         w=12, description="VTC: weighted tokens served / tenant weight. The lowest backlogged tenant goes next.")
    b.ts("Fairness spread (max - min)", [('max(concurproxy_fairness_virtual_tokens{tenant=~"$tenant"}) - '
                                          'min(concurproxy_fairness_virtual_tokens{tenant=~"$tenant"})', "spread")],
         w=12, description="Bounded for a fair scheduler; growing means one tenant is starved.")
    b.ts("Queue wait p95 by role", [(q(0.95, "concurproxy_queue_wait_seconds", 'role=~"$role"', ", role"),
                                     "{{role}}")], unit="s", w=12)
    b.ts("Step latency p95 by role", [(q(0.95, "concurproxy_step_duration_seconds", 'role=~"$role"', ", role"),
                                       "{{role}}")], unit="s", w=12)
    return b


def routing() -> Board:
    b = Board("concurproxy-routing", "concurproxy / Routing",
              "Where steps go and why: scorer decisions, session pins, expected prefix-cache reuse, re-pins.",
              [REPLICA_VAR])
    b.ts("Decisions by replica and reason", [(f"sum by (replica, reason) (rate(concurproxy_routing_decisions_total"
                                              f"{{{REP}}}[{RI}]))", "{{replica}} {{reason}}")], unit="reqps", w=12)
    b.ts("Pin hit ratio", [(f"sum(rate(concurproxy_routing_pin_hits_total{{{REP}}}[{RI}])) / clamp_min(sum(rate("
                            f"concurproxy_routing_decisions_total{{{REP}}}[{RI}])), 1e-9)", "pin hits")],
         unit="percentunit", w=12)
    b.ts("Prefix-match tokens/s", [(f"sum by (replica) (rate(concurproxy_routing_prefix_match_tokens_total{{{REP}}}"
                                    f"[{RI}]))", "{{replica}}")], w=12)
    b.ts("Expected prefix reuse (matched / prompt tokens)", [
        (f"sum(rate(concurproxy_routing_prefix_match_tokens_total[{RI}])) / clamp_min(sum(rate("
         f'concurproxy_tokens_total{{direction="input"}}[{RI}])), 1e-9)', "matched fraction")],
         unit="percentunit", w=12)
    b.ts("Re-pins by reason", [(f"sum by (reason) (rate(concurproxy_routing_repins_total[{RI}]))", "{{reason}}")],
         unit="reqps", w=12)
    b.ts("Load per replica (engine running)", [
        (f"concurproxy_pressure_running_requests{{{REP}}}", "{{replica}}")], w=12)
    return b


BOARDS = (overview, replica, tenants, routing)


def render() -> dict[str, str]:
    out = {}
    for make in BOARDS:
        board = make()
        out[f"{board.uid}.json"] = json.dumps(board.json(), indent=2) + "\n"
    return out


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        if stale:
            print("out of date (run python grafana/generate.py):", ", ".join(stale))
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print("wrote", OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
