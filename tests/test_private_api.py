"""Guards for the private attributes of aiohttp and prometheus-client the proxy uses, and their pins.

The hot path reads ``request._client_max_size`` (server/handlers.py: size-check a body that is
already buffered without request.read()'s coroutine) and writes a histogram child's ``_sum``,
``_buckets`` and ``_upper_bounds`` (telemetry/batch.py: apply batched observations at scrape time).
A release of either library may rename them; these tests say so by name, and pyproject.toml pins
both below their next minor version until these tests pass on it.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from packaging.requirements import Requirement
from prometheus_client import CollectorRegistry, Histogram

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", ["aiohttp", "prometheus-client"])
def test_the_libraries_we_reach_into_have_an_upper_bound_that_the_installed_version_meets(package: str) -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == package]
    assert any(s.operator in ("<", "<=", "~=") for s in req.specifier), f"{package}: no upper bound in pyproject"
    assert req.specifier.contains(version(package)), f"{package} {version(package)} is outside {req.specifier}"


async def test_aiohttp_request_still_has_client_max_size() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=str(request._client_max_size))

    app = web.Application(client_max_size=12_345)
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/", data=b"x") as r:
            assert await r.text() == "12345"
    finally:
        await runner.cleanup()


def test_prometheus_histogram_child_still_has_the_internals_batch_writes() -> None:
    h = Histogram("guard_seconds", "guard", ["k"], buckets=(0.1, 1.0), registry=CollectorRegistry())
    child = h.labels("a")
    assert list(child._upper_bounds) == [0.1, 1.0, float("inf")]
    child._sum.inc(0.5)
    child._buckets[1].inc(1)
    registry_samples = {s.name + str(s.labels.get("le", "")): s.value for s in h.collect()[0].samples}
    assert registry_samples["guard_seconds_sum"] == 0.5
    assert registry_samples["guard_seconds_bucket1.0"] == 1  # cumulative over the buckets below
    assert registry_samples["guard_seconds_bucket+Inf"] == 1
