"""Engine models for the simulation: the worker's engine, and the same engine with exact
fast-forward over runs of pure decode iterations.

Why: a simulated hour of a 64-replica fleet is tens of millions of engine
iterations; stepping each one through ``Engine.step`` costs microseconds per
running request. Most iterations are *pure decode*: every running request
computes its one sampled token, nobody waits, nobody finishes. Their effect
has a closed form, so ``FastEngine`` plans such a run in one call and applies
it lazily.

Decode run (planned by ``advance``, applied by ``sync``)
-------------------------------------------------------
Preconditions at the start time: the waiting queue is empty, every running
request is decoding (one new token, ``num_output > 0``, no recomputation
pending) and the batch fits ``max_num_batched_tokens``. With ``B`` requests,
``nc_r`` computed tokens and ``S0 = Σ (nc_r + 1)``, iteration ``j`` reads
``S0 + B·j`` KV tokens, so its duration is
``StepTimeModel.step_time(0, B, S0 + B·j)`` — the very call ``Engine.step``
makes, so times are bit-identical. The run stops *before* the first iteration
in which a request would finish (``target_len − num_output − 1`` iterations)
or would need more free blocks than remain (request ``r`` needs a new block at
iterations ``cap_r − nc_r + m·block_size``); the stopping iteration is then
done by ``Engine.step`` itself (finish, preemption). No state changes until
``sync(t)`` applies the iterations that started before ``t`` — called when
the run's end event fires, before a request is added (it joins the next
iteration, as in the engine) and before a pressure read. Applying ``m``
iterations allocates blocks in the same order, appends the same planned
tokens, caches the same full blocks and adds the same counters as ``m``
calls of ``Engine.step``.

Not emitted: the per-iteration partial ``RequestOutput``s of a run (the
simulation only needs first tokens and finishes, which always come from
``Engine.step``). Concurrency: one owner (the simulation loop).
"""

from __future__ import annotations

from dataclasses import dataclass

from concurproxy.worker.engine import Engine, EngineConfig, StepResult
from concurproxy.worker.engine.hashing import extend_block_hashes

MAX_RUN = 4096  # iterations planned at once


@dataclass(slots=True)
class _Run:
    start: float
    ends: list[float]  # end time of each planned iteration
    durations: list[float]
    batch: int
    allocs: dict[int, list[int]]  # iteration → running indices needing a block (running order)


class ExactEngine(Engine):
    """The worker's engine, one ``Engine.step`` per iteration (the reference)."""

    iterations = 0

    @property
    def planned(self) -> bool:
        return False

    def advance(self, now: float, until: float | None = None) -> StepResult:
        res = self.step(now)
        if res.num_scheduled:
            self.iterations += 1
        return res

    def sync(self, t: float) -> bool:
        return False


class FastEngine(ExactEngine):
    """``Engine`` plus exact fast-forward of pure-decode runs (see the module doc)."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._run: _Run | None = None

    @property
    def planned(self) -> bool:
        return self._run is not None

    def advance(self, now: float, until: float | None = None) -> StepResult:
        """Next iteration(s) from ``now``: a planned decode run of ≥ 2 iterations, else one step.

        ``until``: plan no iteration that starts at or after it (the next pressure read, which
        would cut the run there anyway).
        """
        self.sync(now)
        start = max(now, self.busy_until)
        run = self._plan(start, until)
        if run is None:
            return super().advance(now)
        self._run = run
        b = run.batch
        return StepResult(start, run.ends[-1] - start, (), 0, b * len(run.ends), b, ())

    def _plan(self, start: float, until: float | None) -> _Run | None:
        cfg = self.config
        running = self.running
        b = len(running)
        if self.waiting or not running or b > cfg.max_num_batched_tokens:
            return None
        k = MAX_RUN
        s0 = 0
        for req in running:
            nc = req.num_computed
            if req.num_tokens - nc != 1 or req.num_output == 0 or req.high_water > nc:
                return None
            k = min(k, req.target_len - req.num_output - 1)
            s0 += nc + 1
        if k < 2:
            return None
        step_time = cfg.timing.step_time
        t = start
        ends: list[float] = []
        durations: list[float] = []
        horizon = until if until is not None and until > start else None
        for j in range(k):
            if horizon is not None and t >= horizon:
                break
            d = step_time(0, b, s0 + b * j, 0.0)
            t = t + d
            durations.append(d)
            ends.append(t)
        k = len(ends)
        if k < 2:
            return None
        bs = cfg.block_size
        allocs: dict[int, list[int]] = {}
        for i, req in enumerate(running):
            j = len(req.blocks) * bs - req.num_computed
            while j < k:
                allocs.setdefault(j, []).append(i)
                j += bs
        free = self.pool.num_free
        if allocs:
            used = 0
            for j in sorted(allocs):
                used += len(allocs[j])
                if used > free:
                    k = j
                    break
        if k < 2:
            return None
        return _Run(start, ends[:k], durations[:k], b, allocs)

    def sync(self, t: float) -> bool:
        """Apply the planned iterations that started before ``t``; drop the rest. True if a plan existed."""
        run = self._run
        if run is None:
            return False
        self._run = None
        m = 0
        ends = run.ends
        if run.start <= t:
            m = 1
            while m < len(ends) and ends[m - 1] < t:
                m += 1
        if m:
            self._apply(run, m)
        return True

    def _apply(self, run: _Run, m: int) -> None:
        pool, stats, bs = self.pool, self.stats, self.config.block_size
        running = self.running
        for j in range(m):
            for i in run.allocs.get(j, ()):
                running[i].blocks.extend(pool.allocate(1))
        seen = self._seen_hashes
        ends = run.ends
        for j in range(1, m):  # every request of the batch: one token per iteration
            stats.itl.observe(ends[j] - ends[j - 1], run.batch)
        for req in running:
            stats.itl.observe(ends[0] - req.last_token)
            req.last_token = ends[m - 1]
            nc0 = req.num_computed
            no = req.num_output
            req.token_ids.extend(req.planned_ids[no : no + m])
            req.num_output = no + m
            req.num_computed = nc0 + m
            req.high_water = nc0 + m
            hashes = extend_block_hashes(req.block_hashes, req.token_ids, bs)
            if (nc0 + m) // bs > nc0 // bs:
                for kb in range(nc0 // bs, (nc0 + m) // bs):
                    h = hashes[kb] if kb < len(hashes) else None
                    if h is not None and h in seen and not pool.is_cached(h):
                        stats.evicted_prefix_recompute_tokens += bs
            self._cache_full_blocks(req)
        stats.generation_tokens += run.batch * m
        stats.steps += m
        for d in run.durations[:m]:
            stats.busy_time += d
        self.busy_until = run.ends[m - 1]
        self.iterations += m


def make_engine(config: EngineConfig, mode: str) -> ExactEngine:
    """``fast`` (default: exact fast-forward of decode runs) or ``exact`` (one call per iteration)."""
    if mode == "fast":
        return FastEngine(config)
    if mode == "exact":
        return ExactEngine(config)
    raise ValueError(f"unknown engine mode {mode!r}; known: fast, exact")
