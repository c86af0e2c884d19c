"""``window-room``: prefer replicas whose admission window has free slots.

``score(r) = window_room(r) / window_size(r)``, clamped to [0, 1]. Without a window size the
room is scored against ``room_scale`` (``min(1, room / room_scale)``); without admission
information (``window_room`` is None) the score is ``0`` for every replica, i.e. neutral.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.scorers.base import ScoreContext, clamp01
from concurproxy.routing.types import ReplicaView


class WindowRoomScorer:
    name = "window-room"

    def __init__(self, room_scale: float = 8.0) -> None:
        if room_scale <= 0:
            raise ValueError("room_scale must be > 0")
        self.room_scale = room_scale

    def _one(self, r: ReplicaView) -> float:
        if r.window_room is None:
            return 0.0
        if r.window_size:
            return clamp01(r.window_room / r.window_size)
        return clamp01(r.window_room / self.room_scale)

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]:
        return [self._one(r) for r in replicas]
