"""Start and stop real vLLM CPU engines through ``concurproxy worker --engine vllm``.

    with vllm_engine(model_dir, blocks=12, log_path=p) as eng:   # eng.url = http://127.0.0.1:PORT
        ...

Each engine is ``<this python> -m concurproxy worker --engine vllm --port P -- --model DIR
--served-model-name tiny --dtype bfloat16 --enforce-eager --enable-prefix-caching
--max-model-len 1024 --num-gpu-blocks-override N`` with ``VLLM_CPU_KVCACHE_SPACE=1
HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_SERVER_DEV_MODE=1`` (the last one enables
``POST /reset_prefix_cache``). The vLLM interpreter comes from ``CONCURPROXY_VLLM_PYTHON``
(see :func:`find_vllm_python`).

Bounded and always stopped: the start waits at most ``start_timeout_s`` for ``/health`` (and
fails at once, with the log's tail, if the worker exits); the stop sends SIGTERM to the worker
(which forwards it to vLLM and kills vLLM's process group after its grace period), waits
``stop_timeout_s``, then SIGKILLs. As a last resort every process that carries this engine's
unique ``CONCURPROXY_TIER_ENGINE`` environment marker (the worker, vLLM and its engine-core
children inherit it) is killed — so nothing this module started outlives the ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
ADDRESS_IN_USE = "Address already in use"  # an internal port taken between vLLM's choice and its bind
MARKER = "CONCURPROXY_TIER_ENGINE"
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_SERVER_DEV_MODE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class EngineStartError(RuntimeError):
    """The engine did not become healthy in time, or its worker exited."""


def find_vllm_python() -> str | None:
    """``$CONCURPROXY_VLLM_PYTHON``, else ``<repo>/.venv-vllm/bin/python``, if it is executable."""
    c = os.environ.get("CONCURPROXY_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    return c if Path(c).is_file() and os.access(c, os.X_OK) else None


def where_vllm_python() -> str:
    """Where :func:`find_vllm_python` looks, for messages."""
    env = os.environ.get("CONCURPROXY_VLLM_PYTHON")
    return f"CONCURPROXY_VLLM_PYTHON={env}" if env else str(REPO / ".venv-vllm" / "bin" / "python")


def vllm_importable(python: str, timeout_s: float = 120.0) -> str | None:
    """None when ``python`` can import vLLM's OpenAI server module, else the reason."""
    code = (
        "import importlib.util, sys; import vllm, torch; "
        "sys.exit(0 if importlib.util.find_spec('vllm.entrypoints.openai.api_server') else 3)"
    )
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python}: {exc}"
    if r.returncode != 0:
        return f"{python} cannot import vllm: {r.stderr.strip().splitlines()[-1:] or r.returncode}"
    return None


def make_model_dir(python: str, out: Path, size: str) -> Path:
    """``out/model-SIZE``, made with ``make_tiny_model.py`` by ``python`` (the vLLM venv's) unless it has weights."""
    d = out / f"model-{size}"
    if not (d / "model.safetensors").exists():
        script = REPO / "scripts" / "vllm" / "make_tiny_model.py"
        subprocess.run([python, str(script), str(d), "--size", size], check=True, timeout=600)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_args(model_dir: str | Path, blocks: int, max_model_len: int = 1024, model_name: str = "tiny") -> list[str]:
    return [
        "--model", str(model_dir), "--served-model-name", model_name, "--dtype", "bfloat16",
        "--enforce-eager", "--enable-prefix-caching", "--max-model-len", str(max_model_len),
        "--num-gpu-blocks-override", str(blocks),
    ]  # fmt: skip


@dataclass(frozen=True)
class EngineSpec:
    """One engine to start: its model, KV blocks, the core it is pinned to, and what it needs beyond the
    common arguments and environment (``engine_args``, ``ENGINE_ENV``)."""

    model_dir: str | Path
    blocks: int
    cpu_bind: str | None = None
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)


SpecLike = EngineSpec | tuple[str | Path, int, str | None]  # an EngineSpec, or (model_dir, blocks, cpu_bind)


@dataclass
class Engine:
    url: str
    proc: subprocess.Popen[bytes]
    marker: str
    log_path: Path
    started_s: float  # seconds from spawn to healthy
    blocks: int = 0  # --num-gpu-blocks-override

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(_read(self.log_path).splitlines()[-lines:])


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _marked_pids(marker: str) -> list[int]:
    """Pids whose environment holds ``MARKER=marker`` (Linux /proc; empty elsewhere)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
    return [p for p in pids if p != os.getpid()]


def _wait_healthy(eng: Engine, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if eng.proc.poll() is not None:
                raise EngineStartError(
                    f"vLLM worker exited with code {eng.proc.returncode} before it was healthy:\n{eng.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(eng.url + "/health").status_code == 200:
                    return
            time.sleep(0.5)
    raise EngineStartError(f"vLLM not healthy within {timeout_s:g} s:\n{eng.log_tail()}")


def stop_engine(eng: Engine, timeout_s: float = 30.0) -> None:
    if eng.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            eng.proc.send_signal(signal.SIGTERM)
        try:
            eng.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(eng.proc.pid, signal.SIGKILL)
            eng.proc.wait(timeout=10)
    for pid in _marked_pids(eng.marker):  # vLLM and its engine core, if the worker could not
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def vllm_engine(
    model_dir: str | Path,
    *,
    blocks: int,
    log_path: str | Path,
    python: str | None = None,
    max_model_len: int = 1024,
    cpu_bind: str | None = None,
    start_timeout_s: float = 240.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Engine]:
    """One engine, healthy inside the block, stopped (and reaped) on the way out."""
    with spawn_engines(
        [(model_dir, blocks, cpu_bind)], log_dir=Path(log_path).parent, python=python,
        max_model_len=max_model_len, start_timeout_s=start_timeout_s, extra_args=extra_args,
        log_names=[Path(log_path).name],
    ) as engines:  # fmt: skip
        yield engines[0]


@contextlib.contextmanager
def spawn_engines(
    specs: Sequence[SpecLike],
    *,
    log_dir: str | Path,
    python: str | None = None,
    max_model_len: int = 1024,
    start_timeout_s: float = 240.0,
    extra_args: Sequence[str] = (),
    log_names: Sequence[str] | None = None,
) -> Iterator[list[Engine]]:
    """Start engines (``EngineSpec`` or ``(model_dir, blocks, cpu_bind)``) at once, wait until all are healthy.

    ``extra_args`` go to every engine, after each spec's own."""
    py = python or find_vllm_python()
    if py is None:
        raise EngineStartError("no vLLM interpreter: run scripts/vllm/install.sh or set CONCURPROXY_VLLM_PYTHON")
    engines: list[Engine] = []

    def spawn(i: int, given: SpecLike) -> Engine:
        spec = given if isinstance(given, EngineSpec) else EngineSpec(*given)
        port = free_port()
        marker = uuid.uuid4().hex
        env = {**os.environ, **ENGINE_ENV, **spec.env, "CONCURPROXY_VLLM_PYTHON": py, MARKER: marker}
        if spec.cpu_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_bind
        log_path = Path(log_dir) / (log_names[i] if log_names else f"vllm-{port}.log")
        cmd = [
            sys.executable, "-m", "concurproxy", "worker", "--engine", "vllm", "--host", "127.0.0.1",
            "--port", str(port), "--", *engine_args(spec.model_dir, spec.blocks, max_model_len),
            *spec.extra_args, *extra_args,
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
            )
        return Engine(f"http://127.0.0.1:{port}", proc, marker, log_path, time.monotonic(), spec.blocks)

    try:
        for i, given in enumerate(specs):
            engines.append(spawn(i, given))
        for i, given in enumerate(specs):
            eng = engines[i]
            try:
                _wait_healthy(eng, start_timeout_s - (time.monotonic() - eng.started_s))
            except EngineStartError:
                # Engines started together pick their internal ZeroMQ ports from the free ones at the same
                # moment, and two can take the same (seen: "zmq.error.ZMQError: Address already in use" in
                # the tier, a 2-engine start): that one is started again, once, with the others up.
                if eng.proc.poll() is None or ADDRESS_IN_USE not in _read(eng.log_path):
                    raise
                stop_engine(eng)
                eng = engines[i] = spawn(i, given)
                _wait_healthy(eng, start_timeout_s)
            eng.started_s = time.monotonic() - eng.started_s
        yield engines
    finally:
        for eng in engines:
            stop_engine(eng)
