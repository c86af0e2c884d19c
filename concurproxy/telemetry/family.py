"""One metric family of the catalog: its collector, a cache raw-args -> child, and forgetting a replica.

Callers of :class:`~concurproxy.telemetry.metrics.ProxyMetrics` never touch label strings:
a family maps the raw arguments to bounded label values once, on a cache miss, and keeps
the child. :meth:`Family.forget` removes every series of a replica that left the pool
(found from the collector's own samples, so no metric name is listed twice); later misses
for a replica in ``gone`` get a child of a copy that no registry collects.

Concurrency: the event loop's thread only (see ``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from concurproxy.telemetry.batch import PendingCounter, PendingHistogram
from concurproxy.telemetry.catalog import MetricSpec
from concurproxy.telemetry.labels import BoundedLabel, label_value

_MAX_CACHE = 20_000  # beyond this, children are looked up without caching (memory bound)


class Family:
    """A metric plus a cache raw-args -> child; label guards applied on a cache miss.

    ``pending`` batches the family's samples (counters and histograms) until the next flush.
    ``gone``: replicas that left; a cache miss for one of them gets ``sink``, a child of a copy
    of the metric that no registry collects (so only misses pay for the check)."""

    __slots__ = ("_bounders", "_cache", "_gone", "_rpos", "_sink", "metric", "pending", "spec")

    def __init__(
        self,
        spec: MetricSpec,
        registry: CollectorRegistry,
        bounders: tuple[BoundedLabel | None, ...],
        gone: Mapping[str, float],
    ) -> None:
        self.spec = spec
        self.metric = collector(spec, registry)
        self._bounders = bounders
        self._cache: dict[tuple[object, ...], Any] = {}
        self._rpos = spec.labels.index("replica") if "replica" in spec.labels else None
        self._gone = gone
        self._sink: Any = None
        self.pending: Any = None
        if spec.kind == "histogram":
            self.pending = PendingHistogram(self.child, spec.buckets or ())
        elif spec.kind == "counter":
            self.pending = PendingCounter(self.child)

    def child(self, *key: object) -> Any:
        c = self._cache.get(key)
        if c is None:
            if self._rpos is not None and self._gone and key[self._rpos] in self._gone:
                return self._sink_child()
            values = [b.bound(v) if b is not None else label_value(v) for b, v in zip(self._bounders, key, strict=True)]
            c = self.metric.labels(*values) if values else self.metric
            if len(self._cache) < _MAX_CACHE:
                self._cache[key] = c
        return c

    def forget(self, replica: str) -> None:
        """Remove every series whose ``replica`` label is ``replica``, and the cached children for it."""
        if self._rpos is None:
            return
        pos, names = self._rpos, self.spec.labels
        for key in [k for k in self._cache if label_value(k[pos]) == replica]:
            del self._cache[key]
        found = {
            tuple(s.labels[n] for n in names)
            for m in self.metric.collect()
            for s in m.samples
            if s.labels.get("replica") == replica
        }
        for values in found:
            self.metric.remove(*values)

    def _sink_child(self) -> Any:
        if self._sink is None:
            self._sink = collector(self.spec, None)  # same type, labels and buckets, in no registry
        return self._sink.labels(*("gone",) * len(self.spec.labels))


def collector(spec: MetricSpec, registry: CollectorRegistry | None) -> Any:
    """The prometheus_client collector ``spec`` declares, in ``registry`` (None: in none)."""
    name, labels = spec.name, list(spec.labels)
    if spec.kind == "counter":
        return Counter(name, spec.help, labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(name, spec.help, labels, registry=registry)
    return Histogram(name, spec.help, labels, registry=registry, buckets=spec.buckets or ())
