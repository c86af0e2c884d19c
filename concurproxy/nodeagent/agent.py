"""GPU node agent: scrape the local engine fast, read NVML, serve one pressure feed.

Routes
    ``GET /pressure`` — compact JSON (:mod:`concurproxy.signals.feed`): engine snapshot with rates
    and staleness + NVML section; ``GET /metrics`` — the same as Prometheus (own registry);
    ``GET /health`` — 200 while the agent runs (the engine's state is in the body).

Loops (started with the app, cancelled on shutdown)
    engine: every ``scrape_interval_s`` GET ``engine_url + metrics_path`` (timeout
    ``scrape_timeout_s``), parse, fold into a :class:`PressureTracker`. A failure is recorded,
    never raised. GPUs: every ``gpu_interval_s`` call ``GpuProbe.read()`` in a worker thread.

Clock: ``clock`` (monotonic) stamps data; ``wall`` only fills the feed's informational ``time``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from concurproxy.nodeagent.gpu import GpuProbe, GpuReading
from concurproxy.nodeagent.metrics import build_registry
from concurproxy.nodeagent.state import AgentState
from concurproxy.signals.engine_metrics import MetricsParseError, parse_engine_metrics
from concurproxy.signals.pressure import PressureTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeAgentConfig:
    engine_url: str  # base URL of the engine, e.g. http://127.0.0.1:8000
    metrics_path: str = "/metrics"
    scrape_interval_s: float = 0.1
    scrape_timeout_s: float = 1.0
    gpu_interval_s: float = 1.0
    stale_after_s: float = 1.0
    rate_window_s: float = 1.0

    @property
    def metrics_url(self) -> str:
        return self.engine_url.rstrip("/") + self.metrics_path


class NodeAgent:
    def __init__(
        self,
        config: NodeAgentConfig,
        probe: GpuProbe,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.config = config
        self.probe = probe
        self._clock, self._wall = clock, wall
        tracker = PressureTracker(config.stale_after_s, config.rate_window_s, source="engine-metrics")
        self.state = AgentState(engine_url=config.engine_url, tracker=tracker)
        self.registry = build_registry(self.state, clock)

    # -- one step of each loop (tests call these directly) ------------------------------------------
    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        st = self.state
        st.scrapes += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout_s)
            async with session.get(self.config.metrics_url, timeout=timeout) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise MetricsParseError(f"engine answered HTTP {resp.status}")
            sample = parse_engine_metrics(body.decode("utf-8"), self._clock())
        except (aiohttp.ClientError, TimeoutError, MetricsParseError, UnicodeDecodeError) as exc:
            st.scrape_failures += 1
            st.tracker.observe_failure(self._clock(), f"{type(exc).__name__}: {exc}".rstrip(": "))
            return
        st.last_sample = sample
        st.tracker.observe(sample)

    async def read_gpus_once(self) -> GpuReading:
        try:
            reading = await asyncio.to_thread(self.probe.read)
        except Exception as exc:  # the probe contract says it never raises; if one does, report, don't die
            log.exception("GPU probe failed")
            reading = GpuReading(available=False, error=f"probe failed: {type(exc).__name__}: {exc}")
        self.state.gpu, self.state.gpu_ts = reading, self._clock()
        self.state.gpu_reads += 1
        return reading

    # -- loops ------------------------------------------------------------------------------------
    async def _every(self, interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await step()
            next_at = max(next_at + interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        tasks = [
            asyncio.create_task(
                self._every(self.config.scrape_interval_s, lambda: self.scrape_once(session)),
                name="node-agent-scrape",
            ),
            asyncio.create_task(self._every(self.config.gpu_interval_s, self.read_gpus_once), name="node-agent-gpu"),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            self.probe.close()

    # -- HTTP -------------------------------------------------------------------------------------
    async def _pressure(self, request: web.Request) -> web.Response:
        doc = self.state.pressure_doc(self._clock(), self._wall())
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        snap = self.state.tracker.snapshot_at(self._clock())
        body = {
            "status": "ok",
            "engine_ok": snap.ok,
            "engine_error": snap.error,
            "nvml": self.state.gpu.available,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def build_app(self, *, background: bool = True) -> web.Application:
        """The aiohttp app; ``background=False`` leaves the loops off (tests drive the steps)."""
        app = web.Application()
        app.router.add_get("/pressure", self._pressure)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        if background:
            app.cleanup_ctx.append(self._lifecycle)
        return app


@asynccontextmanager
async def run_node_agent(
    engine_url: str,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    probe: GpuProbe | None = None,
    nvml: bool = True,
    config: NodeAgentConfig | None = None,
) -> AsyncIterator[str]:
    """Serve a node agent until the block exits; yields its base URL (``/pressure`` under it)."""
    if probe is None:
        from concurproxy.nodeagent.gpu import DisabledProbe, NvmlProbe

        probe = NvmlProbe() if nvml else DisabledProbe()
    agent = NodeAgent(config or NodeAgentConfig(engine_url=engine_url), probe)
    runner = web.AppRunner(agent.build_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        yield f"http://{shown}:{bound}"
    finally:
        await runner.cleanup()
