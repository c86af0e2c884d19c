"""Several engines on one virtual timeline (no sleeps): the driver offline simulations use.

``run_until(t)`` repeatedly steps whichever engine can start a step earliest
(ties by index) until no engine can start one before ``t``, and returns the
step results in start order. Between calls the caller adds requests with
``arrival`` = its current virtual time, exactly as the real-time driver does
with the wall clock — both drive the same :class:`Engine`.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.worker.engine import Engine, StepResult


class VirtualTimeline:
    def __init__(self, engines: Sequence[Engine]) -> None:
        self.engines = list(engines)

    def next_time(self) -> float | None:
        times = [t for e in self.engines if (t := e.next_event_time()) is not None]
        return min(times) if times else None

    def run_until(self, t: float) -> list[tuple[int, StepResult]]:
        """Step engines whose next step starts before ``t``; a step may end after ``t``."""
        out: list[tuple[int, StepResult]] = []
        while True:
            best: tuple[float, int] | None = None
            for i, e in enumerate(self.engines):
                nt = e.next_event_time()
                if nt is not None and nt < t and (best is None or nt < best[0]):
                    best = (nt, i)
            if best is None:
                return out
            res = self.engines[best[1]].step(best[0])
            out.append((best[1], res))
            if res.duration == 0.0 and not res.outputs and not res.preempted:
                # nothing could be scheduled (should not happen); avoid spinning
                return out
