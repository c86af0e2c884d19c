"""The steppable engine: continuous batching over a paged, prefix-cached KV pool.

Scheduling (one :meth:`Engine.step`, as vLLM V1's scheduler does it)
---------------------------------------------------------------------
1. Running requests, oldest first, each get ``min(remaining, budget)`` new
   tokens (1 when decoding, a chunk when prefilling: chunked prefill) from a
   per-step budget of ``max_num_batched_tokens``; with a
   ``long_prefill_token_threshold`` no request gets more than that in one step. When a request's new tokens
   need a block and none is free, the *newest* running request is preempted by
   recompute: its blocks are freed (they stay cached until evicted), its
   computed-token count drops to 0 and it goes to the front of the waiting
   queue. If the newest is the request itself, it stops there.
   With ``scheduling_policy="priority"`` the victim is instead the running request
   with the largest ``(priority, arrival)`` (lowest priority, newest among equals)
   wherever it sits; one already given tokens in this step gives them back.
2. If nobody was preempted in this step, waiting requests (FIFO; by
   ``(priority, arrival)`` under the priority policy) are admitted
   while budget, ``max_num_seqs`` and free blocks allow. On admission the
   longest cached prefix (chained block hashes, at most ``len-1`` tokens) is
   reused; the rest is prefilled (chunked if needed). As in vLLM V1, a waiting
   request never preempts a running one, whatever its priority: it takes the
   blocks that finishes and running-phase preemptions free. ``preempt_for_waiting``
   (not in vLLM) lets a waiting request that finds no blocks preempt running
   requests of strictly lower priority until it fits.
3. The batch runs for ``StepTimeModel.step_time(...)`` seconds. Every request
   whose known tokens are all computed samples one token; a request finishes
   when it has produced its target length (``max_tokens``, or a seeded draw).
   Full computed blocks are hashed and registered in the prefix cache.

Time: ``step(now)`` starts at ``max(now, end of the previous step)`` and all
events of the step (first tokens, finishes) are stamped with its end. The
engine never reads a clock and never sleeps: a real-time driver sleeps
``duration / time_scale`` between steps, a virtual-time driver just adds it.

Concurrency: none; one owner calls it (the asyncio driver or a simulation loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from concurproxy.kvevents.decode import BlockRemoved, BlockStored, KvEvent
from concurproxy.tokens import pieces, synth_text, token_id
from concurproxy.worker.engine.blocks import BlockPool
from concurproxy.worker.engine.config import EngineConfig
from concurproxy.worker.engine.hashing import extend_block_hashes
from concurproxy.worker.engine.queues import enqueue, lower_priority_victim, pop_victim
from concurproxy.worker.engine.request import (
    EngineRequest,
    RequestOutput,
    RequestRejected,
    Status,
    StepResult,
)
from concurproxy.worker.engine.stats import EngineStats, RequestTiming


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.pool = BlockPool(config.num_blocks, config.enable_prefix_caching)
        self.stats = EngineStats()
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.requests: dict[str, EngineRequest] = {}
        self.busy_until = 0.0
        self._seen_hashes: set[int] = set()  # blocks ever cached (bounded), for eviction-recompute stats
        self._seen_cap = max(4096, 64 * config.num_blocks)
        self._piece_ids: dict[str, int] = {}
        self.kv_events: list[KvEvent] | None = None  # see enable_kv_events

    # -- KV cache events (vLLM's --kv-events-config) -----------------------
    def enable_kv_events(self) -> None:
        """From now on record, in order, a ``BlockStored`` for each block newly registered in the
        prefix cache (a run of consecutive blocks of one request per event, with its parent hash
        and token ids) and a ``BlockRemoved`` for each cached block evicted, as vLLM publishes them.
        Freed-but-cached blocks are not removed: they stay findable until evicted."""
        events: list[KvEvent] = []
        self.kv_events = events
        self.pool.on_evict = lambda h: events.append(BlockRemoved((h,), medium="GPU"))

    def drain_kv_events(self) -> list[KvEvent]:
        events = self.kv_events
        if not events:
            return []
        out = events.copy()
        events.clear()
        return out

    # -- state -------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def kv_usage(self) -> float:
        return self.pool.usage()

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def next_event_time(self) -> float | None:
        """When the next step can start, or None when idle (nothing to do until a request arrives).

        Callers add requests when their clock reaches the arrival time (``arrival`` never lies
        before the start of the step in progress); an idle engine's next step starts at the
        arrival of the request that woke it.
        """
        return self.busy_until if self.has_work() else None

    # -- requests ----------------------------------------------------------
    def add_request(
        self,
        req_id: str,
        prompt_token_ids: Sequence[int],
        max_tokens: int | None = None,
        arrival: float = 0.0,
        ignore_eos: bool = False,
        output_len: int | None = None,
        priority: int = 0,
    ) -> EngineRequest:
        """Queue a request. ``output_len`` forces the generated length (≤ ``max_tokens``).

        ``priority`` (lower = earlier) needs ``scheduling_policy="priority"``; like vLLM, the
        fcfs policy refuses a non-zero one rather than silently ignoring it."""
        cfg = self.config
        if priority != 0 and cfg.scheduling_policy != "priority":
            raise RequestRejected(f"Got priority {priority} but Priority scheduling is not enabled.")
        if req_id in self.requests:
            raise RequestRejected(f"duplicate request id {req_id!r}")
        if not prompt_token_ids:
            raise RequestRejected("the prompt is empty")
        if max_tokens is None:
            max_tokens = max(1, min(cfg.default_max_tokens, cfg.max_model_len - len(prompt_token_ids)))
        if max_tokens < 1:
            raise RequestRejected("max_tokens must be at least 1")
        if len(prompt_token_ids) + max_tokens > cfg.max_model_len:
            self.stats.requests_rejected += 1
            raise RequestRejected(
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, you "
                f"requested {len(prompt_token_ids) + max_tokens} tokens ({len(prompt_token_ids)} in the "
                f"messages, {max_tokens} in the completion)."
            )
        target = output_len if output_len is not None else cfg.output_lengths.draw(req_id, max_tokens, ignore_eos)
        target = max(1, min(target, max_tokens))
        planned_pieces = pieces(synth_text(target, cfg.seed))
        planned_ids = [self._piece_id(p) for p in planned_pieces]
        req = EngineRequest(
            req_id=req_id,
            prompt_len=len(prompt_token_ids),
            max_tokens=max_tokens,
            target_len=target,
            arrival=arrival,
            token_ids=list(prompt_token_ids),
            planned_ids=planned_ids,
            planned_pieces=planned_pieces,
            priority=priority,
        )
        extend_block_hashes(req.block_hashes, req.token_ids, cfg.block_size)
        if not self.has_work():
            self.busy_until = max(self.busy_until, arrival)  # an idle engine starts when work arrives
        self.requests[req_id] = req
        enqueue(self.waiting, req, False, cfg.scheduling_policy)
        self.stats.requests_added += 1
        return req

    def abort(self, req_id: str, now: float) -> RequestOutput | None:
        """Drop a request (client gone). Returns its final output, or None if unknown/finished."""
        req = self.requests.get(req_id)
        if req is None:
            return None
        if req.status is Status.RUNNING:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        return self._finish(req, "abort", max(now, req.arrival), ())

    # -- the step ----------------------------------------------------------
    def step(self, now: float) -> StepResult:
        cfg = self.config
        start = max(now, self.busy_until)
        budget = cfg.max_num_batched_tokens
        scheduled: list[tuple[EngineRequest, int]] = []
        preempted: list[str] = []

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = cfg.chunk(req.num_tokens - req.num_computed, budget)
            scheduled_self = True
            while not self._grow(req, num_new):
                victim = pop_victim(self.running, cfg.scheduling_policy)
                if victim.pos < i:  # already scheduled in this step
                    budget += self._give_back(scheduled, victim.req)
                    i -= 1
                self._preempt(victim.req)
                preempted.append(victim.req.req_id)
                if victim.req is req:
                    scheduled_self = False
                    break
            if not scheduled_self:
                break
            scheduled.append((req, num_new))
            budget -= num_new
            i += 1

        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
                num_new = self._admit(self.waiting[0], budget, start)
                if num_new == 0:
                    if cfg.preempt_for_waiting and (loser := lower_priority_victim(self.running, self.waiting[0])):
                        budget += self._give_back(scheduled, loser)
                        self.running.remove(loser)
                        self._preempt(loser)
                        preempted.append(loser.req_id)
                        continue
                    break
                req = self.waiting.popleft()
                self.running.append(req)
                scheduled.append((req, num_new))
                budget -= num_new
        return self._execute(start, scheduled, tuple(preempted))

    # -- internals ---------------------------------------------------------
    def _piece_id(self, piece: str) -> int:
        tid = self._piece_ids.get(piece)
        if tid is None:
            tid = self._piece_ids[piece] = token_id(piece)
        return tid

    def _blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.config.block_size)

    def _grow(self, req: EngineRequest, num_new: int) -> bool:
        need = self._blocks_for(req.num_computed + num_new) - len(req.blocks)
        if need <= 0:
            return True
        if need > self.pool.num_free:
            return False
        req.blocks.extend(self.pool.allocate(need))
        return True

    @staticmethod
    def _give_back(scheduled: list[tuple[EngineRequest, int]], req: EngineRequest) -> int:
        """Take a request that is being preempted out of this step's schedule: the tokens it had been
        given in this step go back to the step's budget (0 if it was not scheduled yet)."""
        for k, (r, n) in enumerate(scheduled):
            if r is req:
                del scheduled[k]
                return n
        return 0

    def _preempt(self, req: EngineRequest) -> None:
        self.pool.free(reversed(req.blocks))
        req.blocks = []
        req.num_computed = 0
        req.num_cached_blocks = 0
        req.status = Status.WAITING
        req.num_preemptions += 1
        self.stats.preemptions += 1
        enqueue(self.waiting, req, True, self.config.scheduling_policy)

    def _admit(self, req: EngineRequest, budget: int, start: float) -> int:
        """Give a waiting request its cached prefix and first blocks; 0 if it does not fit now."""
        bs = self.config.block_size
        extend_block_hashes(req.block_hashes, req.token_ids, bs)
        max_hit_blocks = (req.num_tokens - 1) // bs
        hit = self.pool.lookup(req.block_hashes[:max_hit_blocks])
        hit_tokens = len(hit) * bs
        num_new = self.config.chunk(req.num_tokens - hit_tokens, budget)
        need = self._blocks_for(hit_tokens + num_new) - len(hit)
        free_after_touch = self.pool.num_free - sum(1 for b in hit if self.pool.is_free(b))
        if need > free_after_touch:
            return 0
        self.pool.touch(hit)
        req.blocks = hit + self.pool.allocate(need)
        req.num_computed = hit_tokens
        req.num_cached_blocks = len(hit)
        req.status = Status.RUNNING
        if req.first_scheduled is None:
            req.first_scheduled = start
            req.prefix_hit_tokens = hit_tokens
        self.stats.prefix_queries += req.num_tokens
        self.stats.prefix_hits += hit_tokens
        return num_new

    def _execute(
        self, start: float, scheduled: list[tuple[EngineRequest, int]], preempted: tuple[str, ...]
    ) -> StepResult:
        cfg, stats, bs = self.config, self.stats, self.config.block_size
        prefill = decode = kv_read = 0
        attn_pairs = 0.0
        sampling: list[EngineRequest] = []
        for req, num_new in scheduled:
            lo, hi = req.num_computed, req.num_computed + num_new
            if num_new == 1 and req.num_output > 0 and hi == req.num_tokens and req.high_water <= lo:
                decode += 1
            else:
                prefill += num_new
                attn_pairs += num_new * (2 * lo + num_new) / 2
                stats.recomputed_prefill_tokens += max(0, min(hi, req.high_water) - lo)
            kv_read += hi
            req.num_computed = hi
            if hi > req.high_water:
                for k in range(max(lo, req.high_water) // bs, hi // bs):
                    h = req.block_hashes[k] if k < len(req.block_hashes) else None
                    if h is not None and h in self._seen_hashes and not self.pool.is_cached(h):
                        stats.evicted_prefix_recompute_tokens += bs
                req.high_water = hi
            self._cache_full_blocks(req)
            if hi == req.num_tokens:
                sampling.append(req)
        stats.prefill_tokens_computed += prefill
        duration = cfg.timing.step_time(prefill, decode, kv_read, attn_pairs)
        end = start + duration
        if scheduled:
            stats.steps += 1
            stats.busy_time += duration
            self.busy_until = end

        outputs: list[RequestOutput] = []
        for req in sampling:
            k = req.num_output
            tid = req.planned_ids[k]
            req.token_ids.append(tid)
            req.num_output += 1
            extend_block_hashes(req.block_hashes, req.token_ids, bs)
            stats.generation_tokens += 1
            if req.first_token is None:
                req.first_token = end
                stats.prompt_tokens += req.prompt_len
                stats.ttft.observe(end - req.arrival)
                stats.prefill_time.observe(end - (req.first_scheduled if req.first_scheduled is not None else start))
            else:
                stats.itl.observe(end - req.last_token)
            req.last_token = end
            if req.num_output >= req.target_len:
                self.running.remove(req)
                reason = "length" if req.target_len >= req.max_tokens else "stop"
                outputs.append(self._finish(req, reason, end, ((tid, req.planned_pieces[k]),)))
            else:
                outputs.append(self._output(req, ((tid, req.planned_pieces[k]),)))
        return StepResult(start, duration, tuple(outputs), prefill, decode, len(scheduled), preempted)

    def _cache_full_blocks(self, req: EngineRequest) -> None:
        n_full = req.num_computed // self.config.block_size
        if n_full <= req.num_cached_blocks:
            return
        extend_block_hashes(req.block_hashes, req.token_ids, self.config.block_size)
        seen = self._seen_hashes
        if len(seen) > self._seen_cap:
            seen.clear()
        run_start: int | None = None  # first block of the current run of newly cached blocks (KV events)
        for k in range(req.num_cached_blocks, n_full):
            new = self.pool.cache(req.blocks[k], req.block_hashes[k])
            seen.add(req.block_hashes[k])
            if self.kv_events is not None:
                if new and run_start is None:
                    run_start = k
                elif not new and run_start is not None:
                    self._stored(req, run_start, k)
                    run_start = None
        if run_start is not None:
            self._stored(req, run_start, n_full)
        req.num_cached_blocks = n_full

    def _stored(self, req: EngineRequest, start: int, end: int) -> None:
        assert self.kv_events is not None
        bs = self.config.block_size
        self.kv_events.append(
            BlockStored(
                block_hashes=tuple(req.block_hashes[start:end]),
                parent_block_hash=req.block_hashes[start - 1] if start > 0 else None,
                token_ids=tuple(req.token_ids[start * bs : end * bs]),
                block_size=bs,
                medium="GPU",
            )
        )

    def _output(self, req: EngineRequest, new: tuple[tuple[int, str], ...]) -> RequestOutput:
        return RequestOutput(
            req_id=req.req_id,
            new_token_ids=tuple(t for t, _ in new),
            new_text="".join(p for _, p in new),
            finished=False,
            finish_reason=None,
            prompt_tokens=req.prompt_len,
            output_tokens=req.num_output,
            cached_tokens=req.prefix_hit_tokens,
        )

    def _finish(self, req: EngineRequest, reason: str, end: float, new: tuple[tuple[int, str], ...]) -> RequestOutput:
        self.pool.free(reversed(req.blocks))
        req.blocks = []
        req.status = Status.FINISHED
        req.finish_reason = reason
        del self.requests[req.req_id]
        timing = RequestTiming(req.arrival, req.first_scheduled, req.first_token, end, req.num_preemptions)
        self.stats.record_finished(reason, timing)
        return RequestOutput(
            req_id=req.req_id,
            new_token_ids=tuple(t for t, _ in new),
            new_text="".join(p for _, p in new),
            finished=True,
            finish_reason=reason,
            prompt_tokens=req.prompt_len,
            output_tokens=req.num_output,
            cached_tokens=req.prefix_hit_tokens,
            timing=timing,
        )
