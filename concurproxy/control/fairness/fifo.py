"""``fifo``: first come, first served; the baseline every other policy is measured against.

State: an ``OrderedDict`` item → step (a plain dict degrades when popped from the
front). push / pop / remove are O(1); ``charge`` records nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar

from concurproxy.control.fairness.base import FairnessParams
from concurproxy.control.types import StepInfo

FifoState = OrderedDict[Hashable, StepInfo]


class FifoPolicy:
    name: ClassVar[str] = "fifo"

    def __init__(self, params: FairnessParams | None = None) -> None:
        self.params = params or FairnessParams()

    @property
    def shared_counters(self) -> None:
        return None  # no counters: nothing to share across instances

    def new_state(self) -> FifoState:
        return OrderedDict()

    def push(self, state: FifoState, item: Hashable, step: StepInfo, now: float) -> None:
        if item in state:
            raise ValueError(f"item already queued: {item!r}")
        state[item] = step

    def peek(self, state: FifoState, now: float) -> Hashable | None:
        return next(iter(state), None)

    def pop(self, state: FifoState, now: float) -> Hashable | None:
        if not state:
            return None
        return state.popitem(last=False)[0]

    def remove(self, state: FifoState, item: Hashable) -> bool:
        return state.pop(item, None) is not None

    def charge(self, state: FifoState, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None:
        return None

    def size(self, state: FifoState) -> int:
        return len(state)
