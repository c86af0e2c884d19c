"""Policy reload with bad files: the running policy stays, and the failure is said (POST /admin/reload)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub


@asynccontextmanager
async def reloadable(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession, Path, dict]]:
    f = tmp_path / "p.yaml"
    async with running_stub(StubBehaviour()) as up:
        doc = {"upstreams": [{"url": up, "name": "r0"}]}
        f.write_text(yaml.safe_dump(doc))
        policy = load_policy(f, env={})
        comps = build_components(policy)
        comps.policy_path = str(f)
        async with running_proxy(policy, comps) as url, aiohttp.ClientSession() as s:
            yield url, s, f, doc


async def _reload(s: aiohttp.ClientSession, url: str) -> tuple[int, dict, dict]:
    r = await s.post(url + "/admin/reload")
    state = await (await s.get(url + "/admin/state")).json()
    return r.status, await r.json(), state


def _writers(f: Path, doc: dict) -> dict:
    return {
        "missing_file": lambda: f.unlink(),
        "invalid_field": lambda: f.write_text(yaml.safe_dump({**doc, "retry": {"attempts": 99}})),
        "yaml_list": lambda: f.write_text("- 1\n- 2\n"),
        "broken_yaml": lambda: f.write_text("upstreams: [\n  {url: : :\n"),
        "key_env_unset": lambda: f.write_text(
            yaml.safe_dump({**doc, "tenants": [{"name": "a", "key_env": "CONCURPROXY_TEST_UNSET_KEY"}]})
        ),
        "key_file_missing": lambda: f.write_text(
            yaml.safe_dump({**doc, "tenants": [{"name": "a", "key_file": str(f.parent / "nope")}]})
        ),
    }


@pytest.mark.parametrize(
    "bad", ["missing_file", "invalid_field", "yaml_list", "broken_yaml", "key_env_unset", "key_file_missing"]
)
async def test_bad_policy_file_keeps_the_running_policy(tmp_path, bad):
    async with reloadable(tmp_path) as (url, s, f, doc):
        before = (await (await s.get(url + "/admin/state")).json())["policy"]
        _writers(f, doc)[bad]()
        status, body, state = await _reload(s, url)
        assert status == 400 and body["error"]["code"] == "invalid_policy", body
        pol = state["policy"]
        assert pol["fingerprint"] == before["fingerprint"] and pol["failed_reloads"] == 1
        assert pol["last_reload_error"] == body["error"]["message"]
        assert [r["id"] for r in state["replicas"]] == ["r0"]


async def test_non_utf8_policy_file_is_a_failed_reload(tmp_path):
    async with reloadable(tmp_path) as (url, s, f, _):
        f.write_bytes(b"\xff\xfe\x00\x01upstreams: []\n")
        status, body, state = await _reload(s, url)
        assert status == 400, body
        assert state["policy"]["failed_reloads"] == 1


async def test_reload_to_an_empty_pool_is_refused(tmp_path):
    async with reloadable(tmp_path) as (url, s, f, doc):
        f.write_text(yaml.safe_dump({**doc, "upstreams": []}))
        status, body, state = await _reload(s, url)
        assert status == 400, body
        assert [r["id"] for r in state["replicas"]] == ["r0"]


@pytest.mark.parametrize(
    ("section", "what"),
    [
        (
            {"admission": {"controller": "aimdd"}},
            "unknown admission controller 'aimdd'; known: aimd, gradient, none, static",
        ),
        ({"fairness": {"policy": "wfq"}}, "unknown fairness policy 'wfq'"),
        ({"routing": {"scorers": [{"type": "gpu-temp"}]}}, "unknown scorer 'gpu-temp'"),
    ],
)
async def test_reload_naming_an_unknown_plugin_is_refused(tmp_path, section, what):
    """Issue 21 item 12: restart-only sections were taken into the running policy unchecked, so the
    reload said ok and the next restart died on the name."""
    async with reloadable(tmp_path) as (url, s, f, doc):
        before = (await (await s.get(url + "/admin/state")).json())["policy"]
        f.write_text(yaml.safe_dump({**doc, **section}))
        status, body, state = await _reload(s, url)
        assert status == 400 and body["error"]["code"] == "invalid_policy", body
        assert what in body["error"]["message"]
        assert state["policy"]["fingerprint"] == before["fingerprint"] and state["policy"]["failed_reloads"] == 1
        assert state["admission"]["controller"] == "aimd"
        f.write_text(yaml.safe_dump(doc))  # the same file fixed reloads as usual
        status, body, _ = await _reload(s, url)
        assert status == 200, body
