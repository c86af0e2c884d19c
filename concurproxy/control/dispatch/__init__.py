"""Dispatch of admitted steps to their replica (cost-aware: see `gate.PrefillGate`; KV headroom for
control steps: see `reserve.KvReserve`; every replica's: `cores.DispatchCores`)."""

from concurproxy.control.dispatch.cores import DispatchCores
from concurproxy.control.dispatch.gate import DispatchParams, PrefillGate
from concurproxy.control.dispatch.reserve import KvReserve

__all__ = ["DispatchCores", "DispatchParams", "KvReserve", "PrefillGate"]
