"""The package's layering, enforced: pure modules stay pure, and each package imports only what it may.

Walks the modules under ``concurproxy/`` with ``ast`` (nothing is imported, so a module with side
effects cannot hide them) and checks every import wherever it appears — including inside functions
and ``if TYPE_CHECKING`` blocks, which would still couple the layers.

**Pure** (``PURE``: the decision core ``control/`` and ``routing/``, and the pure parts of sessions,
tokenizer, signals, KV events and the API codecs): no import of a forbidden top-level package.
Forbidden: I/O and frameworks (asyncio, aiohttp, httpx, redis, socket, uvloop), telemetry
(prometheus_client, opentelemetry, logging: the core returns decisions with reasons and the shell
turns them into metrics and logs), the clock (time: ``now`` is an argument), the process environment
(os: config is read once, in the shell), randomness (random: a component that needs one is handed a
seeded ``random.Random``-like object by its caller), and command lines (argparse: CLIs and
benchmarks live outside the core). ``SHELL_MODULES`` names the few modules of those packages that
are their async shell, each with its reason.

**What each package may import** (``MAY_IMPORT``): the other ``concurproxy`` packages a package's
modules may import (its own always). The README's architecture table is checked against both
tables, so the picture a newcomer reads is the rule the tree keeps. Not ruled: the shell that
assembles everything (``server/`` outside ``server/api/`` and ``server/admission/``, ``cli.py``,
``demo.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "concurproxy"
README = ROOT.parent / "README.md"
FORBIDDEN = frozenset(
    {
        *("asyncio", "aiohttp", "httpx", "redis", "socket", "uvloop"),  # I/O
        *("prometheus_client", "opentelemetry", "logging"),  # telemetry: the shell's job
        *("time", "os", "random", "argparse"),  # clock, environment, randomness, command line
    }
)
CORE_PACKAGES = ("control", "routing")  # the decision core proper
PURE = (
    *CORE_PACKAGES,
    "decision.py",
    *("sessions", "tokenizer", "signals", "kvevents", "server/api", "tokens.py", "identity.py"),
)
SHELL_MODULES = {  # the shell inside a pure package
    "sessions/resolver.py": "new agent ids from os.urandom; time.monotonic as the default clock",
    "sessions/shared.py": "the Redis share of the fingerprint table (asyncio)",
    "tokenizer/__init__.py": "loads the configured tokenizers at startup and logs which model uses which",
    "signals/poller.py": "polls each replica's pressure source (aiohttp, asyncio, the clock)",
    "kvevents/subscriber.py": "the ZMQ subscriber (asyncio)",
    "server/api/shapes.py": "writes errors as aiohttp responses",
}
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "control": ("config", "plugins.registry"),
    "routing": ("config", "control", "plugins.registry", "tokens"),
    "sessions": ("config", "identity", "state"),
    "tokenizer": ("config", "routing", "tokens"),
    "server/api": ("errors", "server.sse", "tokens"),
    "decision.py": ("config", "control", "plugins", "routing"),
    "tokens.py": (),
    "identity.py": ("control.types", "errors"),
    "errors.py": (),
    "config": ("plugins",),
    "plugins": ("config", "control", "routing"),
    "tenancy": ("config",),
    "upstream": ("config",),
    "signals": ("control",),
    "state": ("config", "control"),
    "kvevents": ("routing",),
    "telemetry": ("config", "control", "server.hooks"),
    "worker": ("engines", "kvevents", "tokens"),
    "engines": ("nodeagent",),
    "nodeagent": ("signals",),
    "testing": ("errors", "server", "tokens"),
    "server/admission": ("config", "control", "decision", "errors", "server.step", "state", "telemetry"),
    "simulate": ("config", "control", "decision", "plugins", "routing", "signals.cost", "tenancy", "tokens", "worker"),
}
NEVER_IMPORTED = ("benchmarks", "tests", "conftest")  # top-level: the product never depends on these


def modules_of(key: str) -> list[Path]:
    path = ROOT / key
    return [path] if key.endswith(".py") else sorted(path.rglob("*.py"))


def core_modules() -> list[Path]:
    return sorted(p for pkg in CORE_PACKAGES for p in modules_of(pkg))


def pure_modules() -> list[Path]:
    shell = {ROOT / m for m in SHELL_MODULES}
    return sorted(p for key in PURE for p in modules_of(key) if p not in shell)


def _imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import, ``from concurproxy import x`` read as ``concurproxy.x``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "concurproxy":
                yield from ((node.lineno, f"concurproxy.{a.name}") for a in node.names)
            else:
                yield node.lineno, node.module


def forbidden_imports(source: str) -> list[str]:
    return [f"line {n}: {name}" for n, name in _imports(source) if name.split(".")[0] in FORBIDDEN]


def disallowed_imports(source: str, own: str, allowed: tuple[str, ...]) -> list[str]:
    """Imports of ``concurproxy.X`` outside ``own`` and ``allowed`` (dotted prefixes), and of NEVER_IMPORTED."""
    ok = (own, *allowed)
    bad: list[str] = []
    for n, name in _imports(source):
        top, _, rest = name.partition(".")
        inside = top == "concurproxy" and not any(rest == p or rest.startswith(p + ".") for p in ok)
        if inside or top in NEVER_IMPORTED:
            bad.append(f"line {n}: {name}")
    return bad


def _own(key: str) -> str:
    return key.removesuffix(".py").replace("/", ".")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_there_is_a_core_to_check() -> None:
    assert any(p.name == "aimd.py" for p in core_modules())


def test_every_ruled_path_exists() -> None:
    """A renamed or removed package fails here instead of leaving a rule that checks nothing."""
    for key in (*PURE, *SHELL_MODULES, *MAY_IMPORT):
        assert (ROOT / key).exists(), f"concurproxy/{key} is named in a rule but does not exist"
        assert modules_of(key), f"concurproxy/{key} has no modules"
    for m in SHELL_MODULES:
        assert any(m.startswith(k.rstrip("/") + "/") for k in PURE), f"{m} is not inside a pure package"


@pytest.mark.parametrize("path", pure_modules(), ids=_rel)
def test_pure_module_is_pure(path: Path) -> None:
    bad = forbidden_imports(path.read_text(encoding="utf-8"))
    assert not bad, f"{_rel(path)} imports I/O, clock, environment, randomness or CLI modules: {bad}"


@pytest.mark.parametrize("key", sorted(MAY_IMPORT))
def test_package_imports_only_what_it_may(key: str) -> None:
    bad = {
        _rel(p): found
        for p in modules_of(key)
        if (found := disallowed_imports(p.read_text(encoding="utf-8"), _own(key), MAY_IMPORT[key]))
    }
    assert not bad, f"concurproxy/{key} may import only {MAY_IMPORT[key] or 'nothing else'} of the package: {bad}"


def test_the_product_never_imports_benchmarks_or_tests() -> None:
    bad = {
        f"{_rel(p)}:{n}": name
        for p in ROOT.rglob("*.py")
        for n, name in _imports(p.read_text(encoding="utf-8"))
        if name.split(".")[0] in NEVER_IMPORTED
    }
    assert not bad, f"the package imports what is not shipped with it: {bad}"


def _readme_rows() -> dict[str, tuple[set[str], str]]:
    """The README's package table: first cell's package → (the may-import cell's names, the pure cell)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| package | what it is | may import | pure |")
    rows: dict[str, tuple[set[str], str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if names:
            rows[names[0].rstrip("/")] = (set(re.findall(r"`([^`]+)`", cells[2])), cells[3])
    return rows


def test_the_readme_table_states_the_rules() -> None:
    rows = _readme_rows()
    for key, allowed in MAY_IMPORT.items():
        assert key in rows, f"README's package table has no row for `{key}`"
        listed = {n.rstrip("/") for n in rows[key][0]}
        assert listed == set(allowed), f"README says `{key}` may import {sorted(listed)}; the rule: {allowed}"
    for key, (_, pure) in rows.items():
        assert pure.startswith("yes") == (key in PURE), f"README's pure cell for `{key}`: {pure!r}"
    for key in PURE:
        exceptions = {m for m in SHELL_MODULES if m.startswith(key + "/")}
        named = {f"{key}/{n}" for n in re.findall(r"`([^`]+)`", rows[key][1])}
        assert named == exceptions, f"README's pure cell for `{key}` names {named}, the rule {exceptions}"


@pytest.mark.parametrize(
    ("src", "hits"),
    [
        ("import asyncio", 1),
        ("import time as t", 1),
        ("from time import monotonic", 1),
        ("from prometheus_client.core import Gauge", 1),
        ("import opentelemetry.trace", 1),
        ("def f():\n    import redis.asyncio", 1),
        ("import random", 1),
        ("from random import Random", 1),
        ("import os.path", 1),
        ("from os import environ", 1),
        ("import socket", 1),
        ("import logging", 1),
        ("from logging import getLogger", 1),
        ("def main():\n    import argparse", 1),
        ("import timeit, dataclasses", 0),
        ("import randomish, osmium", 0),
        ("from . import time", 0),
        ("from concurproxy.control.types import StepInfo", 0),
    ],
)
def test_checker_itself(src: str, hits: int) -> None:
    assert len(forbidden_imports(src)) == hits


@pytest.mark.parametrize(
    ("src", "hits"),
    [
        ("from concurproxy.control.types import StepInfo", 0),  # allowed
        ("import concurproxy.routing.types", 0),  # its own package
        ("from concurproxy.plugins.registry import Registry", 0),  # the allowed module
        ("from concurproxy.plugins.installed import installed", 1),  # not the rest of its package
        ("from concurproxy.server.app import build_app", 1),
        ("from concurproxy import server", 1),
        ("if TYPE_CHECKING:\n    from concurproxy.state.backend import StateBackend", 1),
        ("from concurproxy.controlx import y", 1),  # a prefix is a whole dotted name
        ("import benchmarks.overhead", 1),
        ("from tests.conftest import make_policy", 1),
        ("import aiohttp, orjson", 0),  # third-party imports are the purity rule's business
    ],
)
def test_import_rule_checker_itself(src: str, hits: int) -> None:
    assert len(disallowed_imports(src, "routing", ("control", "plugins.registry"))) == hits
