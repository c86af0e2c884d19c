"""Who may call /admin/* (docs/security.md, openapi.yaml): the admin key once one is configured;
without one (the default policy), callers on this host only."""

from __future__ import annotations

import hashlib
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from concurproxy.config import load_policy
from concurproxy.errors import ProxyError
from concurproxy.server import admin
from concurproxy.server.app import build_app
from concurproxy.server.assembly import build_components

KEY = "s3cret-admin"


def _app(**auth: object):
    doc: dict[str, object] = {"upstreams": [{"url": "http://127.0.0.1:9", "name": "r0"}]}
    if auth:
        doc["auth"] = auth
    return build_app(build_components(load_policy(overrides=doc, env={})))


def _request(app, remote: str, headers: dict[str, str] | None = None):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (remote, 5555) if name == "peername" else default
    return make_mocked_request("GET", "/admin/state", headers=headers or {}, app=app, transport=transport)


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.0.0.2", "::1"])
async def test_without_an_admin_key_local_callers_get_in(remote: str) -> None:
    assert (await admin.state(_request(_app(), remote))).status == 200


@pytest.mark.parametrize("remote", ["10.0.0.7", "192.168.1.2", "2001:db8::1", "not-an-address"])
async def test_without_an_admin_key_other_callers_get_403(remote: str) -> None:
    with pytest.raises(ProxyError) as err:
        await admin.state(_request(_app(), remote))
    assert (err.value.status, err.value.code) == (403, "admin_key_not_configured")


async def test_with_an_admin_key_it_is_the_key_that_counts() -> None:
    app = _app(admin_key_sha256=[hashlib.sha256(KEY.encode()).hexdigest()])
    with pytest.raises(ProxyError) as err:
        await admin.state(_request(app, "127.0.0.1"))  # local, but no key
    assert err.value.status == 401
    ok = await admin.state(_request(app, "10.0.0.7", {"Authorization": f"Bearer {KEY}"}))
    assert ok.status == 200
