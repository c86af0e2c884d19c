"""Run a scenario against one target and collect ``Results``.

Scheduling: open loop starts each task at its arrival offset; closed loop keeps
``concurrency`` tasks running. New tasks start only until ``duration_s`` (and
up to ``max_tasks``); running tasks then get ``drain_s`` to finish, after which
they are cancelled and recorded as ``cancelled`` (the run is ``truncated``).
At most ``max_inflight`` HTTP requests are outstanding at any time (a
semaphore), and requests go only to ``target``. 429/503 answers are retried
per ``scenario.retry``; a step that still fails fails its task (its sibling
branches are cancelled). Steps go out in ``scenario.client``'s API and mode
(:mod:`loadgen.apis`): which headers, and, with ``responses_chain``, each
agent's later steps as ``previous_response_id`` + the new input (the chain of
an agent is followed within its task chain).

Concurrency: everything runs on one event loop; the counters and result lists
are mutated only from it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from loadgen.apis import Link, chain_link, headers, make_api
from loadgen.client import Attempt, api_url, check_target, send
from loadgen.generator import iter_tasks
from loadgen.plan import Chain, StepSpec, TaskPlan
from loadgen.progress import Counters, Progress
from loadgen.results import Meta, Results, StepResult, TaskResult
from loadgen.scenario import Closed, Scenario
from loadgen.scrape import DEFAULT_SERIES, Scraper

_RETRYABLE = frozenset({429, 503})


class _StepFailed(Exception):
    pass


class Runner:
    def __init__(
        self,
        sc: Scenario,
        target: str,
        client: httpx.AsyncClient,
        *,
        model: str | None = None,
        max_inflight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sc, self.target, self.client, self.clock = sc, target, client, clock
        self.api = make_api(sc.client)
        self.url = api_url(target, self.api.path)
        self.model = model or sc.model
        self.sem = asyncio.Semaphore(max_inflight or sc.max_inflight)
        self.steps: list[StepResult] = []
        self.tasks: list[TaskResult] = []
        self.c = Counters()
        self.t0 = clock()

    def now(self) -> float:
        return self.clock() - self.t0

    async def run_step(self, plan: TaskPlan, spec: StepSpec, link: Link | None = None) -> Attempt:
        """Run one step (with retries); return its successful attempt or raise ``_StepFailed``."""
        body = self.api.body(spec, self.model, self.sc.stream, link)
        hdrs = headers(spec, self.api, plan.api_key, self.sc.client)
        r = self.sc.retry
        for attempt in range(1, r.max_attempts + 1):
            async with self.sem:
                self.c.inflight += 1
                try:
                    a = await send(self.client, self.url, body, hdrs, self.sc.request_timeout_s, self.clock, self.api)
                finally:
                    self.c.inflight -= 1
            res = StepResult(
                task_id=spec.task_id,
                agent_id=spec.agent_id,
                role=spec.role,
                tenant=plan.tenant,
                step=spec.index,
                attempt=attempt,
                start_s=a.start - self.t0,
                end_s=a.end - self.t0,
                status=a.status,
                ttft_s=a.ttft,
                queue_wait_ms=a.queue_wait_ms,
                replica=a.replica,
                prompt_tokens=a.prompt_tokens if a.prompt_tokens is not None else spec.est_prompt_tokens,
                completion_tokens=a.completion_tokens or 0,
                max_tokens=spec.max_tokens,
                error=a.error,
                cached_tokens=a.cached_tokens,
            )
            self.steps.append(res)
            if res.ok:
                self.c.steps_ok += 1
                self.c.add_latency(res.total_s)
                return a
            self.c.errors += 1
            self.c.http_429 += a.status == 429
            if a.status not in _RETRYABLE or attempt == r.max_attempts:
                break
            wait = a.retry_after_s if a.retry_after_s is not None else r.backoff_s * 2 ** (attempt - 1)
            await asyncio.sleep(min(wait, r.max_backoff_s))
        raise _StepFailed(spec.agent_id)

    async def run_chain(self, plan: TaskPlan, chain: Chain) -> None:
        links: dict[str, Link] = {}  # agent → its last answered step (Responses chaining only)
        chaining = self.sc.client.responses_chain
        for spec in chain:
            if spec.at_s is not None and spec.at_s > self.now():
                await asyncio.sleep(spec.at_s - self.now())
            a = await self.run_step(plan, spec, chain_link(links.get(spec.agent_id), spec) if chaining else None)
            if chaining and a.response_id is not None:
                links[spec.agent_id] = Link(spec.messages, a.response_id)
            if spec.pause_after_s > 0:
                await asyncio.sleep(spec.pause_after_s)

    async def run_task(self, plan: TaskPlan) -> None:
        start = self.now()
        status = "ok"
        self.c.tasks_started += 1
        try:
            for phase in plan.phases:
                if len(phase) == 1:
                    await self.run_chain(plan, phase[0])
                    continue
                failed = False
                try:
                    async with asyncio.TaskGroup() as tg:
                        for chain in phase:
                            tg.create_task(self.run_chain(plan, chain))
                except* _StepFailed:
                    failed = True
                if failed:
                    raise _StepFailed(plan.task_id)
        except _StepFailed:
            status = "failed"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            end = None if status == "cancelled" else self.now()
            self.tasks.append(
                TaskResult(
                    plan.task_id,
                    plan.tenant,
                    status,
                    start,
                    end,
                    plan.n_steps,
                    plan.deadline_s,
                    plan.arrival_s,
                )
            )
            if status == "ok":
                self.c.tasks_done += 1
            elif status == "failed":
                self.c.tasks_failed += 1

    async def _open_loop(self, plans: Iterator[TaskPlan], running: set[asyncio.Task[None]]) -> None:
        for plan in plans:
            assert plan.arrival_s is not None
            delay = plan.arrival_s - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(self.run_task(plan))
            running.add(t)
            t.add_done_callback(running.discard)

    async def _closed_loop(self, plans: Iterator[TaskPlan], duration_s: float | None) -> None:
        arr = self.sc.arrivals
        assert isinstance(arr, Closed)
        think_rng = random.Random(f"{self.sc.seed}:think")

        async def worker() -> None:
            while duration_s is None or self.now() < duration_s:
                plan = next(plans, None)
                if plan is None:
                    return
                await self.run_task(plan)
                think = arr.think_s.sample(think_rng)
                if think > 0:
                    await asyncio.sleep(think)

        async with asyncio.TaskGroup() as tg:
            for _ in range(arr.concurrency):
                tg.create_task(worker())

    async def drive(self, plans: Iterator[TaskPlan], duration_s: float | None, progress: Progress) -> bool:
        """Run all plans; return True when the hard end cancelled running work."""
        running: set[asyncio.Task[None]] = set()
        if isinstance(self.sc.arrivals, Closed) and self.sc.trace is None:
            starter = asyncio.create_task(self._closed_loop(plans, duration_s))
        else:
            starter = asyncio.create_task(self._open_loop(plans, running))
        hard_end = None if duration_s is None else duration_s + self.sc.drain_s
        while not starter.done() or running:
            progress.update(self.c, self.now())
            if hard_end is not None and self.now() >= hard_end:
                break
            wait = 0.25 if hard_end is None else max(0.0, min(0.25, hard_end - self.now()))
            await asyncio.wait([starter, *running], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        truncated = not starter.done() or bool(running)
        for t in [starter, *running]:
            t.cancel()
        await asyncio.gather(starter, *running, return_exceptions=True)
        if starter.done() and not starter.cancelled() and starter.exception() is not None:
            raise starter.exception()  # type: ignore[misc]
        progress.update(self.c, self.now())
        return truncated


async def run_scenario(
    scenario: Scenario,
    target: str,
    *,
    duration_s: float | None = None,
    max_tasks: int | None = None,
    seed: int | None = None,
    scrape: Iterable[str] = (),
    series: Iterable[str] = DEFAULT_SERIES,
    scrape_interval_s: float = 1.0,
    progress: bool = False,
    run_tag: str | None = None,
    label: str = "",
    model: str | None = None,
    max_inflight: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    check: bool = True,
) -> Results:
    """Run ``scenario`` against ``target`` (base URL of an OpenAI-compatible server or the proxy).

    ``duration_s``/``max_tasks``/``seed`` override the scenario's. ``scrape`` lists Prometheus
    URLs sampled every ``scrape_interval_s``. ``run_tag`` prefixes task ids (default: random, so
    repeated runs do not collide in the proxy's state; pass a fixed tag for identical requests).
    Raises ``TargetUnreachable`` when nothing answers at ``target``.
    """
    seed = scenario.seed if seed is None else seed
    dur = duration_s if duration_s is not None else scenario.duration_s
    mx = max_tasks if max_tasks is not None else scenario.max_tasks
    tag = run_tag if run_tag is not None else secrets.token_hex(3) + "-"
    limits = httpx.Limits(max_connections=max_inflight or scenario.max_inflight, max_keepalive_connections=64)
    timeout = httpx.Timeout(scenario.request_timeout_s, connect=10.0)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    kw: dict[str, Any] = {"limits": limits, "timeout": timeout}
    if transport is not None:
        kw["transport"] = transport
    async with httpx.AsyncClient(**kw) as client:
        if check:
            await check_target(client, target)
        plans = iter_tasks(scenario, seed, duration_s=dur, max_tasks=mx, tag=tag)
        runner = Runner(scenario, target, client, model=model, max_inflight=max_inflight)
        scraper = Scraper(client, scrape, series, scrape_interval_s) if scrape else None
        if scraper is not None:
            scraper.t0 = runner.t0
        scrape_task = asyncio.create_task(scraper.run()) if scraper else None
        try:
            with Progress(f"{scenario.name} → {target}", progress, mx, dur) as prog:
                truncated = await runner.drive(plans, dur, prog)
        finally:
            if scrape_task is not None:
                scrape_task.cancel()
                await asyncio.gather(scrape_task, return_exceptions=True)
    meta = Meta(
        scenario=scenario.name,
        target=target,
        seed=seed,
        started_at=started_at,
        elapsed_s=runner.now(),
        run_tag=tag,
        label=label,
        scrape_errors=scraper.errors if scraper else 0,
        truncated=truncated,
        client=scenario.client.model_dump(),
    )
    return Results(meta, runner.steps, runner.tasks, scraper.result() if scraper else [])
