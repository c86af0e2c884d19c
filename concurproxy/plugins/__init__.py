"""Plugins: one generic registry per kind, and the check of a policy's plugin names.

Only the registry is imported here: the kinds' modules import it, so ``installed``
(which imports them) is imported by its callers directly.
"""

from concurproxy.plugins.registry import (
    EntryPointSource,
    Lookup,
    PluginError,
    PluginLoadError,
    Registry,
    UnknownPluginError,
    installed,
    no_entry_points,
)

__all__ = [
    "EntryPointSource",
    "Lookup",
    "PluginError",
    "PluginLoadError",
    "Registry",
    "UnknownPluginError",
    "installed",
    "no_entry_points",
]
