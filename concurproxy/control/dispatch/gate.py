"""Cost-aware dispatch on one replica: short latency-critical steps are not stuck behind long prefills.

Why: admission decides which agents run; inside the engine, an admitted step
still shares every batch with the others. A long prefill (a new agent's 3k-token
task prompt, a 12k-token context whose prefix was evicted) fills the batch's
token budget for one or more iterations, and every decode iteration of a short
control step that overlaps it takes that long too. Measured through the proxy
(README, fairness) once admission stopped making the light tenant wait, its
served p99 was still ~8x its unloaded value. The proxy knows each step's
uncached prompt estimate before it sends it, so it can order the long ones.

Algorithm (per replica, over steps already admitted):

* ``cost = max(0, est_prompt_tokens − resident_prefix_tokens)``: the prefill the
  engine will do (the router's prefix index says what is resident).
* *long*: ``cost > long_prefill_tokens``; *protected*: not long and of priority
  ``protect_priority`` or more urgent (a control step).
* A step that is not long starts at once, always.
* A long step starts when no protected step is in flight on the replica and
  fewer than ``long_in_prefill`` long steps are in their prefill (started, first
  token not seen yet) — else it waits, and waiting long steps start in arrival
  order. *Bounded wait*: one that has waited ``max_hold_s`` starts whatever the
  rest says (``expire``).
* In flight = from ``start`` to ``end``; in prefill = from ``start`` to
  ``first_token`` (or ``end``).

Cost of the rule: long steps start in the gaps between control steps (bounded by
``max_hold_s``), one prefill at a time (vLLM's own ``max_long_partial_prefills``
is 1 for the same reason); steps that are not long, and every decode, run free.

Pure: ``now`` is passed in; the shell sleeps until ``deadline()``. Single caller.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from concurproxy.config.budgets import FairnessConfig
from concurproxy.control.types import PriorityClass, StepInfo


@dataclass(frozen=True, slots=True)
class DispatchParams:
    long_prefill_tokens: int = 4096
    protect_priority: PriorityClass | None = PriorityClass.high  # None: never hold for control steps
    long_in_prefill: int = 1  # 0: unlimited
    max_hold_s: float = 1.0
    # KV headroom reservation (reserve.KvReserve): share of the replica's KV kept free for protected steps
    kv_reserve: float = 0.0  # 0: off
    reserve_idle_s: float = 5.0  # the reserve holds while a protected step ran this recently
    reserve_max_hold_s: float = 10.0

    @classmethod
    def from_policy(cls, fairness: FairnessConfig) -> DispatchParams:
        p = fairness.protect_priority
        return cls(
            long_prefill_tokens=fairness.long_prefill_tokens,
            protect_priority=None if p is None else PriorityClass[p.value],
            long_in_prefill=fairness.long_prefills_per_replica,
            max_hold_s=fairness.max_prefill_hold_s,
            kv_reserve=fairness.kv_reserve,
            reserve_idle_s=fairness.kv_reserve_idle_s,
            reserve_max_hold_s=fairness.kv_reserve_max_hold_s,
        )

    @property
    def enabled(self) -> bool:
        return self.protect_priority is not None or self.long_in_prefill > 0

    @property
    def reserve_enabled(self) -> bool:
        return self.kv_reserve > 0 and self.protect_priority is not None

    def is_long(self, step: StepInfo) -> bool:
        return max(0, step.est_prompt_tokens - step.resident_prefix_tokens) > self.long_prefill_tokens

    def is_protected(self, step: StepInfo) -> bool:
        p = self.protect_priority
        return p is not None and step.priority <= p and not self.is_long(step)


class PrefillGate:
    stage = "prefill_gate"  # its `stage` label in the dispatch metrics

    def __init__(self, params: DispatchParams) -> None:
        self.params = params
        self._protected: set[int] = set()  # protected steps in flight
        self._prefilling: set[int] = set()  # long steps started, first token not seen
        self._waiting: OrderedDict[int, float] = OrderedDict()  # long steps held: key → since
        self.held = 0  # long steps that had to wait (counter)
        self.forced = 0  # ... and started at max_hold_s

    def _free(self) -> bool:
        cap = self.params.long_in_prefill
        return not self._protected and (cap <= 0 or len(self._prefilling) < cap)

    def start(self, key: int, step: StepInfo, now: float) -> bool:
        """A step is about to be sent. True: send it now; False: it waits until released."""
        if self.params.is_protected(step):
            self._protected.add(key)
            return True
        if not self.params.is_long(step):
            return True
        if not self._waiting and self._free():
            self._prefilling.add(key)
            return True
        self._waiting[key] = now
        self.held += 1
        return False

    def first_token(self, key: int) -> list[int]:
        """The step's first token arrived (its prefill is done). Returns the waiting steps to start now."""
        self._prefilling.discard(key)
        return self._release()

    def end(self, key: int) -> list[int]:
        """The step ended (any outcome) or gave up waiting. Returns the waiting steps to start now."""
        self._protected.discard(key)
        self._prefilling.discard(key)
        self._waiting.pop(key, None)
        return self._release()

    def expire(self, now: float) -> list[int]:
        """Waiting steps that reached ``max_hold_s``: they start now (bounded wait)."""
        due = [k for k, since in self._waiting.items() if now - since >= self.params.max_hold_s]
        for k in due:
            del self._waiting[k]
            self._prefilling.add(k)
        self.forced += len(due)
        return due

    def deadline(self) -> float | None:
        """When the oldest waiting step's bound runs out (None: nobody waits)."""
        oldest = next(iter(self._waiting.values()), None)
        return None if oldest is None else oldest + self.params.max_hold_s

    def waiting(self) -> int:
        return len(self._waiting)

    def _release(self) -> list[int]:
        out: list[int] = []
        while self._waiting and self._free():
            k, _ = self._waiting.popitem(last=False)
            self._prefilling.add(k)
            out.append(k)
        return out
