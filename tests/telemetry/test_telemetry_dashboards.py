"""Dashboards and alert rules, checked without a Prometheus: structure, variables, metric names, promtool."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from promkit import (
    ALERTS,
    DASHBOARDS,
    ROOT,
    alert_queries,
    alert_rules,
    dashboard_queries,
    dashboards,
    metric_names,
    panels,
    substitute,
)

from concurproxy.telemetry.catalog import exposed_names
from concurproxy.telemetry.grafana.__main__ import render

# vLLM engine metrics the replica dashboard reads (names per vLLM V1, see docs/observability.md).
VLLM = {
    "vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:num_preemptions_total", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
}  # fmt: skip


def test_committed_json_is_what_the_generator_writes() -> None:
    files = render()
    assert set(files) == set(dashboards())
    for name, text in files.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} stale: run python -m concurproxy.telemetry.grafana"


def test_expected_dashboards_exist() -> None:
    uids = {b["uid"] for b in dashboards().values()}
    assert uids == {
        "concurproxy-overview",
        "concurproxy-replica",
        "concurproxy-tenants",
        "concurproxy-routing",
    }


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_structure(name: str) -> None:
    board = dashboards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels(board):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            for var in ("replica", "instance", "tenant", "role"):
                if f"${var}" in t["expr"]:
                    assert var in variables, f"{p['title']} uses ${var}, not defined"
    if "replica" in variables:
        assert variables["replica"]["allValue"] == ".*" and variables["replica"]["includeAll"]


def test_overview_has_thrash_annotation_and_key_panels() -> None:
    board = dashboards()["concurproxy-overview.json"]
    titles = {p["title"] for p in panels(board)}
    for want in (
        "Goodput (steps/s)",
        "Step latency",
        "KV usage vs admission window",
        "Queue depth (agents waiting for admission)",
        "Budget rejections",
        "Thrash events (window decreases)",
    ):
        assert want in titles
    exprs = [a.get("expr", "") for a in board["annotations"]["list"]]
    assert any('direction="down"' in e for e in exprs)


@pytest.mark.parametrize("query", dashboard_queries() + alert_queries(), ids=lambda q: q.source)
def test_every_expression_queries_declared_metrics(query: Any) -> None:
    names = metric_names(query.expr)
    assert names, f"no metric in {query.expr}"
    declared = exposed_names() | VLLM | {"up"}
    assert names <= declared, f"undeclared: {names - declared}"
    substitute(query.expr)  # every variable has a substitution


def test_alert_rules_cover_what_should_wake_someone() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "ConcurproxyThrashingSustained",
        "ConcurproxyPressureStale",
        "ConcurproxyReplicaDown",
        "ConcurproxyBudgetRejectionsSpike",
    } <= names
    for r in alert_rules():
        assert r["labels"]["severity"] in {"page", "warning"}
        assert r["annotations"]["summary"]


promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package `prometheus`, installed by scripts/test.sh)",
)


@pytest.mark.prometheus
@promtool
def test_promtool_check_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
@promtool
def test_promtool_alert_unit_tests() -> None:
    tests = ALERTS.parent / "alerts_test.yml"
    out = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _exposed_series(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def test_the_default_policy_exposes_every_series_a_dashboard_queries() -> None:
    """Issue 21 item 13: on the default policy the KV-reserve panels said "No data" (the reserve is off,
    and its gauges were never created). Every queried ``concurproxy_*`` name must be in /metrics, after
    one step, on a proxy wired as ``concurproxy serve`` wires it."""
    import aiohttp

    from concurproxy.config import load_policy
    from concurproxy.server.app import running_proxy
    from concurproxy.server.assembly import build_components
    from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

    queried = {
        n for q in dashboard_queries() + alert_queries() for n in metric_names(q.expr) if n.startswith("concurproxy_")
    }
    async with running_stub(StubBehaviour()) as upstream:
        policy = load_policy(ROOT / "policies" / "default.yaml", overrides={"upstreams": [{"url": upstream}]}, env={})
        async with running_proxy(policy, build_components(policy)) as url, aiohttp.ClientSession() as s:
            body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200, await r.text()
            async with s.get(url + "/metrics") as r:
                exposed = _exposed_series(await r.text())
    assert sorted(queried - exposed) == []
