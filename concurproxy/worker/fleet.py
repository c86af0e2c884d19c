"""Start simulated workers in-process: one engine + driver + HTTP server each.

``async with run_workers("tiny", 3, time_scale=10) as urls:`` gives three
base URLs (``http://127.0.0.1:PORT``) on free ports (or consecutive ports from
``port``) and stops everything on exit. :func:`run_fleet` yields the
:class:`Worker` objects instead, for callers that want the engines' counters.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from concurproxy.worker.driver import EngineDriver
from concurproxy.worker.engine import Engine, OutputLengths
from concurproxy.worker.kvpublish import KvEventPublisher, KvEventsConfig
from concurproxy.worker.metrics import make_registry
from concurproxy.worker.profile import Profile, load_profile
from concurproxy.worker.server import WorkerState, build_app


@dataclass(eq=False)
class Worker:
    """One replica. ``start()`` binds and starts stepping; ``stop()`` undoes it."""

    profile: Profile
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    time_scale: float = 1.0
    model_name: str | None = None
    output_lengths: OutputLengths | None = None
    legacy_metric_names: bool = False
    kv_events: KvEventsConfig | None = None  # publish KV cache events like vLLM's --kv-events-config
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"  # vLLM's --scheduling-policy
    preempt_for_waiting: bool = False  # not in vLLM: see EngineConfig
    engine: Engine = field(init=False)
    driver: EngineDriver = field(init=False)
    state: WorkerState | None = field(init=False, default=None)  # the HTTP front's state, once started
    _runner: web.AppRunner | None = field(init=False, default=None)
    _publisher: KvEventPublisher | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        cfg = self.profile.engine_config(
            self.seed, self.output_lengths, self.scheduling_policy, self.preempt_for_waiting
        )
        self.engine = Engine(cfg)
        self.driver = EngineDriver(self.engine, time_scale=self.time_scale)

    @property
    def served_model(self) -> str:
        return self.model_name or self.profile.model.name

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        driver = self.driver
        registry = make_registry(
            self.engine, self.served_model, self.profile.memory_utilization, self.legacy_metric_names,
            host_lag_s=lambda: driver.lag_s,
        )  # fmt: skip
        state = self.state = WorkerState(self.driver, registry, self.served_model, self.engine.config.max_model_len)
        runner = web.AppRunner(build_app(state), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        if self.kv_events is not None:
            pub = self._publisher = KvEventPublisher(self.kv_events)
            await pub.start()
            self.engine.enable_kv_events()
            self.driver.on_step = lambda res: pub.publish(res.end, self.engine.drain_kv_events())
        await self.driver.start()
        return self.url

    async def stop(self) -> None:
        await self.driver.stop()
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def run_fleet(
    profile: Profile | str,
    n: int = 1,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    time_scale: float = 1.0,
    seed: int = 0,
    model_name: str | None = None,
    output_lengths: OutputLengths | None = None,
    legacy_metric_names: bool = False,
    kv_events: KvEventsConfig | None = None,
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs",
    preempt_for_waiting: bool = False,
) -> AsyncIterator[list[Worker]]:
    prof = load_profile(profile) if isinstance(profile, str) else profile
    workers = [
        Worker(
            prof,
            host,
            port + i if port else 0,
            seed,
            time_scale,
            model_name,
            output_lengths,
            legacy_metric_names,
            kv_events.for_replica(i) if kv_events is not None else None,
            scheduling_policy,
            preempt_for_waiting,
        )
        for i in range(n)
    ]
    started: list[Worker] = []
    try:
        for w in workers:
            await w.start()
            started.append(w)
        yield workers
    finally:
        for w in reversed(started):
            await w.stop()


@contextlib.asynccontextmanager
async def run_workers(
    profile: Profile | str,
    n: int = 1,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    time_scale: float = 1.0,
    seed: int = 0,
) -> AsyncIterator[list[str]]:
    async with run_fleet(profile, n, host=host, port=port, time_scale=time_scale, seed=seed) as workers:
        yield [w.url for w in workers]
