"""Shared fixtures: stub upstreams and a proxy in front of them, all on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, settings
from tier_summary import TierSummary

from concurproxy.config import load_policy
from concurproxy.config.models import Policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.components import Components
from concurproxy.server.hooks import StepContext
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

# Hypothesis: CI runs derandomised (the same examples on every run, so a red CI is reproducible and a
# green one is not luck); a developer's run stays random, to find new failures. A failure found by the
# random mode is kept as an explicit @example on the test (the print_blob line says how to replay it).
# Both start from Hypothesis's own defaults: it loads its built-in "ci" profile by itself whenever a CI
# variable is set (even CI=""), which must not leak into "dev". In CI, no deadline and no too_slow check:
# the box is shared, and a slow example there is load, not a bug.
_base = settings.get_profile("default")
settings.register_profile(
    "ci",
    parent=_base,
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", parent=_base, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    """The one-line tier summary at the end of every run (tests/tier_summary.py)."""
    config.pluginmanager.register(TierSummary(config), "concurproxy-tier-summary")


class RecordingListener:
    """Collects every ended step's context (usage, outcome, replica)."""

    def __init__(self) -> None:
        self.steps: list[StepContext] = []

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        self.steps.append(ctx)


class ProxyHarness:
    def __init__(
        self,
        url: str,
        stubs: list[StubBehaviour],
        components: Components,
        listener: RecordingListener,
        session: aiohttp.ClientSession,
        stack: AsyncExitStack | None = None,
    ) -> None:
        self.url = url
        self.stubs = stubs
        self.components = components
        self.listener = listener
        self.session = session
        self.stack = stack or AsyncExitStack()  # closed with the proxy: clients a test opens go here

    async def post(self, path: str, body: Any = None, **kw: Any) -> aiohttp.ClientResponse:
        return await self.session.post(self.url + path, json=body, **kw)


def make_policy(upstreams: list[str], **overrides: Any) -> Policy:
    doc: dict[str, Any] = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(upstreams)]}
    doc.update(overrides)
    return load_policy(overrides=doc, env={})


@pytest.fixture
def proxy_factory() -> Callable[..., Any]:
    """``async with proxy_factory(n_stubs=2, **policy_overrides) as h:`` → ProxyHarness.

    ``upstream_urls=[...]`` puts the proxy in front of upstreams the test already runs (bundled
    workers, say) instead of stubs; ``h.stubs`` is then empty.
    """
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(
        n_stubs: int = 1,
        behaviours: list[StubBehaviour] | None = None,
        upstream_urls: list[str] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[ProxyHarness]:
        stubs = [] if upstream_urls else behaviours or [StubBehaviour() for _ in range(n_stubs)]
        async with AsyncExitStack() as stack:
            urls = upstream_urls or [await stack.enter_async_context(running_stub(b)) for b in stubs]
            policy = make_policy(urls, **overrides)
            components = build_components(policy)
            listener = RecordingListener()
            components.listeners.append(listener)
            url = await stack.enter_async_context(running_proxy(policy, components))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            yield ProxyHarness(url, stubs, components, listener, session, stack)

    return factory
