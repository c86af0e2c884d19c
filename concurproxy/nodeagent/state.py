"""What the node agent knows at a moment: the engine tracker, the last GPU reading, counters.

Pure container shared by the HTTP handlers, the Prometheus collector and the background
loops; all of them run on one event loop, so no locking. Times are on the agent's monotonic
clock and only ever leave the process as ages (see :mod:`concurproxy.signals.feed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concurproxy.nodeagent.gpu import GpuReading
from concurproxy.signals.engine_metrics import EngineSample
from concurproxy.signals.feed import FEED_VERSION, engine_section
from concurproxy.signals.pressure import PressureTracker


@dataclass
class AgentState:
    engine_url: str
    tracker: PressureTracker
    last_sample: EngineSample | None = None
    scrapes: int = 0
    scrape_failures: int = 0
    gpu: GpuReading = field(default_factory=lambda: GpuReading(available=False, error="not read yet"))
    gpu_ts: float | None = None
    gpu_reads: int = 0

    def pressure_doc(self, now: float, wall_time: float) -> dict[str, Any]:
        """The ``GET /pressure`` document as of ``now`` (agent clock) and ``wall_time`` (Unix s)."""
        snap = self.tracker.snapshot_at(now)
        flavour = None if self.last_sample is None else self.last_sample.flavour
        engine = engine_section(
            snap,
            now,
            url=self.engine_url,
            flavour=flavour,
            scrapes=self.scrapes,
            failures=self.scrape_failures,
        )
        if self.last_sample is not None:
            s = self.last_sample
            engine["counters"] = {
                "preemptions_total": s.preemptions_total,
                "prefix_queries_total": s.prefix_queries_total,
                "prefix_hits_total": s.prefix_hits_total,
                "prompt_tokens_total": s.prompt_tokens_total,
                "generation_tokens_total": s.generation_tokens_total,
            }
        gpu = self.gpu
        return {
            "version": FEED_VERSION,
            "time": round(wall_time, 3),
            "engine": engine,
            "nvml": {
                "available": gpu.available,
                "error": gpu.error,
                "age_s": None if self.gpu_ts is None else round(max(now - self.gpu_ts, 0.0), 6),
                "gpus": [
                    {
                        "index": g.index,
                        "name": g.name,
                        "uuid": g.uuid,
                        "memory_used_bytes": g.memory_used_bytes,
                        "memory_total_bytes": g.memory_total_bytes,
                        "utilization_pct": g.utilization_pct,
                        "memory_utilization_pct": g.memory_utilization_pct,
                    }
                    for g in gpu.gpus
                ],
            },
        }
