"""The policy file: one document that states the whole policy of a proxy."""

from __future__ import annotations

from pydantic import Field, model_validator

from concurproxy.config.admission import AdmissionConfig
from concurproxy.config.base import Model
from concurproxy.config.budgets import AuthConfig, BudgetsConfig, FairnessConfig, RoleConfig, TenantConfig
from concurproxy.config.identity import IdentityConfig
from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.config.routing import RoutingConfig
from concurproxy.config.server import (
    DnsDiscoveryConfig,
    HealthCheckConfig,
    LimitsConfig,
    ListenConfig,
    RetryConfig,
    TimeoutsConfig,
    UpstreamConfig,
)

MIN_SYNCS_PER_TTL = 3  # renewals a TTL must span, so one late sync does not expire it


class SharedStateTunables(Model):
    """Shared-state (Redis) tunables; the backend copies them into its own settings."""

    lease_s: float = Field(10.0, gt=0, description="An agent's slot lease; renewed every sync while it is active.")
    sync_interval_s: float = Field(0.5, gt=0, description="Lease renewal, window and peer-count sync period.")
    leader_ttl_s: float = Field(3.0, gt=0, description="Leader lock TTL (renewed every sync by the leader).")
    window_ttl_s: float = Field(5.0, gt=0, description="How long a published window stays valid without the leader.")
    pin_ttl_s: float = Field(300.0, gt=0, description="TTL of an agent's shared pin (refreshed while it is active).")
    response_id_ttl_s: float = Field(
        86400.0,
        gt=0,
        description="How long a Responses id -> replica entry stays in Redis (the engine keeps stored responses "
        "in memory until it restarts; a day covers an agent's session).",
    )
    socket_timeout_s: float = Field(0.25, gt=0, description="Per-command socket timeout: an outage costs this once.")
    retry_after_s: float = Field(1.0, gt=0, description="Circuit breaker: how long to stay local after a failure.")
    key_prefix: str = Field("{cp}:", description="Key prefix; the {hash tag} keeps all keys in one Cluster slot.")
    instance_id: str | None = Field(None, description="This instance's id in Redis (default: host-pid-random).")

    @model_validator(mode="after")
    def _ttls_outlive_renewals(self) -> SharedStateTunables:
        # Leases, the leader lock and the published window are renewed once per sync; a TTL
        # shorter than a few syncs expires on one slow round trip: slots vanish, leadership flaps.
        floor = MIN_SYNCS_PER_TTL * self.sync_interval_s
        for name in ("lease_s", "leader_ttl_s", "window_ttl_s"):
            value = getattr(self, name)
            if value < floor:
                raise ValueError(
                    f"{name} ({value:g}) must be at least {MIN_SYNCS_PER_TTL} x sync_interval_s "
                    f"({self.sync_interval_s:g}) = {floor:g}: it is renewed once per sync"
                )
        return self


class StateConfig(SharedStateTunables):
    backend: str = Field("memory", pattern="^(memory|redis)$")
    redis_url: str | None = Field(None, description="redis://, rediss://, redis+sentinel:// or a cluster URL.")
    response_ids: int = Field(
        100_000,
        ge=1,
        description="Responses ids remembered per instance (id -> the replica that stores it, LRU): "
        "previous_response_id and /v1/responses/{id} go to that replica. ~300 bytes each.",
    )


class TelemetryConfig(Model):
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces endpoint; tracing is off when unset.")
    service_name: str = "concurproxy"
    log_format: str = Field("json", pattern="^(json|text)$")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class Policy(Model):
    """Everything a concurproxy instance needs to run. See policies/default.yaml for a commented example."""

    listen: ListenConfig = ListenConfig()
    limits: LimitsConfig = LimitsConfig()
    upstreams: list[UpstreamConfig] = Field(default_factory=list, description="Replica pool (one entry per replica).")
    discovery: DnsDiscoveryConfig | None = Field(
        None, description="Also find replicas by DNS (a headless Service), re-resolved periodically."
    )
    timeouts: TimeoutsConfig = TimeoutsConfig()
    health: HealthCheckConfig = HealthCheckConfig()
    retry: RetryConfig = RetryConfig()
    auth: AuthConfig = AuthConfig()
    identity: IdentityConfig = IdentityConfig()
    admission: AdmissionConfig = AdmissionConfig()
    roles: dict[str, RoleConfig] = Field(default_factory=dict)
    tenants: list[TenantConfig] = Field(default_factory=list)
    budgets: BudgetsConfig = BudgetsConfig()
    fairness: FairnessConfig = FairnessConfig()
    routing: RoutingConfig = RoutingConfig()
    models: dict[str, ModelTokensConfig] = Field(
        default_factory=dict, description="Per served model name: its tokenizer and chat template (optional)."
    )
    state: StateConfig = StateConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
