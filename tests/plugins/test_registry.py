"""The generic plugin registry: built-ins, lazy entry points, errors (issue 22 item 5)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint

import pytest

from concurproxy.plugins import PluginLoadError, Registry, UnknownPluginError, no_entry_points

Factory = Callable[[], str]


def builtin() -> str:
    return "builtin"


def plugin() -> str:
    return "plugin"


NOT_A_FACTORY = 42


def _ep(name: str, value: str, group: str = "test.kind") -> EntryPoint:
    return EntryPoint(name=name, value=value, group=group)


class CountingSource:
    def __init__(self, *eps: EntryPoint) -> None:
        self.eps, self.reads = eps, 0

    def __call__(self, group: str) -> list[EntryPoint]:
        self.reads += 1
        return [e for e in self.eps if e.group == group]


def test_built_ins_need_no_metadata_read() -> None:
    source = CountingSource()
    reg: Registry[Factory] = Registry("thing", "test.kind", {"b": builtin}, entry_points=source)
    assert reg.get("b")() == "builtin"
    assert source.reads == 0


def test_entry_points_are_read_once_and_imported_only_when_named() -> None:
    source = CountingSource(_ep("p", f"{__name__}:plugin"), _ep("broken", "no_such_module_anywhere:x"))
    reg: Registry[Factory] = Registry("thing", "test.kind", {"b": builtin}, entry_points=source)
    assert reg.names() == ["b", "broken", "p"]  # listed, not imported: the broken one does not fail here
    assert reg.get("p")() == "plugin"
    assert "p" in reg and "nope" not in reg
    assert source.reads == 1


def test_a_built_in_wins_a_name_clash() -> None:
    reg: Registry[Factory] = Registry(
        "thing", "test.kind", {"b": builtin}, entry_points=CountingSource(_ep("b", f"{__name__}:plugin"))
    )
    assert reg.get("b")() == "builtin"


def test_unknown_names_list_the_known_ones() -> None:
    reg: Registry[Factory] = Registry(
        "thing", "test.kind", {"b": builtin}, entry_points=CountingSource(_ep("p", f"{__name__}:plugin"))
    )
    with pytest.raises(UnknownPluginError) as err:
        reg.get("x")
    assert str(err.value) == "unknown thing 'x'; known: b, p"
    assert (err.value.kind, err.value.name, err.value.known) == ("thing", "x", ["b", "p"])


@pytest.mark.parametrize(
    ("value", "why"), [("no_such_module_anywhere:x", "failed to load"), (f"{__name__}:NOT_A_FACTORY", "not a factory")]
)
def test_a_plugin_that_cannot_be_used_is_a_load_error(value: str, why: str) -> None:
    reg: Registry[Factory] = Registry("thing", "test.kind", entry_points=CountingSource(_ep("p", value)))
    with pytest.raises(PluginLoadError, match=why):
        reg.get("p")


def test_register_in_code_and_no_shared_state() -> None:
    reg: Registry[Factory] = Registry("thing", "test.kind", entry_points=no_entry_points)
    reg.register("p", plugin)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("p", builtin)
    reg.register("p", builtin, replace=True)
    assert reg.get("p")() == "builtin"
    assert "p" not in Registry("thing", "test.kind", entry_points=no_entry_points)
