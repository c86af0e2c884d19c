"""Benchmarks live in benchmarks/, outside the product: one module per figure, each with its command.

Static checks (``ast`` and file listings, nothing imported): no ``bench*.py`` under the
installed packages, nothing there imports ``benchmarks``, the wheel's package list leaves it
out, and every benchmark module names its command in its docstring and in the README's table
of figures.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("concurproxy", "loadgen")
MODULES = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_the_wheel_leaves_the_benchmarks_out() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "concurproxy" in packages and "loadgen" in packages
    assert not [p for p in packages if p.split(".")[0] in ("benchmarks", "tests", "scripts")]


def test_no_benchmark_module_ships_in_the_product() -> None:
    shipped = [p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py") if p.name.startswith("bench")]
    assert not shipped, [str(p.relative_to(ROOT)) for p in shipped]


def test_the_product_does_not_import_the_benchmarks() -> None:
    bad = [
        f"{p.relative_to(ROOT)}: {name}"
        for pkg in PRODUCT
        for p in (ROOT / pkg).rglob("*.py")
        for name in _imports(p)
        if name.split(".")[0] == "benchmarks"
    ]
    assert not bad


def test_there_are_benchmarks_to_check() -> None:
    assert {"overhead", "admission_vtime", "fairness_vtime"} <= {p.stem for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_each_benchmark_names_its_command_in_its_docstring_and_the_readme(path: Path) -> None:
    command = f"python -m benchmarks.{path.stem}"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert command in doc[:400], f"{path.name}: the docstring should open with {command}"
    assert f"`{command}" in (ROOT / "README.md").read_text(encoding="utf-8"), f"README lacks {command}"
