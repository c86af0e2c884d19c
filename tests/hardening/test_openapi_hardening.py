"""concurproxy/openapi.yaml describes the proxy: a valid OpenAPI 3.1 document whose routes are the app's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import concurproxy
from concurproxy.config import load_policy
from concurproxy.server.app import build_app
from concurproxy.server.assembly import build_components

SPEC_PATH = Path(concurproxy.__file__).parent / "openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def test_spec_is_valid_openapi_31(spec):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_spec_routes_are_the_apps_routes(spec):
    policy = load_policy(overrides={"upstreams": [{"url": "http://127.0.0.1:9", "name": "r0"}]}, env={})
    app = build_app(build_components(policy))
    mounted = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        mounted.add((route.method.lower(), path))
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops if m in ("get", "post", "delete", "put")}
    assert mounted == described


async def test_proxy_errors_match_the_error_schema(spec, proxy_factory):
    jsonschema = pytest.importorskip("jsonschema")  # not a declared dependency: present via openapi-spec-validator
    schema = {**spec["components"]["schemas"]["Error"], "components": spec["components"]}
    async with proxy_factory() as h:
        # (an unknown path of the proxy's own: others are passed through, and answered by the engine)
        cases = [
            ("/v1/chat/completions", {}),
            ("/v1/completions", {"model": "x"}),
            ("/v1/responses", {}),
            ("/admin/nope", None),
        ]
        for path, body in cases:
            r = await h.post(path, body)
            assert r.status >= 400
            jsonschema.validate(await r.json(), schema)
        anthropic = {**spec["components"]["schemas"]["AnthropicError"], "components": spec["components"]}
        for body in ({}, {"model": "stub-model", "messages": [{"role": "user", "content": "x"}]}):
            r = await h.post("/v1/messages", body)
            assert r.status == 400
            jsonschema.validate(await r.json(), anthropic)
