"""Real-time driver: steps an :class:`Engine` on the asyncio loop.

The engine clock is ``engine_t = (loop.time() - t0) · time_scale``. The
driver loop: when the engine has work, ``step(now)``, sleep the step's
duration divided by ``time_scale``, then hand each request its new tokens
through its queue; when idle, wait for :meth:`submit`. Because every state
change happens inside the synchronous ``step``/``submit``/``abort`` calls on
one event loop, no locking is needed.

Times the engine reports (TTFT, queue time, metrics) are in engine-clock
seconds, i.e. what the profiled GPU would show; with ``--time-scale 10`` the
client sees them ten times shorter.

Host lag: the engine clock is the wall clock, so when the host is late (a
step's sleep overshoots because the CPU is busy, a wake-up after ``submit``
waits for the loop) the engine clock runs on while the engine could have been
computing. ``lag_s`` sums those engine-clock seconds: near zero on an idle
host, and what a CPU-starved host adds to every latency the worker shows. A
real GPU does not wait for its host's CPU, so comparisons with the
virtual-time simulation subtract it (tests/simulate/test_crosscheck.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from concurproxy.worker.engine import Engine, RequestOutput, StepResult

log = logging.getLogger(__name__)


class EngineDead(RuntimeError):
    """The stepping task crashed (a bug in the engine); the worker cannot serve."""


class EngineDriver:
    def __init__(self, engine: Engine, time_scale: float = 1.0, clock: Callable[[], float] | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.engine = engine
        self.time_scale = time_scale
        self._clock = clock
        self._t0 = 0.0
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.lag_s = 0.0  # engine-clock seconds the engine was ready to step but the host had not run it
        self._woken_at = 0.0  # when submit() woke an idle engine
        self.on_step: Callable[[StepResult], None] | None = None  # after each step's time passed (KV events)

    def now(self) -> float:
        clock = self._clock or asyncio.get_running_loop().time
        return (clock() - self._t0) * self.time_scale

    async def start(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        self._t0 = clock()
        self._task = asyncio.create_task(self._run(), name="concurworker-engine")
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        """Surface a crash: log it, end every pending request (as aborted), refuse new ones."""
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        log.error("engine stepping task crashed", exc_info=self.failure)
        for req_id, q in list(self._queues.items()):
            q.put_nowait(RequestOutput(req_id, (), "", True, "abort", 0, 0, 0))
        self._queues.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a crash was already logged by _on_done; do not re-raise
            self._task = None

    def submit(
        self,
        req_id: str,
        prompt_ids: Sequence[int],
        max_tokens: int | None,
        ignore_eos: bool = False,
        priority: int = 0,
    ) -> asyncio.Queue[RequestOutput]:
        """Queue a request; its outputs arrive on the returned queue. Raises RequestRejected."""
        if self.failure is not None:
            raise EngineDead(f"engine crashed: {self.failure!r}")
        self.engine.add_request(
            req_id, prompt_ids, max_tokens, arrival=self.now(), ignore_eos=ignore_eos, priority=priority
        )
        q: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self._queues[req_id] = q
        if not self._wake.is_set():
            self._woken_at = self.now()
            self._wake.set()
        return q

    def abort(self, req_id: str) -> None:
        """Client gone: drop the request from the engine (frees its blocks)."""
        self._queues.pop(req_id, None)
        self.engine.abort(req_id, self.now())

    async def _run(self) -> None:
        engine = self.engine
        while True:
            if not engine.has_work():
                self._wake.clear()
                await self._wake.wait()
                self.lag_s += max(0.0, self.now() - self._woken_at)
                continue
            res = engine.step(self.now())
            wait = (res.end - self.now()) / self.time_scale
            await asyncio.sleep(max(wait, 0.0))
            self.lag_s += max(0.0, self.now() - res.end)
            if self.on_step is not None:
                self.on_step(res)
            for out in res.outputs:
                q = self._queues.get(out.req_id)
                if q is None:
                    continue
                q.put_nowait(out)
                if out.finished:
                    del self._queues[out.req_id]
