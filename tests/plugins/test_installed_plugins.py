"""A plugin package installed beside the proxy is used for every kind, the same way (issue 21 item 11).

Before the one registry, third-party scorers (and routing policies) were never loaded: a policy
naming one failed at startup although docs/routing.md said the shell loads them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from concurproxy.config import load_policy
from concurproxy.control.fairness.base import FairnessParams
from concurproxy.plugins import PluginError, PluginLoadError
from concurproxy.plugins.installed import Plugins
from concurproxy.routing.affinity import PrefixAffinityRouter
from concurproxy.routing.round_robin import RoundRobinRouter
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

PLUGIN_POLICY: dict[str, Any] = {
    "admission": {"controller": "two-agents"},
    "fairness": {"policy": "newest"},
    "routing": {"scorers": [{"type": "half", "weight": 1}, {"type": "queue", "weight": 1}]},
}


def test_every_kind_lists_the_installed_plugin(plugin_dir: Path) -> None:
    plugins = Plugins.load()
    assert "two-agents" in plugins.controllers.names()
    assert "newest" in plugins.fairness.names()
    assert plugins.fairness.queue("newest", FairnessParams()).name == "newest"
    assert {"half", "broken"} <= set(plugins.scorers.names())
    assert "in-turn" in plugins.routers.names()


def test_without_the_package_the_names_are_unknown() -> None:
    policy = load_policy(overrides=PLUGIN_POLICY, env={})
    problems = Plugins.load().problems(policy)
    assert [p.split(":")[0] for p in problems] == ["admission.controller", "fairness.policy", "routing.scorers.0.type"]
    assert (
        "unknown scorer 'half'; known: kv-headroom, prefix-match, queue, session-affinity, window-room" in problems[2]
    )


async def test_a_proxy_serves_with_a_plugin_of_every_kind(plugin_dir: Path) -> None:
    async with running_stub(StubBehaviour()) as upstream:
        policy = load_policy(overrides={**PLUGIN_POLICY, "upstreams": [{"url": upstream, "name": "r0"}]}, env={})
        components = build_components(policy)
        router = components.router.router
        assert isinstance(router, PrefixAffinityRouter)
        assert [ws.scorer.name for ws in router.scorers] == ["half", "queue"]
        async with running_proxy(policy, components) as url, aiohttp.ClientSession() as s:
            body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200, await r.text()
            async with s.get(url + "/admin/state") as r:
                replica = (await r.json())["admission"]["replicas"]["r0"]
    assert (replica["controller"], replica["window"]) == ("two-agents", 2)


def test_a_plugin_routing_policy(plugin_dir: Path) -> None:
    policy = load_policy(
        overrides={"upstreams": [{"url": "http://127.0.0.1:1"}], "routing": {"policy": "in-turn"}}, env={}
    )
    assert isinstance(build_components(policy).router.router, RoundRobinRouter)


def test_a_broken_plugin_is_reported_when_named_and_harmless_otherwise(plugin_dir: Path) -> None:
    ok = load_policy(overrides={"upstreams": [{"url": "http://127.0.0.1:1"}]}, env={})
    build_components(ok)  # installed next to a broken plugin it does not name
    bad = load_policy(
        overrides={"upstreams": [{"url": "http://127.0.0.1:1"}], "routing": {"scorers": [{"type": "broken"}]}},
        env={},
    )
    with pytest.raises(PluginError, match=r"routing.scorers.0.type: scorer 'broken' .* failed to load"):
        build_components(bad)
    with pytest.raises(PluginLoadError):
        Plugins.load().scorers.get("broken")


def test_config_validate_knows_the_installed_plugins(plugin_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({**PLUGIN_POLICY, "upstreams": [{"url": "http://127.0.0.1:1"}]}))
    run = [sys.executable, "-m", "concurproxy", "config", "validate", str(f)]
    res = subprocess.run(run, capture_output=True, text=True, timeout=60)  # PYTHONPATH from plugin_dir
    assert res.returncode == 0 and "admission=two-agents" in res.stdout, res.stderr
