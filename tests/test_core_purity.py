"""The decision core stays pure: no I/O frameworks, no event loop, no clock reads, no hidden inputs.

Walks every module under concurproxy/control and concurproxy/routing with ``ast``
(nothing is imported, so a module with side effects cannot hide them) and fails
on an import of a forbidden top-level package, wherever it appears — including
inside functions and ``if TYPE_CHECKING`` blocks, which would still couple the core.

Forbidden: I/O and frameworks (asyncio, aiohttp, httpx, redis, socket, uvloop), telemetry
(prometheus_client, opentelemetry, logging: the core returns decisions with reasons and the
shell turns them into metrics and logs), the clock (time: ``now`` is an argument), the
process environment (os: config is read once, in the shell), randomness (random: a
component that needs one is handed a seeded ``random.Random``-like object by its caller),
and command lines (argparse: CLIs and benchmarks live outside the core).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "concurproxy"
CORE_PACKAGES = ("control", "routing")
FORBIDDEN = frozenset(
    {
        *("asyncio", "aiohttp", "httpx", "redis", "socket", "uvloop"),  # I/O
        *("prometheus_client", "opentelemetry", "logging"),  # telemetry: the shell's job
        *("time", "os", "random", "argparse"),  # clock, environment, randomness, command line
    }
)


def core_modules() -> list[Path]:
    return sorted(p for pkg in CORE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def forbidden_imports(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_there_is_a_core_to_check() -> None:
    assert any(p.name == "aimd.py" for p in core_modules())


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    bad = forbidden_imports(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.relative_to(ROOT)} imports I/O, clock, environment, randomness or CLI modules: {bad}"


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
