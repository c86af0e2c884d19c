"""A policy naming a plugin that is not installed (issue 21 item 12).

It used to pass ``config validate`` ("ok … admission=aimdd") and then kill ``serve`` with a
traceback (``UnknownControllerError``); a reload accepted it into the running policy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from concurproxy.cli import main

BAD = {
    "controller": (
        {"admission": {"controller": "aimdd"}},
        "admission.controller",
        "known: aimd, gradient, none, static",
    ),
    "fairness": ({"fairness": {"policy": "wfq"}}, "fairness.policy", "known: fifo, vtc"),
    "scorer": (
        {"routing": {"scorers": [{"type": "queue"}, {"type": "gpu-temp"}]}},
        "routing.scorers.1.type",
        "known: kv-headroom, prefix-match, queue, session-affinity, window-room",
    ),
    "router": (
        {"routing": {"policy": "random"}},
        "routing.policy",
        "known: least-loaded, prefix-affinity, round-robin",
    ),
}


def _write(tmp_path: Path, doc: dict[str, object]) -> Path:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"upstreams": [{"url": "http://127.0.0.1:1"}], **doc}))
    return f


@pytest.mark.parametrize("kind", list(BAD))
def test_validate_names_the_field_and_the_installed_names(tmp_path, capsys, kind):
    doc, field, known = BAD[kind]
    assert main(["config", "validate", str(_write(tmp_path, doc))]) == 1
    out, err = capsys.readouterr()
    assert "ok" not in out
    assert f"  {field}: unknown " in err and known in err


def test_validate_reports_every_bad_name_at_once(tmp_path, capsys):
    doc = {"admission": {"controller": "aimdd"}, "fairness": {"policy": "wfq"}}
    assert main(["config", "validate", str(_write(tmp_path, doc))]) == 1
    err = capsys.readouterr().err
    assert "2 unknown or broken plugin(s)" in err and "admission.controller" in err and "fairness.policy" in err


def test_serve_prints_one_line_and_exits_non_zero(tmp_path):
    f = _write(tmp_path, BAD["controller"][0])
    res = subprocess.run(
        [sys.executable, "-m", "concurproxy", "serve", "--config", str(f), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"{f}: admission.controller: unknown admission controller 'aimdd'; known: aimd, gradient, none, static"
    ]
