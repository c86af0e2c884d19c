"""Install the tiny plugin package of ``tests/fixtures/plugin_pkg`` for one test, offline.

The package is copied to a temporary directory with a ``.dist-info`` holding its
``entry_points.txt``, and that directory goes first on ``sys.path`` (and on
``PYTHONPATH`` for subprocesses): ``importlib.metadata`` then finds it exactly as
it finds a pip-installed distribution.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "plugin_pkg"
PACKAGE = "concurproxy_testplugin"


def install_plugin_package(target: Path) -> Path:
    """Lay out the plugin as an installed distribution under ``target``; returns ``target``."""
    shutil.copytree(FIXTURE / PACKAGE, target / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    dist = target / f"{PACKAGE}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1\n")
    shutil.copy(FIXTURE / "entry_points.txt", dist / "entry_points.txt")
    return target


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    target = install_plugin_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    yield target
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
