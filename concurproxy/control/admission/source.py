"""Which signal controls a replica's window: its KV pressure, or its step latency when it has none.

A fleet's engines do not all export vLLM/SGLang metrics (SGLang without ``--enable-metrics``,
llama.cpp, TGI, another gateway, a vLLM behind a path prefix). Stale pressure must throttle —
it is what keeps a replica whose engine stopped answering from being flooded — but a signal
that never existed must not: before this, every step to such an engine waited in the admission
queue for a KV reading that could not come ("saturated: source-error"), and clients timed out.

States (``PressureSource.mode(now)``), from the snapshots the window observes:

* ``kv``      — the latest *usable* snapshot (read ok, with a KV usage) is fresh: the configured
  controller (``aimd``) decides W on KV signals, the footprint budget applies.
* ``stale``   — the replica gave usable snapshots, the newest is older than ``stale_after_s``:
  saturated (nothing new admitted), for at most ``stale_grace_s`` beyond that. Also at the
  start, before any reading came back and for at most ``stale_after_s``: new agents wait for
  the first poll instead of all being admitted with no window and no budget (in virtual time a
  decode swarm whose 24 agents arrived at once was all admitted, thrashed, and lost 4-12%).
* ``latency`` — a reading came back without a KV signal (failed, no KV usage) and none ever had
  one, or no reading at all for ``stale_after_s``, or stale past the grace: the fallback
  controller (``gradient``: step latency, Gradient2-style) decides W; never saturated for want
  of data. The first usable snapshot switches back to ``kv``.

``observe`` reports a change of mode (the shell logs it once and sets
``concurproxy_pressure_source{replica,source}``); ``mode(now)`` is evaluated at any time, so a
signal that stops arriving altogether (no snapshots at all) still falls back after the grace.
Controllers that read no pressure (``static``, ``none``) are always ``static``.

Pure: ``now`` is passed in; single caller (the replica's window).
"""

from __future__ import annotations

from collections.abc import Callable

from concurproxy.control.limits.base import StepSample, WindowController
from concurproxy.control.types import PressureSnapshot


def usable(s: PressureSnapshot) -> bool:
    """A reading the KV controller can act on: it succeeded and carries a KV usage."""
    return s.ok and s.kv_usage is not None


class PressureSource:
    def __init__(
        self,
        kv: WindowController,
        make_fallback: Callable[[], WindowController] | None,
        grace_s: float,
    ) -> None:
        self.kv = kv
        self._make_fallback = make_fallback
        self._fallback: WindowController | None = None
        self.grace_s = grace_s
        self.last_usable: float | None = None  # ts of the newest usable snapshot
        self.first_seen: float | None = None  # when the source was first asked or fed (its start)
        self.unusable_seen = False  # a reading came back without a KV signal (failed, or no KV usage)
        self.reported: str | None = None  # the mode last reported by observe

    @property
    def fallback(self) -> WindowController | None:
        """The latency-based controller, made on first need (it learns from steps from then on)."""
        if self._fallback is None and self._make_fallback is not None:
            self._fallback = self._make_fallback()
        return self._fallback

    def on_step(self, sample: StepSample) -> None:
        """Both controllers learn from every ended step (the fallback once it exists), so a switch is warm."""
        self.kv.on_step(sample)
        if self._fallback is not None:
            self._fallback.on_step(sample)

    def mode(self, now: float) -> str:
        stale_after = self.kv.stale_after_s
        if stale_after is None:
            return "static"
        if self.last_usable is None:
            if self.first_seen is None:
                self.first_seen = now
            if self._make_fallback is None:
                return "stale"
            # before the first reading came back, nothing is known yet: the proxy waits for it (one poll)
            # instead of admitting every agent that arrives in the meantime without a window or a budget
            waited = now - self.first_seen > stale_after
            return "latency" if self.unusable_seen or waited else "stale"
        age = now - self.last_usable
        if age <= stale_after:
            return "kv"
        if age <= stale_after + self.grace_s or self._make_fallback is None:
            return "stale"
        return "latency"

    def active(self, now: float) -> WindowController:
        if self.mode(now) == "latency":
            fb = self.fallback
            if fb is not None:
                return fb
        return self.kv

    def observe(self, snapshot: PressureSnapshot | None, now: float) -> str | None:
        """Record a reading; returns the new mode when it changed since the last call, else None."""
        if self.first_seen is None:
            self.first_seen = now
        if snapshot is not None and usable(snapshot):
            self.last_usable = snapshot.ts if self.last_usable is None else max(self.last_usable, snapshot.ts)
        elif snapshot is not None:
            self.unusable_seen = True
        mode = self.mode(now)
        if mode == self.reported:
            return None
        self.reported = mode
        return mode
