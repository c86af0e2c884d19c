"""Real-vLLM CPU tier: fixtures that make the tier's model and start two real engines once per session.

Skipped (with the reason) only when the engine is not installed: no interpreter at
``$CONCURPROXY_VLLM_PYTHON`` / ``.venv-vllm/bin/python``, or it cannot import vLLM. Install it
with ``bash scripts/vllm/install.sh``. Everything else — the model failing to build, an engine
that does not become healthy — is an error, not a skip.

Model: ``make_tiny_model.py --size medium`` (41 M parameters, random weights): the smallest
locally made model on which recomputing an evicted context costs more than the step it serves
(see that script), so that what admission saves shows in goodput as it would on a real model.

Engines: ``engines[0]`` and ``engines[1]``, each ``--num-gpu-blocks-override 12`` (12 × 128
KV tokens), started together through ``concurproxy worker --engine vllm`` and pinned to one
core each; stopped right after the tier's last test (so they do not idle through the rest of
a whole-suite run), and in any case at the end of the session (see scripts/vllm/engines.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from concurproxy.config.models import Policy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/vllm is a namespace package at the repo root
    sys.path.insert(0, str(REPO))

from scripts.vllm.engines import (  # noqa: E402
    Engine,
    find_vllm_python,
    spawn_engines,
    vllm_importable,
    where_vllm_python,
)
from scripts.vllm.harness import policy_for  # noqa: E402

BLOCKS = 12
MODEL_SIZE = "medium"
_ENGINES = pytest.StashKey[contextlib.ExitStack]()
INSTALL_HINT = "run `bash scripts/vllm/install.sh` or set CONCURPROXY_VLLM_PYTHON"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.vllm)
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def vllm_python() -> str:
    py = find_vllm_python()
    if py is None:
        pytest.skip(f"vLLM CPU engine not installed: no interpreter at {where_vllm_python()} ({INSTALL_HINT})")
    why = vllm_importable(py)
    if why is not None:
        pytest.skip(f"vLLM CPU engine not usable: {why} ({INSTALL_HINT})")
    return py


@pytest.fixture(scope="session")
def tier_model(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("medium-llama")
    r = subprocess.run(
        [vllm_python, str(REPO / "scripts" / "vllm" / "make_tiny_model.py"), str(out), "--size", MODEL_SIZE],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"make_tiny_model failed:\n{r.stdout}\n{r.stderr}"
    return out


@pytest.fixture(scope="session")
def engines(
    request: pytest.FixtureRequest, vllm_python: str, tier_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Engine]]:
    logs = tmp_path_factory.mktemp("vllm-logs")
    binds: list[str | None] = ["0", "1"] if (os.cpu_count() or 1) >= 2 else [None, None]
    specs = [(tier_model, BLOCKS, b) for b in binds]
    with contextlib.ExitStack() as stack:
        request.config.stash[_ENGINES] = stack  # closed early by pytest_runtest_teardown below
        engs = stack.enter_context(spawn_engines(specs, log_dir=logs, python=vllm_python, start_timeout_s=300))
        print(f"\nvLLM engines healthy: {[(e.url, round(e.started_s, 1)) for e in engs]}", flush=True)
        yield engs


def _in_tier(item: pytest.Item | None) -> bool:
    return item is not None and Path(str(item.fspath)).is_relative_to(Path(__file__).parent)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the engines after the tier's last test, not at the end of the whole session."""
    if _in_tier(item) and not _in_tier(nextitem):
        stack = item.config.stash.get(_ENGINES, None)
        if stack is not None:
            stack.close()


@pytest.fixture
def engine(engines: list[Engine]) -> Engine:
    return engines[0]


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    return policy_for
