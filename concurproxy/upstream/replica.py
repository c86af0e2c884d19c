"""One upstream replica's identity and health state.

Health is a small state machine fed by two sources: active checks (the health
checker polls ``/health``) and passive outcomes (connect errors and 5xx answers
of real requests). ``unhealthy_after`` consecutive failures take the replica out;
``healthy_after`` consecutive successful checks put it back. A drained replica
stays out until undrained, whatever its health. Mutated only from the event
loop thread (no locking needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concurproxy.config.server import KvEventsSource, UpstreamConfig


@dataclass(slots=True)
class Replica:
    id: str
    base_url: str  # no trailing slash
    api_key: str | None = None
    metrics_url: str = ""
    pressure_url: str | None = None
    healthy: bool = True
    draining: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    models: tuple[str, ...] = ()
    in_flight: int = 0
    last_error: str | None = None
    unreachable: bool = False  # its last failure was a connection nobody accepted (refused, no route): down
    extra: dict[str, object] = field(default_factory=dict)
    kv_events: KvEventsSource | None = None  # where its KV cache events are published, if anywhere
    discovered: bool = False  # found by DNS discovery (a policy reload leaves it alone)
    priority_scheduling: bool = False  # the engine orders its queue by the body's priority (engine_priority.py)

    @classmethod
    def from_config(cls, cfg: UpstreamConfig) -> Replica:
        base = str(cfg.url).rstrip("/")
        host = cfg.url.host or "upstream"
        rid = cfg.name or f"{host}:{cfg.url.port}"
        return cls(
            id=rid,
            base_url=base,
            api_key=cfg.api_key,
            metrics_url=base + cfg.metrics_path,
            pressure_url=str(cfg.pressure_url) if cfg.pressure_url else None,
            kv_events=cfg.kv_events,
            priority_scheduling=cfg.priority_scheduling,
        )

    @property
    def available(self) -> bool:
        return self.healthy and not self.draining

    def serves(self, model: str | None) -> bool:
        """Unknown model lists (not yet fetched) serve everything; the engine decides."""
        return model is None or not self.models or model in self.models

    def record_failure(self, error: str, unhealthy_after: int, unreachable: bool = False) -> bool:
        """Count a failure; returns True when this failure took the replica out."""
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.last_error = error
        self.unreachable = unreachable
        if self.healthy and self.consecutive_failures >= unhealthy_after:
            self.healthy = False
            return True
        return False

    def record_success(self, healthy_after: int) -> bool:
        """Count a success; returns True when this success put the replica back."""
        self.consecutive_failures = 0
        self.consecutive_successes += 1
        self.unreachable = False
        if not self.healthy and self.consecutive_successes >= healthy_after:
            self.healthy = True
            self.last_error = None
            return True
        return False
