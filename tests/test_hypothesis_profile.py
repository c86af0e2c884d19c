"""Hypothesis runs derandomised in CI (``CI=true``) and random elsewhere (issue 21 Also)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_ci_profile_is_reproducible() -> None:
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None and ci.print_blob
    assert not settings.get_profile("dev").derandomize  # local runs keep searching for new failures


@pytest.mark.skipif(os.environ.get("CONCURPROXY_PROFILE_PROBE") is None, reason="run by the test below")
def test_probe_loaded_profile() -> None:
    assert settings().derandomize is (os.environ["CONCURPROXY_PROFILE_PROBE"] == "ci")


def test_this_run_uses_the_profile_its_environment_asks_for() -> None:
    wanted = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
    assert settings().derandomize is (wanted == "ci")


def test_ci_true_selects_the_ci_profile() -> None:
    env = {**os.environ, "CI": "true", "CONCURPROXY_PROFILE_PROBE": "ci"}
    env.pop("HYPOTHESIS_PROFILE", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_probe_loaded_profile"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
