"""scripts/vllm/engines.py's start of several engines, against the fake engine (no real vLLM here)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from scripts.vllm.engines import EngineStartError, spawn_engines

FAKE = Path(__file__).parent / "fake_engine" / "fake_vllm_engine.py"


def fake_python(tmp_path: Path, mode: str) -> str:
    """An interpreter for the launcher that runs the fake engine instead of ``-m vllm.entrypoints...``."""
    marker = tmp_path / "marker"
    py = tmp_path / "fake-python"
    py.write_text(
        f'#!/bin/sh\nshift 2\nFAKE_ENGINE_MODE={mode} FAKE_ENGINE_MARKER={marker} exec {sys.executable} {FAKE} "$@"\n'
    )
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return str(py)


def starts(tmp_path: Path) -> int:
    return sum(line.startswith("argv") for line in (tmp_path / "marker").read_text().splitlines())


def test_an_engine_whose_internal_port_was_taken_is_started_once_more(tmp_path: Path) -> None:
    """Two vLLM engines started together can pick the same free ZeroMQ port; the loser exits with
    "Address already in use" (seen in the real-vLLM tier). It is started again, and the tier goes on."""
    py = fake_python(tmp_path, "port-taken-once")
    with spawn_engines([("model", 12, None)], log_dir=tmp_path, python=py, start_timeout_s=30) as engines:
        assert len(engines) == 1 and engines[0].proc.poll() is None
    assert starts(tmp_path) == 2


def test_any_other_early_exit_is_an_error_at_once(tmp_path: Path) -> None:
    py = fake_python(tmp_path, "exit-early")
    with pytest.raises(EngineStartError, match="OutOfMemoryError"):
        with spawn_engines([("model", 12, None)], log_dir=tmp_path, python=py, start_timeout_s=30):
            pass
    assert starts(tmp_path) == 1


@pytest.fixture(autouse=True)
def _no_inherited_fake_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FAKE_ENGINE_"):
            monkeypatch.delenv(name)
