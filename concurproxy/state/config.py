"""Tunables of the shared state (Redis backend).

The documented fields live in the policy's ``state`` section (``StateConfig``);
this model is the internal, validated copy the backend uses.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import Field

from concurproxy.config.models import SharedStateTunables


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class SharedStateSettings(SharedStateTunables):
    """The tunables of ``policy.state`` (one definition: `SharedStateTunables`), with an instance id always set."""

    instance_id: str = Field(default_factory=default_instance_id)

    @classmethod
    def from_policy(cls, state_config: Any, **overrides: Any) -> SharedStateSettings:
        """Fields present on ``state_config`` (a ``StateConfig``) win over defaults; ``overrides`` win over both."""
        values = {k: getattr(state_config, k) for k in cls.model_fields if getattr(state_config, k, None) is not None}
        values.update(overrides)
        return cls(**values)
