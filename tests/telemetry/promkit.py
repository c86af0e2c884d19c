"""Helpers for the dashboard/alert tests: walk dashboards, substitute variables, run a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Grafana variables as the proof test substitutes them ("All" for template variables).
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$replica": ".*",
    "$instance": ".*",
    "$tenant": ".*",
    "$role": ".*",
}
_VAR = re.compile(r"\$\{?(__)?[A-Za-z_]+\}?")


@dataclass(frozen=True)
class Query:
    source: str  # "dashboard.json: panel title [A]" or "alerts.yml: AlertName"
    expr: str
    must_return_data: bool


def substitute(expr: str) -> str:
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    left = _VAR.search(expr)
    assert left is None, f"unsubstituted variable {left.group(0)} in {expr}"
    return expr


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_queries() -> list[Query]:
    out = []
    for name, board in dashboards().items():
        for p in panels(board):
            for t in p.get("targets", []):
                out.append(Query(f"{name}: {p['title']} [{t['refId']}]", t["expr"], True))
        for a in board["annotations"]["list"]:
            if "expr" in a:  # annotations fire only on events: must parse, may be empty
                out.append(Query(f"{name}: annotation {a['name']}", a["expr"], False))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alerts.yml: {r['alert']}", r["expr"], False) for r in alert_rules()]


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (ours and vLLM's)."""
    unquoted = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"(?<![A-Za-z0-9_:])(concurproxy_[a-z_]+|vllm:[a-z_:]+|up)(?![A-Za-z0-9_:(])", unquoted))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@asynccontextmanager
async def running_prometheus(
    workdir: Path, targets: dict[str, list[str]], rule_files: list[Path] = (), interval: str = "1s"
) -> AsyncIterator[str]:
    """Start ``prometheus`` on a free loopback port scraping ``{job: [host:port, ...]}``; yields its URL."""
    binary = prometheus_binary()
    assert binary is not None
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in targets.items()],
    }
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):  # up to ~30 s on a loaded machine
                if proc.returncode is not None:
                    raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
                try:
                    async with s.get(url + "/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("prometheus did not become ready")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def instant(session: aiohttp.ClientSession, prom: str, expr: str) -> dict[str, Any]:
    async with session.post(prom + "/api/v1/query", data={"query": expr}) as r:
        return dict(await r.json())


async def check_queries(prom: str, queries: list[Query], deadline_s: float = 30.0) -> list[str]:
    """Run every query until it returns data (or the deadline passes); return the failures."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    pending = list(queries)
    errors: list[str] = []
    async with aiohttp.ClientSession() as s:
        while pending:
            still = []
            for q in pending:
                res = await instant(s, prom, substitute(q.expr))
                if res.get("status") != "success":
                    errors.append(f"{q.source}: does not parse/run: {res.get('error')}  [{q.expr}]")
                elif q.must_return_data and not res["data"]["result"]:
                    still.append(q)
            pending = still
            if not pending or loop.time() > end:
                break
            await asyncio.sleep(0.5)
    errors += [f"{q.source}: returned no data  [{substitute(q.expr)}]" for q in pending]
    return errors


async def rules_health(prom: str, expected: int, deadline_s: float = 15.0) -> list[str]:
    """Wait until Prometheus has evaluated every loaded rule; return rules whose health is not ok."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(prom + "/api/v1/rules") as r:
                rules = [rule for g in (await r.json())["data"]["groups"] for rule in g["rules"]]
            if (len(rules) == expected and all(r.get("health") in ("ok", "err") for r in rules)) or loop.time() > end:
                break
            await asyncio.sleep(0.5)
    bad = [f"{r['name']}: health={r.get('health')} {r.get('lastError', '')}" for r in rules if r.get("health") != "ok"]
    if len(rules) != expected:
        bad.append(f"loaded {len(rules)} rules, expected {expected}")
    return bad
