"""The policy file: one document that states the whole policy of a proxy."""

from __future__ import annotations

from pydantic import Field

from concurproxy.config.admission import AdmissionConfig
from concurproxy.config.base import Model
from concurproxy.config.budgets import AuthConfig, FairnessConfig, RoleConfig, TenantConfig
from concurproxy.config.routing import RoutingConfig
from concurproxy.config.server import (
    HealthCheckConfig,
    LimitsConfig,
    ListenConfig,
    RetryConfig,
    TimeoutsConfig,
    UpstreamConfig,
)


class StateConfig(Model):
    backend: str = Field("memory", pattern="^(memory|redis)$")
    redis_url: str | None = Field(None, description="redis://, rediss://, redis+sentinel:// or a cluster URL.")


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
    timeouts: TimeoutsConfig = TimeoutsConfig()
    health: HealthCheckConfig = HealthCheckConfig()
    retry: RetryConfig = RetryConfig()
    auth: AuthConfig = AuthConfig()
    admission: AdmissionConfig = AdmissionConfig()
    roles: dict[str, RoleConfig] = Field(default_factory=dict)
    tenants: list[TenantConfig] = Field(default_factory=list)
    fairness: FairnessConfig = FairnessConfig()
    routing: RoutingConfig = RoutingConfig()
    state: StateConfig = StateConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
