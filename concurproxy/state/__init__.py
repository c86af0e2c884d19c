"""State shared between proxy instances: in-process (default) or Redis.

See docs/shared-state.md for the consistency model. Import the Redis parts
from their modules; this package imports nothing with side effects.
"""

from concurproxy.state.backend import MemoryState, StateBackend
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.share import ReplicaShare, SharedWindowController

__all__ = ["MemoryState", "ReplicaShare", "SharedStateSettings", "SharedWindowController", "StateBackend"]
