"""The one-line tier summary (tests/tier_summary.py): classification, wording, and a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tier_summary import CORE, TierTally, format_line, short_reason, tier_of


@pytest.mark.parametrize(
    ("markers", "tier"),
    [
        ((), CORE),
        (("parametrize", "timeout"), CORE),
        (("redis",), "redis"),
        (("prometheus", "asyncio"), "prometheus"),
        (("deploy_schemas",), "deploy-schemas"),
        (("vllm", "timeout"), "vllm"),
    ],
)
def test_tier_of(markers: tuple[str, ...], tier: str) -> None:
    assert tier_of(markers) == tier


@pytest.mark.parametrize(
    ("reason", "short"),
    [
        ("Skipped: no redis-server binary (apt-get install redis-server)", "no redis-server binary"),
        ("no node binary", "no node binary"),
        ("promtool not installed (Debian package `prometheus`)", "promtool not installed"),
        ("odd (but kept) reason", "odd (but kept) reason"),
    ],
)
def test_short_reason(reason: str, short: str) -> None:
    assert short_reason(reason) == short


def test_line_names_what_ran_what_skipped_why_and_the_command() -> None:
    tallies = {
        CORE: TierTally(Counter(passed=10, failed=1)),
        "redis": TierTally(Counter(skipped=3), Counter({"no redis-server binary": 3})),
        "vllm": TierTally(not_run=6),
    }
    line = format_line(tallies, quick=True)
    assert line.startswith("tiers: core 10 passed, 1 failed | redis 3 skipped (no redis-server binary) → ")
    assert "apt-get install -y redis-server" in line
    assert line.endswith("| vllm 6 not run (CONCURPROXY_QUICK=1) → bash scripts/test.sh")
    assert "prometheus" not in line  # not collected in this run: not mentioned
    assert "\n" not in line


def test_a_skip_without_an_install_hint_gets_no_install_command() -> None:
    """A tier skipped for its machine (vLLM's agent loop where a prefill is too slow), not for a missing install:
    the install command would mislead."""
    slow = "vLLM's CPU build prefills 256 tokens on medium in 1.23 s here"
    tallies = {"vllm": TierTally(Counter(passed=11, skipped=1), Counter({slow: 1}), unhinted={slow})}
    assert format_line(tallies, quick=False) == f"tiers: vllm 11 passed, 1 skipped ({slow})"


def test_a_real_run_ends_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    redis: x\n    prometheus: x\n    vllm: x\n")
    (tmp_path / "conftest.py").write_text(  # registers the plugin the way tests/conftest.py does
        "from tier_summary import TierSummary\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(TierSummary(config), 'concurproxy-tier-summary')\n"
    )
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "@pytest.mark.redis\n"
        "def test_r(): pytest.skip('no redis-server binary (hint)')\n"
        "@pytest.mark.prometheus\n"
        "def test_p(): pytest.skip('too slow on this machine')\n"
        "@pytest.mark.vllm\n"
        "def test_v(): pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CONCURPROXY_TIER_SUMMARY"}
    env.update(PYTHONPATH=str(Path(__file__).parent), CONCURPROXY_QUICK="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("tiers: core 1 passed | redis 1 skipped (no redis-server binary) → ")
    assert "| prometheus 1 skipped (too slow on this machine) | " in last  # no install command: none is missing
    assert last.endswith("| vllm 1 not run (CONCURPROXY_QUICK=1) → bash scripts/test.sh")
