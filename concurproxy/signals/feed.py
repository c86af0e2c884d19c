"""The node agent's ``GET /pressure`` JSON feed: one schema, written by the agent, read by the poller.

Clock independence
    The agent and the proxy run on different machines with unrelated
    monotonic clocks, so the feed never ships a monotonic timestamp. It
    ships ``age_s`` — how old the engine data was when the response was
    built — and the reader re-stamps it on its own clock:
    ``ts = received_at - age_s`` (transfer time makes data look slightly
    fresher than it is; at sub-millisecond LAN latency that is noise).
    ``time`` (Unix seconds) is for humans and logs only.

Shape (version 1)::

    {"version": 1, "time": 1763890000.12,
     "engine": {"url": "...", "ok": true, "error": null, "age_s": 0.04, "flavour": "vllm",
                "kv_usage": 0.42, "running": 7, "waiting": 0, "preemptions_per_s": 0.0,
                "prefix_hit_rate": 0.93, "kv_capacity_tokens": 196608, "prefill_iterations": 11.5,
                "scrapes": 1200, "failures": 0},
     "nvml": {"available": false, "error": "NVML Shared Library Not Found", "age_s": 0.3,
              "gpus": [{"index": 0, "name": "...", "memory_used_bytes": 0, "memory_total_bytes": 0,
                        "utilization_pct": 0, "memory_utilization_pct": 0}]}}
"""

from __future__ import annotations

from typing import Any

from concurproxy.control.types import PressureSnapshot

FEED_VERSION = 1
SOURCE = "node-agent"


class FeedError(ValueError):
    """The document is not a pressure feed this code understands."""


def engine_section(
    snap: PressureSnapshot, now: float, *, url: str, flavour: str | None, scrapes: int, failures: int
) -> dict[str, Any]:
    """Encode one snapshot (stamped on the agent's clock) as the feed's ``engine`` object."""
    return {
        "url": url,
        "ok": snap.ok,
        "error": snap.error,
        "age_s": round(max(now - snap.ts, 0.0), 6),
        "flavour": flavour,
        "kv_usage": snap.kv_usage,
        "running": snap.running,
        "waiting": snap.waiting,
        "preemptions_per_s": snap.preemptions_per_s,
        "prefix_hit_rate": snap.prefix_hit_rate,
        "kv_capacity_tokens": snap.kv_capacity_tokens,
        "prefill_iterations": snap.prefill_iterations,
        "scrapes": scrapes,
        "failures": failures,
    }


def _num(d: dict[str, Any], key: str, kind: type) -> Any:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FeedError(f"engine.{key}: expected a number, got {type(v).__name__}")
    return kind(v)


def snapshot_from_feed(doc: object, received_at: float) -> PressureSnapshot:
    """Decode a parsed ``/pressure`` document into a snapshot on the reader's clock."""
    if not isinstance(doc, dict):
        raise FeedError("feed is not a JSON object")
    version = doc.get("version")
    if version != FEED_VERSION:
        raise FeedError(f"unsupported feed version {version!r} (expected {FEED_VERSION})")
    eng = doc.get("engine")
    if not isinstance(eng, dict):
        raise FeedError("feed has no 'engine' object")
    age = _num(eng, "age_s", float)
    if age is None or age < 0:
        raise FeedError("engine.age_s missing or negative")
    ok = eng.get("ok")
    if not isinstance(ok, bool):
        raise FeedError("engine.ok must be a boolean")
    error = eng.get("error")
    return PressureSnapshot(
        ts=received_at - age,
        ok=ok,
        kv_usage=_num(eng, "kv_usage", float),
        running=_num(eng, "running", int),
        waiting=_num(eng, "waiting", int),
        preemptions_per_s=_num(eng, "preemptions_per_s", float),
        prefix_hit_rate=_num(eng, "prefix_hit_rate", float),
        kv_capacity_tokens=_num(eng, "kv_capacity_tokens", int),
        prefill_iterations=_num(eng, "prefill_iterations", float),
        source=SOURCE,
        error=None if ok else str(error or "node agent reports the engine not ok"),
    )
