"""Pure, steppable model of a vLLM-V1-like engine (no clock reads, no asyncio, no I/O).

Drive it with ``engine.step(now)`` from a real-time driver
(:mod:`concurproxy.worker.driver`) or a virtual-time loop
(:mod:`concurproxy.worker.thrash`).
"""

from concurproxy.worker.engine.blocks import BlockPool, OutOfBlocks
from concurproxy.worker.engine.config import EngineConfig, OutputLengths
from concurproxy.worker.engine.core import Engine
from concurproxy.worker.engine.hashing import block_hashes
from concurproxy.worker.engine.request import RequestOutput, RequestRejected, StepResult
from concurproxy.worker.engine.stats import EngineStats, RequestTiming
from concurproxy.worker.engine.timing import StepTimeModel

__all__ = [
    "BlockPool",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "OutOfBlocks",
    "OutputLengths",
    "RequestOutput",
    "RequestRejected",
    "RequestTiming",
    "StepResult",
    "StepTimeModel",
    "block_hashes",
]
