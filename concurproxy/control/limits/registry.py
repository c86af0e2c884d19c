"""Window controllers by type name, with third-party plugins through entry points."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.limits.aimd import AIMDController
from concurproxy.control.limits.base import WindowController
from concurproxy.control.limits.gradient import GradientController
from concurproxy.control.limits.none import NoneController
from concurproxy.control.limits.static import StaticController

#: Entry-point group a plugin package uses to add a controller, e.g. in its pyproject:
#: ``[project.entry-points."concurproxy.controllers"] vegas = "mypkg.vegas:make"``
#: where ``make(config: AdmissionConfig) -> WindowController``.
ENTRY_POINT_GROUP = "concurproxy.controllers"

ControllerFactory = Callable[[AdmissionConfig], WindowController]


class UnknownControllerError(LookupError):
    """No controller registered (built in or by entry point) under that name."""


def _aimd(cfg: AdmissionConfig) -> WindowController:
    return AIMDController(cfg.aimd)


def _gradient(cfg: AdmissionConfig) -> WindowController:
    return GradientController(cfg.gradient)


def _static(cfg: AdmissionConfig) -> WindowController:
    return StaticController(cfg.static)


def _none(cfg: AdmissionConfig) -> WindowController:
    return NoneController()


BUILTIN: Mapping[str, ControllerFactory] = {"aimd": _aimd, "gradient": _gradient, "static": _static, "none": _none}


class ControllerRegistry:
    """Maps a controller name from the policy file to a factory.

    Built-ins first; a name not found is looked up once in the
    ``concurproxy.controllers`` entry-point group (so a typo costs one metadata
    scan, not one per replica). Each call to ``create`` returns a fresh
    controller: one per replica, since controllers carry state.
    """

    def __init__(
        self,
        factories: Mapping[str, ControllerFactory] | None = None,
        *,
        entry_points_loader: Callable[[], Iterable[EntryPoint]] | None = None,
    ) -> None:
        self._factories: dict[str, ControllerFactory] = dict(BUILTIN if factories is None else factories)
        self._loader = entry_points_loader or (lambda: entry_points(group=ENTRY_POINT_GROUP))
        self._plugins_loaded = False

    def register(self, name: str, factory: ControllerFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._factories)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in self._loader():
            self._factories.setdefault(ep.name, ep.load())

    def factory(self, name: str) -> ControllerFactory:
        if name not in self._factories:
            self._load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownControllerError(
                f"unknown admission controller {name!r}; known: {', '.join(self.names())}"
            ) from None

    def create(self, config: AdmissionConfig, name: str | None = None) -> WindowController:
        """A new controller for one replica: ``name`` or else ``config.controller``."""
        return self.factory(name or config.controller)(config)
