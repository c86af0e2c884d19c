"""openapi.yaml is the contract: schemathesis fuzzes every operation it describes on a live proxy.

The proxy runs policies/default.yaml as shipped, in front of the stub upstream, on a background
loop; ``schemathesis run`` (all checks: no 5xx, status codes, content types, headers and bodies
conform — every error an OpenAI-shaped ``Error`` — schema-violating requests refused, schema-valid
ones accepted, missing required headers, ignored auth) generates the cases from the spec alone,
so a route added to openapi.yaml is fuzzed without a change here.

CI: a bounded, deterministic run (fixed seed, one worker, no example database; ~550 cases, ~15 s).
Release checks, the long mode::

    CONCURPROXY_API_FUZZ=long python -m pytest -q tests/hardening/test_schemathesis_hardening.py -s

runs up to 5,000 examples per operation (more than 20,000 cases in all: several operations run out of
distinct inputs sooner; about 10 minutes on a 2-core box).
``CONCURPROXY_API_FUZZ_SEED`` changes the seed; a failure prints schemathesis's report, with a
``curl`` line and ``st replay`` id for each case.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from concurproxy.testing.stub_upstream import StubBehaviour

from ._proxy_thread import ProxyThread

pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "concurproxy" / "openapi.yaml"
LONG = os.environ.get("CONCURPROXY_API_FUZZ") == "long"
EXAMPLES = 5000 if LONG else 25  # per operation (several operations run out of distinct cases sooner)
MIN_CASES = 20_000 if LONG else 400
SEED = int(os.environ.get("CONCURPROXY_API_FUZZ_SEED", "21"))


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyThread]:
    p = ProxyThread([StubBehaviour(record=False)])
    p.start(ROOT / "policies" / "default.yaml")
    try:
        yield p
    finally:
        p.stop()


@pytest.mark.timeout(3600 if LONG else 300)
def test_the_proxy_keeps_the_openapi_contract(proxy: ProxyThread, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "run",
        str(SPEC),
        "--url",
        proxy.url,
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(EXAMPLES),
        "--workers",  # one: schemathesis's threads race in Python 3.11's ast (a RuntimeError, not a finding)
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    # cwd: schemathesis leaves a .schemathesis/ folder where it runs
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=3500 if LONG else 280)
    report = res.stdout + res.stderr
    counted = re.search(r"(\d+) generated", report)
    assert res.returncode == 0, report
    assert counted is not None and int(counted.group(1)) >= MIN_CASES, report
    print(f"schemathesis: {counted.group(1)} cases, seed {SEED}")


async def test_the_stub_upstream_caps_an_answer_like_an_engine_would() -> None:
    """The long fuzz sent max_tokens near 2^63 (the spec allows it): the stub built that answer in memory
    and the process died; an engine stops at its context length, and so does the stub."""
    import aiohttp

    from concurproxy.testing.stub_upstream import MAX_TOKENS, running_stub

    async with running_stub(StubBehaviour(record=False)) as url, aiohttp.ClientSession() as s:
        body = {"model": "stub-model", "prompt": "hi", "max_tokens": 2**63 - 1}
        async with s.post(url + "/v1/completions", json=body) as r:
            assert (await r.json())["usage"]["completion_tokens"] == MAX_TOKENS
