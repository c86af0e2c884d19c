"""Tunables of the shared state (Redis backend).

The documented fields live in the policy's ``state`` section (``StateConfig``);
this model is the internal, validated copy the backend uses.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class SharedStateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lease_s: float = Field(10.0, gt=0, description="An agent's slot lease; renewed every sync while it is active.")
    sync_interval_s: float = Field(0.5, gt=0, description="Lease renewal, window and peer-count sync period.")
    leader_ttl_s: float = Field(3.0, gt=0, description="Leader lock TTL (renewed every sync by the leader).")
    window_ttl_s: float = Field(5.0, gt=0, description="How long a published window stays valid without the leader.")
    pin_ttl_s: float = Field(300.0, gt=0, description="TTL of an agent's shared pin (refreshed while it is active).")
    socket_timeout_s: float = Field(0.25, gt=0, description="Per-command socket timeout: an outage costs this once.")
    retry_after_s: float = Field(1.0, gt=0, description="Circuit breaker: how long to stay local after a failure.")
    key_prefix: str = Field("{cp}:", description="Key prefix; the {hash tag} keeps all keys in one Cluster slot.")
    instance_id: str = Field(default_factory=default_instance_id)

    @classmethod
    def from_policy(cls, state_config: Any, **overrides: Any) -> SharedStateSettings:
        """Fields present on ``state_config`` (a ``StateConfig``) win over defaults; ``overrides`` win over both."""
        values = {k: getattr(state_config, k) for k in cls.model_fields if getattr(state_config, k, None) is not None}
        values.update(overrides)
        return cls(**values)
