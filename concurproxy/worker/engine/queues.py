"""The engine's waiting-queue order and preemption victims, per scheduling policy (vLLM V1's).

* ``fcfs``: new requests join the back of the waiting queue, preempted ones the front; the
  victim when a running request cannot get a block is the *newest* running request.
* ``priority``: the waiting queue is ordered by ``(priority, arrival)`` (lower first; a
  preempted request re-enters by that key, not at the front); the victim is the running request
  with the largest ``(priority, arrival)`` wherever it sits.
* ``preempt_for_waiting`` (not in vLLM): the running request a waiting one may displace, only
  when its priority is strictly lower.

Pure functions over the engine's ``waiting`` deque and ``running`` list; one owner calls them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from concurproxy.worker.engine.request import EngineRequest


@dataclass(frozen=True, slots=True)
class Victim:
    req: EngineRequest
    pos: int  # where it was in ``running`` (before the step's cursor: already scheduled)


def enqueue(
    waiting: deque[EngineRequest], req: EngineRequest, front: bool, policy: Literal["fcfs", "priority"]
) -> None:
    """fcfs: new requests at the back, preempted ones at the front. priority: both go before
    the first waiting request with a larger ``(priority, arrival)`` (vLLM's heap order)."""
    if policy != "priority":
        if front:
            waiting.appendleft(req)
        else:
            waiting.append(req)
        return
    key = req.sort_key
    for k, other in enumerate(waiting):  # waiting queues are short next to a step's work
        if other.sort_key > key:
            waiting.insert(k, req)
            return
    waiting.append(req)


def pop_victim(running: list[EngineRequest], policy: Literal["fcfs", "priority"]) -> Victim:
    """Remove the running request to preempt: the newest (fcfs) or the lowest priority."""
    if policy == "priority":
        pos = max(range(len(running)), key=lambda k: running[k].sort_key)
    else:
        pos = len(running) - 1
    return Victim(running.pop(pos), pos)


def lower_priority_victim(running: list[EngineRequest], waiting: EngineRequest) -> EngineRequest | None:
    """The running request to preempt for ``waiting`` (preempt_for_waiting): the largest
    ``(priority, arrival)``, if its priority is strictly lower (a larger number) than the
    waiting one's; equal priorities never displace each other (no ping-pong)."""
    if not running:
        return None
    victim = max(running, key=lambda r: r.sort_key)
    return victim if victim.priority > waiting.priority else None
