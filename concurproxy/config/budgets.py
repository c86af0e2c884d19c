"""Tenants, roles, budgets and fairness (issue: per-role budgets and fairness queues)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from concurproxy.config.base import Model


class Priority(StrEnum):
    critical = "critical"
    high = "high"
    normal = "normal"
    low = "low"


class RoleConfig(Model):
    tokens_per_min: int | None = Field(
        None, ge=1, description="Weighted tokens (see fairness weights) per minute per tenant."
    )
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Largest prompt per step (guard against context inflation)."
    )
    max_output_tokens: int | None = Field(None, ge=1, description="Largest max_tokens per step.")
    on_output_limit: str = Field(
        "clamp", pattern="^(clamp|reject)$", description="clamp max_tokens, or reject with 429."
    )
    max_steps_per_task: int | None = Field(None, ge=1, description="Stopping discipline: steps of this role per task.")
    window_share: float | None = Field(
        None, gt=0, le=1, description="Guaranteed share of each replica's admission window; may burst above it."
    )
    priority: Priority = Priority.normal


class TenantConfig(Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    key_sha256: list[str] = Field(
        default_factory=list, description="sha256 hex digests of this tenant's API keys (never the keys)."
    )
    key_env: str | None = Field(None, description="Name of an environment variable holding a key (hashed at load).")
    key_file: str | None = Field(None, description="Path of a file holding one key per line (hashed at load).")
    weight: float = Field(1.0, gt=0, description="Fair-share weight.")
    tokens_per_min: int | None = Field(None, ge=1, description="Tenant-wide weighted token budget per minute.")
    max_priority: Priority | None = Field(
        None,
        description="Most urgent class this tenant's steps may claim with X-Priority (or metadata.priority); a "
        "claim above it is lowered to it and the response says so (null: any class).",
    )


class FairnessConfig(Model):
    policy: str = Field("vtc", description="Queue ordering by registered name: vtc | fifo | a plugin's name.")
    input_weight: float = Field(1.0, ge=0, description="VTC charge per prompt token.")
    output_weight: float = Field(2.0, ge=0, description="VTC charge per generated token (decode costs more).")
    long_prefill_tokens: int = Field(
        4096, ge=1, description="Steps whose prompt is above this are 'long'; short control steps may pass them."
    )
    max_bypass_s: float = Field(5.0, ge=0, description="A long step is never passed over for longer than this.")
    protect_priority: Priority | None = Field(
        Priority.high,
        description="At dispatch, a long step (uncached prompt above long_prefill_tokens) is held while a short "
        "step of this priority or a more urgent one is in flight on its replica (null: never).",
    )
    long_prefills_per_replica: int = Field(
        1, ge=0, description="Long steps in their prefill at once per replica; more wait at dispatch (0: no limit)."
    )
    max_prefill_hold_s: float = Field(
        1.0, ge=0, description="A long step is held at dispatch at most this long, then sent whatever the rest says."
    )
    kv_reserve: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of each replica's KV cache kept free for steps of protect_priority or more urgent: while "
        "such steps are about, the others are held at dispatch when their KV footprint (prompt + max_tokens, "
        "summed over the replica's steps in flight) would pass capacity x (1 - kv_reserve) (0: off).",
    )
    kv_reserve_idle_s: float = Field(
        5.0, ge=0, description="The KV reserve holds while a protected step is in flight or ran this recently."
    )
    kv_reserve_max_hold_s: float = Field(
        10.0, ge=0, description="A step is held for the KV reserve at most this long, then sent whatever the rest says."
    )


class BudgetsConfig(Model):
    """Memory bounds of the stopping-discipline counters (``roles.*.max_steps_per_task``)."""

    task_ttl_s: float = Field(
        3600.0, gt=0, description="A task's step counters are forgotten this long after its last step."
    )
    max_tracked_tasks: int = Field(
        100_000, ge=1, description="At most this many task counters are kept; the least recently used go first."
    )


class AuthConfig(Model):
    allow_anonymous: bool = Field(
        True, description="Serve requests without a known key as tenant 'anonymous' (local use; off in production)."
    )
    admin_key_sha256: list[str] = Field(default_factory=list, description="sha256 of keys for /admin/*.")
    metrics_require_admin_key: bool = Field(
        False,
        description="/metrics also needs an admin key (Prometheus: authorization.credentials_file); "
        "only takes effect when admin_key_sha256 is set.",
    )

    @model_validator(mode="after")
    def _hex(self) -> AuthConfig:
        for h in self.admin_key_sha256:
            if len(h) != 64:
                raise ValueError("admin_key_sha256 entries must be 64 hex characters")
        return self
