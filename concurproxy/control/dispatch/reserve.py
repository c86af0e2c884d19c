"""KV headroom reservation on one replica: control steps find free KV blocks at once.

Why: measured through the proxy (README, fairness), a short control step's tail
was spent *inside the engine*, waiting for free KV blocks: the other tenant's
steps keep the paged KV cache full, a waiting request does not preempt a
running one in vLLM V1 (vllm-project/vllm#40004), so it waits until one of them
finishes. The engine cannot be told to keep room; the proxy, which sends every
step, can: it keeps what the other steps may hold below the capacity minus a
reserve while control steps are about.

Algorithm (per replica; ``capacity`` = the engine's KV tokens, from its metrics):

* *protected*: a step ``DispatchParams.is_protected`` (priority
  ``protect_priority`` or more urgent, not a long prefill). It always starts.
* Every other step has a *footprint* ``est_prompt_tokens + max_tokens`` (the
  KV it can hold at its end; a shared cached prefix is counted in full, so the
  sum over-estimates: it holds back, never over-commits), counted from its start
  to its end.
* The reserve is *active* while a protected step is in flight on the replica or
  started or ended less than ``reserve_idle_s`` ago (control agents that step
  every few seconds are expected back).
* While it is active a step starts only if ``in_flight + footprint <=
  capacity · (1 − kv_reserve)``, or nothing else is in flight (a step bigger than
  the limit still runs, alone), and nobody is waiting before it; else it waits.
  Waiting steps start in arrival order (the head is never passed, so a big step
  is not starved by small ones) when steps end or the reserve lapses.
* *Bounded wait*: a step that has waited ``reserve_max_hold_s`` starts whatever
  the rest says (``expire``). Capacity unknown (no metrics yet): nothing waits.

Cost: while control agents are active the other steps use at most
``1 − kv_reserve`` of the KV cache (the wait moves from the engine's queue to the
proxy's); when they are idle, nothing is held.

Pure: ``now`` and ``capacity`` are passed in; the shell sleeps until ``deadline()``.
Single caller.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from concurproxy.control.dispatch.gate import DispatchParams
from concurproxy.control.types import StepInfo


@dataclass(slots=True)
class _Waiter:
    since: float
    footprint: int


class KvReserve:
    stage = "kv_reserve"  # its `stage` label in the dispatch metrics

    def __init__(self, params: DispatchParams) -> None:
        self.params = params
        self._protected: set[int] = set()  # protected steps in flight
        self._last_protected = float("-inf")  # when a protected step last started or ended
        self._in_flight: dict[int, int] = {}  # other steps started: key → footprint
        self._in_flight_tokens = 0
        self._waiting: OrderedDict[int, _Waiter] = OrderedDict()
        self._capacity: int | None = None
        self.held = 0  # steps that had to wait (counter)
        self.forced = 0  # ... and started at reserve_max_hold_s

    @staticmethod
    def footprint(step: StepInfo) -> int:
        return max(0, step.est_prompt_tokens) + max(0, step.max_tokens)

    def active(self, now: float) -> bool:
        return bool(self._protected) or now - self._last_protected < self.params.reserve_idle_s

    def limit(self) -> int | None:
        """KV tokens the other steps may hold while the reserve is active (None: capacity unknown)."""
        cap = self._capacity
        return None if cap is None else int(cap * (1.0 - self.params.kv_reserve))

    def start(self, key: int, step: StepInfo, now: float, capacity: int | None) -> bool:
        """A step is about to be sent. True: send it now; False: it waits until released."""
        if capacity:
            self._capacity = capacity
        if self.params.is_protected(step):
            self._protected.add(key)
            self._last_protected = now
            return True
        fp = self.footprint(step)
        if not self._waiting and self._fits(fp, now):
            self._run(key, fp)
            return True
        self._waiting[key] = _Waiter(now, fp)
        self.held += 1
        return False

    def end(self, key: int, now: float) -> list[int]:
        """The step ended (any outcome) or gave up waiting. Returns the waiting steps to start now."""
        if key in self._protected:
            self._protected.discard(key)
            self._last_protected = now
        self._in_flight_tokens -= self._in_flight.pop(key, 0)
        self._waiting.pop(key, None)
        return self._release(now)

    def expire(self, now: float) -> list[int]:
        """Waiting steps that reached ``reserve_max_hold_s`` start now (bounded wait), and all that fit
        once the reserve has lapsed."""
        due = [k for k, w in self._waiting.items() if now - w.since >= self.params.reserve_max_hold_s]
        for k in due:
            self._run(k, self._waiting.pop(k).footprint)
        self.forced += len(due)
        return due + self._release(now)

    def deadline(self) -> float | None:
        """When to call ``expire``: the oldest waiter's bound, or when the reserve lapses (None: nobody waits)."""
        oldest = next(iter(self._waiting.values()), None)
        if oldest is None:
            return None
        bound = oldest.since + self.params.reserve_max_hold_s
        return bound if self._protected else min(bound, self._last_protected + self.params.reserve_idle_s)

    def waiting(self) -> int:
        return len(self._waiting)

    def in_flight_tokens(self) -> int:
        return self._in_flight_tokens

    def _fits(self, footprint: int, now: float) -> bool:
        limit = self.limit()
        if limit is None or not self.active(now) or not self._in_flight:
            return True
        return self._in_flight_tokens + footprint <= limit

    def _run(self, key: int, footprint: int) -> None:
        self._in_flight[key] = footprint
        self._in_flight_tokens += footprint

    def _release(self, now: float) -> list[int]:
        out: list[int] = []
        while self._waiting:
            k, w = next(iter(self._waiting.items()))
            if not self._fits(w.footprint, now):
                break
            del self._waiting[k]
            self._run(k, w.footprint)
            out.append(k)
        return out
