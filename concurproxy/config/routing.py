"""Replica choice (issue: prefix-cache-aware routing)."""

from __future__ import annotations

from pydantic import Field

from concurproxy.config.base import Model


class ScorerConfig(Model):
    type: str = Field(description="Registered scorer name: session-affinity | prefix-match | kv-headroom | queue | …")
    weight: float = Field(1.0, ge=0)


class RoutingConfig(Model):
    policy: str = Field(
        "prefix-affinity", description="prefix-affinity (weighted scorers below) | round-robin | least-loaded."
    )
    scorers: list[ScorerConfig] = Field(
        default_factory=lambda: [
            ScorerConfig(type="session-affinity", weight=3),
            ScorerConfig(type="prefix-match", weight=2),
            ScorerConfig(type="kv-headroom", weight=1),
        ]
    )
    block_tokens: int = Field(16, ge=1, description="Prefix hashing chunk, in tokens.")
    load_bound: float = Field(
        1.25, ge=1.0, description="A replica above this × the fleet's mean load loses new steps to the next best."
    )
    pin_ttl_s: float = Field(600.0, gt=0, description="How long an agent stays pinned after its last step.")
    index_max_blocks: int = Field(200_000, ge=1000, description="Per-replica approximate prefix index size.")
