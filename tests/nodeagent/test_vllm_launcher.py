"""The vLLM launcher against a fake engine module (no real vLLM here)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from concurproxy.engines.vllm_launcher import (
    PYTHON_ENV,
    LaunchError,
    build_command,
    exit_code,
    resolve_python,
    run_vllm,
    run_vllm_async,
)

FAKE_DIR = Path(__file__).parent / "fake_engine"
REPO = Path(__file__).parents[2]
MODULE = "fake_vllm_engine"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_env(tmp_path: Path, mode: str = "ok", **extra: str) -> dict[str, str]:
    return {
        "PYTHONPATH": str(FAKE_DIR),
        "FAKE_ENGINE_MODE": mode,
        "FAKE_ENGINE_MARKER": str(tmp_path / "marker"),
        **extra,
    }


def marker(tmp_path: Path) -> list[str]:
    p = tmp_path / "marker"
    return p.read_text().splitlines() if p.exists() else []


def test_command_python_resolution_and_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_command("/venv/bin/python", "0.0.0.0", 8000, ["--model", "m", "--enforce-eager"]) == [
        "/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--model",
        "m",
        "--enforce-eager",
    ]
    with pytest.raises(LaunchError, match="pass --port to concurproxy"):
        build_command("py", "h", 1, ["--port=9"])
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    assert resolve_python(None) == sys.executable
    monkeypatch.setenv(PYTHON_ENV, "/from/os/env")
    assert resolve_python(None) == "/from/os/env"
    assert resolve_python(None, {PYTHON_ENV: "/from/arg/env"}) == "/from/arg/env"
    assert resolve_python("/explicit") == "/explicit"
    assert (exit_code(0), exit_code(3), exit_code(-9), exit_code(-15)) == (0, 3, 137, 143)


async def test_healthy_then_clean_stop_with_node_agent(tmp_path: Path) -> None:
    port, agent_port = free_port(), free_port()
    stop = asyncio.Event()
    feeds: list[dict[str, object]] = []
    log = io.StringIO()

    async def ready(engine_url: str, agent_url: str | None) -> None:
        assert engine_url == f"http://127.0.0.1:{port}" and agent_url == f"http://127.0.0.1:{agent_port}"
        async with aiohttp.ClientSession() as s:
            for _ in range(300):  # bounded wait for the agent's first scrape of the engine
                async with s.get(agent_url + "/pressure") as r:
                    doc = await r.json()
                if doc["engine"]["ok"]:
                    feeds.append(doc)
                    break
                await asyncio.sleep(0.01)
        stop.set()

    code = await run_vllm_async(
        ["--model", "tiny", "--enforce-eager"],
        "127.0.0.1",
        port,
        agent_port,
        env=fake_env(tmp_path, FAKE_ENGINE_DELAY="0.3"),
        module=MODULE,
        health_interval_s=0.05,
        stop=stop,
        install_signal_handlers=False,
        on_ready=ready,
        log=log,
    )
    assert code == 0, log.getvalue()
    assert marker(tmp_path) == [
        f"argv --host 127.0.0.1 --port {port} --model tiny --enforce-eager",
        "SIGTERM",
    ]
    engine = feeds[0]["engine"]
    assert isinstance(engine, dict) and engine["kv_usage"] == 0.25 and engine["kv_capacity_tokens"] == 48 * 128
    out = log.getvalue()
    assert "[vllm] INFO fake engine: shut down cleanly" in out and "vLLM healthy at" in out


async def test_child_exits_early_gives_a_clear_error(tmp_path: Path) -> None:
    log = io.StringIO()
    code = await run_vllm_async(
        [],
        "127.0.0.1",
        free_port(),
        None,
        env=fake_env(tmp_path, "exit-early"),
        module=MODULE,
        health_interval_s=0.05,
        install_signal_handlers=False,
        log=log,
    )
    assert code == 3
    out = log.getvalue()
    assert "vLLM exited with code 3 before it became healthy" in out
    assert "Last output:\nINFO fake engine: loading model\nERROR fake engine: torch.OutOfMemoryError" in out


async def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    stop = asyncio.Event()
    log = io.StringIO()
    code = await run_vllm_async(
        [],
        "127.0.0.1",
        free_port(),
        None,
        env=fake_env(tmp_path, "ignore-term"),
        module=MODULE,
        health_interval_s=0.05,
        stop_grace_s=0.3,
        stop=stop,
        install_signal_handlers=False,
        on_ready=lambda *_: stop.set(),
        log=log,
    )
    assert code == 128 + signal.SIGKILL
    assert "did not stop within 0.3 s of SIGTERM; killing it" in log.getvalue()
    assert marker(tmp_path)[-1] == "SIGTERM"


async def test_never_healthy_times_out(tmp_path: Path) -> None:
    log = io.StringIO()
    code = await run_vllm_async(
        [],
        "127.0.0.1",
        free_port(),
        None,
        env=fake_env(tmp_path, "never-healthy"),
        module=MODULE,
        health_timeout_s=0.3,
        health_interval_s=0.05,
        install_signal_handlers=False,
        log=log,
    )
    assert code == 1 and "not healthy within 0.3 s" in log.getvalue()
    assert marker(tmp_path)[-1] == "SIGTERM"


def test_missing_interpreter_is_a_launch_error(tmp_path: Path) -> None:
    assert run_vllm([], "127.0.0.1", free_port(), None, python=str(tmp_path / "no-python")) == 2


def test_sigint_to_the_launcher_is_forwarded_and_stops_cleanly(tmp_path: Path) -> None:
    """End to end: the launcher in its own process, a real SIGINT sent to it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = (
        "import sys; from concurproxy.engines.vllm_launcher import run_vllm; "
        f"sys.exit(run_vllm(['--model', 'x'], '127.0.0.1', {port}, None, env={fake_env(tmp_path)!r}, "
        f"module={MODULE!r}, health_interval_s=0.05))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while "vLLM healthy" not in (line := proc.stderr.readline()):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "launcher never reported the engine healthy"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert marker(tmp_path)[-1] == "SIGINT"  # the same signal, forwarded once
