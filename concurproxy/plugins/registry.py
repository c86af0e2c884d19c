"""One registry for every plugin kind: a type name from the policy file → a factory.

Every kind (window controllers, fairness policies, routing scorers, routing
policies) is looked up the same way:

1. built-ins, then anything ``register``-ed in code;
2. else the kind's entry-point group (``concurproxy.controllers``, …), read
   once, the first time a name is missing or ``names()`` is asked (never on
   import, and not at all when the policy names only built-ins);
3. an entry point is imported only when its name is asked for, so one broken
   plugin package does not break a proxy that does not use it.

A built-in wins a name clash with an installed plugin. Nothing is shared
between instances: each ``Registry`` reads package metadata itself (no module
state), and a test passes its own ``entry_points`` source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as installed_entry_points
from typing import Generic, Protocol, TypeVar

F = TypeVar("F")

#: Where entry points come from: ``group -> entry points`` (the installed packages by default).
EntryPointSource = Callable[[str], Iterable[EntryPoint]]


def installed(group: str) -> Iterable[EntryPoint]:
    return installed_entry_points(group=group)


def no_entry_points(group: str) -> Iterable[EntryPoint]:
    """A source with nothing installed: built-ins only (simulations, benchmarks, tests)."""
    return ()


class Lookup(Protocol):
    """What a caller that only checks names needs from a registry of any kind."""

    def get(self, name: str) -> object: ...


class PluginError(Exception):
    """A policy names a plugin that cannot be used; ``str()`` is one line for the operator."""


class UnknownPluginError(PluginError, LookupError):
    """No plugin of that kind under that name, built in or installed."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0])


class PluginLoadError(PluginError):
    """An installed plugin's entry point failed to import or is not a factory."""


class Registry(Generic[F]):
    """Factories of one plugin kind by type name. Concurrency: one owner (startup, then the event loop)."""

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Mapping[str, F] | None = None,
        *,
        entry_points: EntryPointSource = installed,
        unknown: type[UnknownPluginError] = UnknownPluginError,
    ) -> None:
        self.kind = kind  # for messages: "admission controller", "scorer", …
        self.group = group
        self._factories: dict[str, F] = dict(builtins or {})
        self._source = entry_points
        self._unknown = unknown
        self._installed: dict[str, EntryPoint] | None = None  # read on first need

    def register(self, name: str, factory: F, *, replace: bool = False) -> None:
        if name in self._factories and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Every usable name: built-in, registered, installed (installed ones are not imported)."""
        return sorted(self._factories.keys() | self._entry_points().keys())

    def __contains__(self, name: object) -> bool:
        return name in self._factories or name in self._entry_points()

    def get(self, name: str) -> F:
        """The factory named ``name``; raises ``UnknownPluginError`` (listing the known names) or
        ``PluginLoadError``."""
        factory = self._factories.get(name)
        if factory is not None:
            return factory
        ep = self._entry_points().get(name)
        if ep is None:
            raise self._unknown(self.kind, name, self.names())
        try:
            loaded = ep.load()
        except Exception as exc:  # any import-time error of third-party code: report it, do not crash later
            raise PluginLoadError(f"{self.kind} {name!r} ({ep.value}) failed to load: {exc!r}") from exc
        if not callable(loaded):
            raise PluginLoadError(f"{self.kind} {name!r} ({ep.value}) is not a factory: {loaded!r}")
        self._factories[name] = loaded
        return loaded  # type: ignore[no-any-return]  # the entry point's contract is the kind's factory type

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._installed is None:
            found: dict[str, EntryPoint] = {}
            for ep in self._source(self.group):
                found.setdefault(ep.name, ep)  # two packages, one name: the first on the path, as Python's import
            self._installed = found
        return self._installed
