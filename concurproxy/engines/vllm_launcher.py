"""Launch vLLM as a child process, wait until it is healthy, run the node agent beside it.

``concurproxy worker --engine vllm -- <vllm args>`` calls :func:`run_vllm`.

Lifecycle
    1. ``<python> -m vllm.entrypoints.openai.api_server --host H --port P <vllm args>`` starts in
       its own session (process group), stdout+stderr relayed to ours with a ``[vllm]`` prefix; the
       last few KiB are kept for error messages. ``python`` defaults to ``$CONCURPROXY_VLLM_PYTHON``
       (e.g. a separate venv with vLLM's CPU or CUDA build), else this interpreter.
    2. The node agent (if ``node_agent_port`` is given) starts at once, in this process; until vLLM
       is up its feed says the engine is not ok, which the proxy treats as saturated.
    3. ``GET /health`` is polled until 200, the child exits (→ a clear error with its last output
       and its exit code) or ``health_timeout_s`` passes (→ stop it, exit code 1).
    4. Then we wait for the child to exit, or for SIGINT/SIGTERM: the same signal is forwarded to
       vLLM once; if it has not exited after ``stop_grace_s`` its whole process group is killed
       (vLLM's engine-core processes included). A second signal kills at once.

Return value: the child's exit code; death by signal N is reported as ``128 + N``.
Being in its own process group, a terminal's Ctrl-C reaches vLLM only through us — once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import aiohttp

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
PYTHON_ENV = "CONCURPROXY_VLLM_PYTHON"
_TAIL_BYTES = 4096


class LaunchError(RuntimeError):
    """vLLM could not be started (bad arguments, exited early, never became healthy)."""


def resolve_python(python: str | None, env: Mapping[str, str] | None = None) -> str:
    """Interpreter that runs vLLM: the argument, else ``$CONCURPROXY_VLLM_PYTHON``, else this one."""
    if python:
        return python
    for source in (env or {}, os.environ):
        if source.get(PYTHON_ENV):
            return source[PYTHON_ENV]
    return sys.executable


def build_command(python: str, host: str, port: int, vllm_args: Sequence[str], module: str = VLLM_MODULE) -> list[str]:
    for arg in vllm_args:
        if arg.split("=", 1)[0] in ("--host", "--port"):
            raise LaunchError(f"pass {arg.split('=', 1)[0]} to concurproxy, not in the vLLM arguments")
    return [python, "-m", module, "--host", host, "--port", str(port), *vllm_args]


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class _Child:
    """The running vLLM process: output relay, stop sequence."""

    def __init__(self, proc: asyncio.subprocess.Process, log: IO[str] | None):
        self.proc = proc
        self.tail = bytearray()
        self._log = log
        self.relay = asyncio.create_task(self._relay(), name="vllm-output")
        self.exited = asyncio.create_task(proc.wait(), name="vllm-wait")

    async def _relay(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.tail += chunk
            del self.tail[:-_TAIL_BYTES]
            if self._log is not None:
                text = chunk.decode(errors="replace")
                self._log.write("".join(f"[vllm] {line}" for line in text.splitlines(keepends=True)))
                self._log.flush()

    def last_output(self, lines: int = 15) -> str:
        return "\n".join(self.tail.decode(errors="replace").splitlines()[-lines:])

    def _killpg(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, sig: int, grace_s: float, kill_now: asyncio.Event) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            killer = asyncio.create_task(kill_now.wait())
            done, _ = await asyncio.wait({self.exited, killer}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            killer.cancel()
            if self.exited not in done:
                self._write(f"vLLM did not stop within {grace_s:g} s of {signal.Signals(sig).name}; killing it")
                self._killpg()
        return await self.finish()

    async def finish(self) -> int:
        code = await self.exited
        self._killpg()  # leftovers of vLLM's process group (engine-core workers) must not hold the GPU
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self.relay, timeout=5)
        return exit_code(code)

    def _write(self, msg: str) -> None:
        print(f"concurproxy: {msg}", file=self._log or sys.stderr, flush=True)


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def run_vllm_async(
    vllm_args: Sequence[str],
    host: str,
    port: int,
    node_agent_port: int | None,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    module: str = VLLM_MODULE,
    health_timeout_s: float = 1800.0,
    health_interval_s: float = 0.5,
    stop_grace_s: float = 30.0,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    on_ready: Callable[[str, str | None], object] | None = None,
    log: IO[str] | None = None,
) -> int:
    """See the module docstring. ``on_ready(engine_url, node_agent_url)`` runs once vLLM is healthy."""
    log = log if log is not None else sys.stderr
    cmd = build_command(resolve_python(python, env), host, port, vllm_args, module)
    stop = stop or asyncio.Event()
    kill_now = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        received.append(sig)
        (kill_now if stop.is_set() else stop).set()

    check_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    engine_url = f"http://{check_host}:{port}"
    print(f"concurproxy: starting vLLM: {' '.join(cmd)}", file=log, flush=True)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as exc:
        raise LaunchError(f"cannot start {cmd[0]!r}: {exc}") from exc
    child = _Child(proc, log)
    signals = (signal.SIGINT, signal.SIGTERM) if install_signal_handlers else ()
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with contextlib.AsyncExitStack() as stack:
            agent_url = None
            if node_agent_port is not None:
                from concurproxy.nodeagent.agent import run_node_agent

                agent_url = await stack.enter_async_context(run_node_agent(engine_url, node_agent_port, host))
                print(f"concurproxy: node agent at {agent_url}/pressure", file=log, flush=True)
            stopped = asyncio.create_task(stop.wait())
            stack.callback(stopped.cancel)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            started = time.monotonic()
            while not await _healthy(session, engine_url + "/health"):
                waited = time.monotonic() - started
                if waited > health_timeout_s:
                    print(
                        f"concurproxy: vLLM not healthy within {health_timeout_s:g} s; stopping it",
                        file=log,
                        flush=True,
                    )
                    await child.stop(signal.SIGTERM, stop_grace_s, kill_now)
                    return 1
                await asyncio.wait(
                    {child.exited, stopped}, timeout=health_interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                if child.exited.done():
                    code = await child.finish()
                    print(
                        f"concurproxy: vLLM exited with code {code} before it became healthy "
                        f"(after {waited:.1f} s). Last output:\n{child.last_output()}",
                        file=log,
                        flush=True,
                    )
                    return code or 1
                if stopped.done():
                    return await child.stop(received[-1] if received else signal.SIGTERM, stop_grace_s, kill_now)
            print(f"concurproxy: vLLM healthy at {engine_url}", file=log, flush=True)
            if on_ready is not None:
                result = on_ready(engine_url, agent_url)
                if inspect.isawaitable(result):
                    await result
            await asyncio.wait({child.exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if child.exited.done():
                code = await child.finish()
                print(f"concurproxy: vLLM exited with code {code}", file=log, flush=True)
                return code
            return await child.stop(received[-1] if received else signal.SIGTERM, stop_grace_s, kill_now)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if proc.returncode is None:  # cancelled or failed above: never leave vLLM behind
            child._killpg()
            await child.finish()


def run_vllm(
    vllm_args: list[str],
    host: str,
    port: int,
    node_agent_port: int | None,
    python: str | None = None,
    env: dict[str, str] | None = None,
    **options: object,
) -> int:
    """Blocking entry point for the CLI; ``options`` go to :func:`run_vllm_async`."""
    try:
        return asyncio.run(run_vllm_async(vllm_args, host, port, node_agent_port, python, env, **options))  # type: ignore[arg-type]
    except LaunchError as exc:
        print(f"concurproxy: {exc}", file=sys.stderr, flush=True)
        return 2
