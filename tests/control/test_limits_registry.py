"""static / none controllers and the controller registry."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.control.limits import (
    UNBOUNDED,
    AIMDController,
    ControllerRegistry,
    GradientController,
    NoneController,
    StaticController,
    UnknownControllerError,
    WindowController,
)
from concurproxy.control.limits.registry import ENTRY_POINT_GROUP
from concurproxy.control.types import PressureSnapshot
from concurproxy.plugins import no_entry_points


def test_static_ignores_pressure_and_staleness() -> None:
    c = StaticController(StaticConfig(window=5))
    thrash = PressureSnapshot(ts=0, kv_usage=1.0, preemptions_per_s=9)
    for s in (None, PressureSnapshot(ts=0, ok=False), thrash):
        d = c.update(s, 100, now=1e6)
        assert (d.window, d.changed, d.saturated) == (5, False, False)
    assert c.stale_after_s is None


def test_none_is_unbounded() -> None:
    c = NoneController()
    d = c.update(None, 10**6, 0.0)
    assert (d.window, d.saturated) == (UNBOUNDED, False)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("aimd", AIMDController),
        ("gradient", GradientController),
        ("static", StaticController),
        ("none", NoneController),
    ],
)
def test_builtins_by_name(name: str, cls: type) -> None:
    reg = ControllerRegistry(entry_points=no_entry_points)
    c = reg.create(AdmissionConfig(controller=name))
    assert isinstance(c, cls) and c.name == name
    assert reg.create(AdmissionConfig(), name=name).name == name


def test_each_create_is_a_fresh_instance() -> None:
    reg = ControllerRegistry(entry_points=no_entry_points)
    assert reg.create(AdmissionConfig()) is not reg.create(AdmissionConfig())


def make_plugin(cfg: AdmissionConfig) -> WindowController:
    return StaticController(StaticConfig(window=3))


def test_plugin_from_entry_point_group() -> None:
    ep = EntryPoint(name="vegas", value=f"{__name__}:make_plugin", group="concurproxy.controllers")
    reg = ControllerRegistry(entry_points=lambda group: [ep] if group == ENTRY_POINT_GROUP else [])
    assert reg.create(AdmissionConfig(controller="vegas")).window == 3
    assert reg.names() == ["aimd", "gradient", "none", "static", "vegas"]


def test_unknown_name_lists_known() -> None:
    reg = ControllerRegistry(entry_points=no_entry_points)
    with pytest.raises(UnknownControllerError, match="aimd, gradient, none, static"):
        reg.create(AdmissionConfig(controller="nope"))


def test_register_in_code() -> None:
    reg = ControllerRegistry(entry_points=no_entry_points)
    reg.register("fixed3", make_plugin)
    assert reg.create(AdmissionConfig(controller="fixed3")).window == 3
