"""Replicas joining and leaving a running proxy (policy reload, DNS discovery).

One place that knows every part holding per-replica state: the pool, the pressure poller,
the router's prefix index, the KV-event feed, the admission windows (and, with Redis, their
shared state), the dispatch stage and the metrics. A joining replica starts with an empty
cache and the most headroom, so the router gives it new agents first, and all its series
exist from the start (0 / NaN). A leaving one is dropped at once: steps already on it keep
their reference and finish, steps waiting for admission there get a 503 to retry elsewhere,
steps held at its dispatch stage are let go, and every series with its ``replica`` label
leaves ``/metrics``.
"""

from __future__ import annotations

import logging

from concurproxy.server.components import Components
from concurproxy.signals.poller import PollTarget
from concurproxy.telemetry.dispatch import prime_replica as prime_dispatch
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.upstream")


def add_replica(c: Components, replica: Replica) -> None:
    c.pool.add(replica)
    if c.poller is not None:
        c.poller.add_target(replica.id, PollTarget.from_url(replica.pressure_url or replica.metrics_url))
    if c.metrics is not None:
        c.metrics.prime(replicas=[replica.id])
        prime_dispatch(c.metrics, c.dispatch, replica.id)  # no stage: its series at 0 all the same
    if c.dispatch is not None:
        c.dispatch.join_replica(replica.id)
    if c.kv_events is not None:
        c.kv_events.add(replica)
    log.info("replica %s joined the pool (%s)", replica.id, replica.base_url)


def remove_replica(c: Components, replica_id: str) -> None:
    c.pool.remove(replica_id)
    if c.poller is not None:
        c.poller.remove_target(replica_id)
    c.router.forget_replica(replica_id)
    if c.kv_events is not None:
        c.kv_events.remove(replica_id)
    c.admission.forget_replica(replica_id)
    if c.shared_state is not None:  # state.backend: redis (its leases there are given back at the next sync)
        c.shared_state.forget_replica(replica_id)
    if c.dispatch is not None:
        c.dispatch.forget_replica(replica_id)
    if c.metrics is not None:
        c.metrics.forget_replica(replica_id)  # last: what the parts above emitted for it goes too
    log.info("replica %s left the pool", replica_id)
