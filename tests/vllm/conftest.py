"""Real-vLLM CPU tier: fixtures that make the tier's two models and start two real engines once per session.

Skipped (with the reason) only when the engine is not installed: no interpreter at
``$CONCURPROXY_VLLM_PYTHON`` / ``.venv-vllm/bin/python``, or it cannot import vLLM. Install it
with ``bash scripts/vllm/install.sh``. Everything else — a model failing to build, an engine
that does not become healthy — is an error, not a skip.

Sized for a slow shared 2-core machine (issue 22): two engines in all, started together, each
pinned to its own core, 12 KV blocks of 128 tokens each (``--max-model-len 1024``):

* ``engines[0]``, ``medium_engine`` — the ``medium`` model (41 M parameters, random weights): on it
  recomputing an evicted agent context costs several decode steps, as on real models (see
  make_tiny_model.py). Used by the admission test on the agent loop and the routing test.
* ``engines[1]``, ``engine`` — the ``tiny`` model (2.2 M): fast, for everything that checks shape
  and counts (official clients, every API, pressure, tokenizer, prefix events) and for the
  decode-bound swarm where recompute is cheap. It also publishes KV cache events on ZMQ
  (``kv_events``), reports ``prompt_tokens_details``, accepts request chat templates and stores
  Responses (``VLLM_ENABLE_RESPONSES_API_STORE=1``, so ``previous_response_id`` chains work).

Both models are made by ``make_tiny_model.py`` with the same tokenizer (byte-level BPE, vocab 2048)
and get the same tool-calling chat template (``chat_cases.TOOL_TEMPLATE``; the original ChatML
one is kept as ``chatml.jinja``), so a prompt is the same tokens on either engine (the routing
test spreads one workload over both). Engines stop right after the tier's last test (so they do
not idle through the rest of a whole-suite run), and in any case at the end of the session
(see scripts/vllm/engines.py).
"""

from __future__ import annotations

import contextlib
import json
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

from chat_cases import TOOL_TEMPLATE  # noqa: E402

from scripts.vllm.engines import (  # noqa: E402
    Engine,
    EngineSpec,
    find_vllm_python,
    free_port,
    spawn_engines,
    vllm_importable,
    where_vllm_python,
)
from scripts.vllm.harness import policy_for  # noqa: E402

BLOCKS = 12
SIZES = ("medium", "tiny")  # engines[0], engines[1]
TIMEOUT_S = 600  # per test, setup included (the first test also waits for the engines)
_ENGINES = pytest.StashKey[contextlib.ExitStack]()
INSTALL_HINT = "run `bash scripts/vllm/install.sh` or set CONCURPROXY_VLLM_PYTHON"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.vllm)
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


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
def tier_models(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"medium": DIR, "tiny": DIR}``, made at once (two processes), both with the tool template."""
    root = tmp_path_factory.mktemp("tier-models")
    script = REPO / "scripts" / "vllm" / "make_tiny_model.py"
    dirs = {size: root / size for size in SIZES}
    procs = {
        size: subprocess.Popen(
            [vllm_python, str(script), str(d), "--size", size], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for size, d in dirs.items()
    }
    for size, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"make_tiny_model --size {size} failed:\n{out.decode(errors='replace')}"
    for d in dirs.values():
        cfg_path = d / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        (d / "chatml.jinja").write_text(cfg["chat_template"])  # the model's original template, kept for a case
        cfg["chat_template"] = TOOL_TEMPLATE
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return dirs


@pytest.fixture(scope="session")
def kv_events() -> dict[str, str]:
    """Where ``engines[1]`` publishes its KV cache events (an upstream's ``kv_events`` policy entry)."""
    port, replay = free_port(), free_port()
    return {"endpoint": f"tcp://127.0.0.1:{port}", "replay_endpoint": f"tcp://127.0.0.1:{replay}"}


@pytest.fixture(scope="session")
def engines(
    request: pytest.FixtureRequest,
    vllm_python: str,
    tier_models: dict[str, Path],
    kv_events: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Engine]]:
    logs = tmp_path_factory.mktemp("vllm-logs")
    binds: list[str | None] = ["0", "1"] if (os.cpu_count() or 1) >= 2 else [None, None]
    publisher = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": kv_events["endpoint"].replace("127.0.0.1", "*"),
        "replay_endpoint": kv_events["replay_endpoint"].replace("127.0.0.1", "*"),
    }
    tiny_args = ["--kv-events-config", json.dumps(publisher), "--trust-request-chat-template"]
    specs = [
        EngineSpec(tier_models["medium"], BLOCKS, binds[0]),
        EngineSpec(tier_models["tiny"], BLOCKS, binds[1], tiny_args, {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}),
    ]
    with contextlib.ExitStack() as stack:
        request.config.stash[_ENGINES] = stack  # closed early by pytest_runtest_teardown below
        engs = stack.enter_context(
            spawn_engines(
                specs, log_dir=logs, python=vllm_python, start_timeout_s=400,
                extra_args=["--enable-prompt-tokens-details"], log_names=[f"vllm-{s}.log" for s in SIZES],
            )
        )  # fmt: skip
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
    """The ``tiny`` engine (fast; KV events, stored Responses)."""
    return engines[1]


@pytest.fixture
def medium_engine(engines: list[Engine]) -> Engine:
    return engines[0]


@pytest.fixture
def tiny_model(tier_models: dict[str, Path]) -> Path:
    return tier_models["tiny"]


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    return policy_for
