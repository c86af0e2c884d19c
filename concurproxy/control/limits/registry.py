"""Window controllers by type name (``admission.controller``), on the generic plugin registry.

Third parties add one through the entry-point group ``concurproxy.controllers``, e.g. in
their pyproject: ``[project.entry-points."concurproxy.controllers"] vegas = "mypkg.vegas:make"``
where ``make(config: AdmissionConfig) -> WindowController``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.limits.aimd import AIMDController
from concurproxy.control.limits.base import WindowController
from concurproxy.control.limits.gradient import GradientController
from concurproxy.control.limits.none import NoneController
from concurproxy.control.limits.static import StaticController
from concurproxy.plugins.registry import EntryPointSource, Registry, UnknownPluginError, installed

ENTRY_POINT_GROUP = "concurproxy.controllers"

ControllerFactory = Callable[[AdmissionConfig], WindowController]


class UnknownControllerError(UnknownPluginError):
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


class ControllerRegistry(Registry[ControllerFactory]):
    """Maps ``admission.controller`` to a factory. Each ``create`` returns a fresh controller: one
    per replica, since controllers carry state."""

    def __init__(
        self,
        factories: Mapping[str, ControllerFactory] | None = None,
        *,
        entry_points: EntryPointSource = installed,
    ) -> None:
        super().__init__(
            "admission controller",
            ENTRY_POINT_GROUP,
            BUILTIN if factories is None else factories,
            entry_points=entry_points,
            unknown=UnknownControllerError,
        )

    def factory(self, name: str) -> ControllerFactory:
        return self.get(name)

    def create(self, config: AdmissionConfig, name: str | None = None) -> WindowController:
        """A new controller for one replica: ``name`` or else ``config.controller``."""
        return self.get(name or config.controller)(config)
