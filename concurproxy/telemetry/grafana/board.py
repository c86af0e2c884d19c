"""Board: a small builder for Grafana dashboard JSON on a 24-column grid.

Every panel gets the ``${datasource}`` template datasource, and every target its
PromQL ``expr``; the dashboard modules (``fleet``, ``breakdown``) only say what to
plot. Variables: ``$datasource`` always, plus query variables with an "All"
option whose value is ``.*`` (so a selector ``replica=~"$replica"`` matches all).
"""

from __future__ import annotations

from typing import Any

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
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "id": len(self.panels) + 1,
                "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1},
            }
        )
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0

    def add(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 8,
        h: int = 8,
        description: str = "",
        right_axis: str | None = None,
        **options: Any,
    ) -> None:
        if self._x + w > 24:
            self._newline()
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": [
                {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": options
            or {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        }
        if right_axis:  # series whose legend matches go to a right-hand axis (e.g. window vs KV ratio)
            panel["fieldConfig"]["overrides"].append(
                {
                    "matcher": {"id": "byRegexp", "options": right_axis},
                    "properties": [
                        {"id": "custom.axisPlacement", "value": "right"},
                        {"id": "unit", "value": "short"},
                    ],
                }
            )
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
        self.annotations.append(
            {
                "name": name,
                "datasource": DS,
                "enable": True,
                "expr": expr,
                "iconColor": color,
                "step": "15s",
                "titleFormat": name,
                "textFormat": "{{replica}} {{reason}}",
                "useValueForTime": False,
            }
        )

    def json(self) -> dict[str, Any]:
        builtin = {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["concurproxy"],
            "editable": True,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "10s",
            "timezone": "utc",
            "time": {"from": "now-1h", "to": "now"},
            "graphTooltip": 1,
            "annotations": {"list": [builtin, *self.annotations]},
            "templating": {"list": self.variables},
            "panels": self.panels,
            "links": [{"type": "dashboards", "tags": ["concurproxy"], "asDropdown": True, "title": "concurproxy"}],
        }


def datasource_var() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
    }


def query_var(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
        "hide": 0,
    }


REPLICA_VAR = query_var("replica", "label_values(concurproxy_replica_healthy, replica)", "Replica")
INSTANCE_VAR = query_var("instance", "label_values(vllm:num_requests_running, instance)", "Engine instance")
TENANT_VAR = query_var("tenant", "label_values(concurproxy_tokens_total, tenant)", "Tenant")
ROLE_VAR = query_var("role", "label_values(concurproxy_tokens_total, role)", "Role")


def q(p: float, metric: str, sel: str = REP, by: str = "") -> str:
    return f"histogram_quantile({p}, sum by (le{by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def thrash_annotation(b: Board) -> None:
    b.annotate(
        "Window decrease (thrash)",
        f"sum by (replica, reason) (increase(concurproxy_admission_window_changes_total"
        f'{{direction="down",{REP}}}[1m])) > 0',
        "red",
    )
