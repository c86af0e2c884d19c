"""Fairness ordering of waiting steps: plugins behind one protocol, chosen by name.

Typical wiring::

    params = FairnessParams.from_policy(policy.fairness, policy.tenants)
    queue = default_registry().queue(policy.fairness.policy, params)   # a WaitQueue
"""

from concurproxy.control.fairness.base import FairnessParams, FairnessPolicy, FairQueue
from concurproxy.control.fairness.fifo import FifoPolicy
from concurproxy.control.fairness.registry import (
    ENTRY_POINT_GROUP,
    FairnessRegistry,
    UnknownFairnessPolicy,
    default_registry,
)
from concurproxy.control.fairness.vtc import VTCPolicy, VTCState

__all__ = [
    "ENTRY_POINT_GROUP",
    "FairQueue",
    "FairnessParams",
    "FairnessPolicy",
    "FairnessRegistry",
    "FifoPolicy",
    "UnknownFairnessPolicy",
    "VTCPolicy",
    "VTCState",
    "default_registry",
]
