"""Window controllers: how many agents a replica may have active (aimd, gradient, static, none, plugins)."""

from concurproxy.control.limits.aimd import AIMDController
from concurproxy.control.limits.base import UNBOUNDED, StepSample, WindowController, WindowDecision, snapshot_problem
from concurproxy.control.limits.gradient import GradientController
from concurproxy.control.limits.none import NoneController
from concurproxy.control.limits.registry import (
    ENTRY_POINT_GROUP,
    ControllerFactory,
    ControllerRegistry,
    UnknownControllerError,
)
from concurproxy.control.limits.static import StaticController

__all__ = [
    "ENTRY_POINT_GROUP",
    "UNBOUNDED",
    "AIMDController",
    "ControllerFactory",
    "ControllerRegistry",
    "GradientController",
    "NoneController",
    "StaticController",
    "StepSample",
    "UnknownControllerError",
    "WindowController",
    "WindowDecision",
    "snapshot_problem",
]
