"""Dispatch stage → metrics: what the prefill gate and the KV reserve hold, read at scrape time.

Wire it once, where the stage is built::

    stage = DispatchStage(params, snapshots=..., on_wait=metrics.dispatch_waited)
    watch_dispatch(metrics, stage, replicas=[r.id for r in pool])

* ``on_wait`` → ``concurproxy_dispatch_wait_seconds{replica, stage}``: called by the stage only for a step
  that waited, when it is sent; a step sent at once costs nothing here.
* At each scrape, ``stage.state()`` → ``concurproxy_dispatch_waiting_steps`` and the cores' running totals →
  ``concurproxy_dispatch_held_total`` / ``concurproxy_dispatch_forced_total`` (the cores count anyway);
  with the reserve on, ``concurproxy_dispatch_reserve_in_flight_tokens`` / ``_limit_tokens``.
* The configured replicas get zero-valued series up front (0, not "no data"); a replica that joins
  later (reload, discovery) gets them when it joins (``prime_replica``, from ``server/membership.py``),
  and one that leaves loses them with all its series. Every series a dashboard queries exists on any
  policy: with the KV reserve off (``fairness.kv_reserve: 0``, the default) its in-flight gauge reads 0
  and its limit NaN (no limit); with no dispatch stage at all (``prime_replica(metrics, None, r)``) the
  prefill gate's series read 0 too.

Concurrency: the refresher runs on the event loop, like the stage (see ``ProxyMetrics.add_refresher``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from concurproxy.telemetry.metrics import ProxyMetrics

GATE, RESERVE = "prefill_gate", "kv_reserve"  # the stage label; PrefillGate.stage / KvReserve.stage
_PREFIX = {GATE: "", RESERVE: "reserve_"}  # where each stage's numbers sit in a state() row


class _Params(Protocol):
    @property
    def reserve_enabled(self) -> bool: ...


class _Stage(Protocol):
    @property
    def params(self) -> _Params: ...

    def state(self) -> Mapping[str, Mapping[str, int | None]]: ...


def prime_replica(metrics: ProxyMetrics, stage: _Stage | None, replica: str) -> None:
    """Zero-valued series of ``replica`` (at start, and when a replica joins); ``stage`` None: the proxy
    built no dispatch stage, and the series stay at 0 (the dashboards show 0, not "No data")."""
    reserve_on = stage is not None and stage.params.reserve_enabled
    for name in (GATE, RESERVE) if reserve_on else (GATE,):
        metrics.prime_dispatch(replica, name)
    metrics.set_dispatch_reserve(replica, in_flight_tokens=0, limit_tokens=None)  # NaN limit: unknown or off


def watch_dispatch(metrics: ProxyMetrics, stage: _Stage, replicas: Iterable[str] = ()) -> None:
    """Prime the series of ``replicas`` and publish ``stage.state()`` at every scrape."""
    for replica in replicas:
        prime_replica(metrics, stage, replica)

    def refresh() -> None:
        for replica, row in stage.state().items():
            for name, prefix in _PREFIX.items():
                held = row.get(prefix + "held")
                if held is not None:
                    metrics.set_dispatch_state(
                        replica,
                        name,
                        waiting=row.get(prefix + "waiting") or 0,
                        held=held,
                        forced=row.get(prefix + "forced") or 0,
                    )
            if "reserve_in_flight_tokens" in row:
                metrics.set_dispatch_reserve(
                    replica,
                    in_flight_tokens=row["reserve_in_flight_tokens"] or 0,
                    limit_tokens=row.get("reserve_limit_tokens"),
                )

    metrics.add_refresher(refresh)
