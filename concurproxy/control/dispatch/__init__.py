"""Dispatch of admitted steps to their replica (cost-aware: see `gate.PrefillGate`)."""

from concurproxy.control.dispatch.gate import DispatchParams, PrefillGate

__all__ = ["DispatchParams", "PrefillGate"]
