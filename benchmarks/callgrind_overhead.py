"""Instructions per request of the proxy (and the bare pass-through), counted by callgrind.

    python -m benchmarks.callgrind_overhead [--seconds 8] [--connections 16] [--target proxy|bare|both]
                                         [--api chat|responses|messages] [--stream] [--max-tokens N]

Timings on a shared 2-core machine move by 2x with the neighbours' load; instruction
counts do not. The server runs under ``valgrind --tool=callgrind`` with instrumentation
off; it is switched on only while ``wrk`` drives the benchmark's request (the same body
and identity headers as ``benchmarks.overhead``), then the total instructions (Ir) are divided
by the requests wrk completed. Needs valgrind (callgrind_control) and wrk.

The server runs with Python's own allocator, as in production (no ``PYTHONMALLOC=malloc``).
Under valgrind the server runs ~50x slower, so a run completes only a few hundred
requests, and the background work (pressure polling, admission ticks) that runs per second,
not per request, is a visible share that moves with how busy the machine is. So the same
server is first counted idle for ``--idle-seconds`` (instrumentation on, no load), and a
second figure subtracts that background rate over the load's duration: the *marginal*
instructions per request, steadier between runs than the raw one.

``--keep DIR`` keeps the callgrind output there for ``callgrind_annotate`` (which
functions cost what).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.overhead import free_port, process, wrk


def _total_ir(files: list[Path]) -> int:
    total = 0
    for f in files:
        found = re.findall(r"^totals:\s+(\d+)", f.read_text(errors="replace"), flags=re.M)
        total += int(found[-1]) if found else 0  # the header's `summary:` stays 0 when toggled on later
    return total


def _dump(pid: int, out_dir: Path) -> Path:
    """Dump (and zero) the counters so far; returns the dump file once it is complete."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for f in out_dir.glob(f"callgrind.out.{pid}.*"):
            if re.search(r"^totals:", f.read_text(errors="replace"), flags=re.M):
                return f
        time.sleep(0.2)
    raise RuntimeError("callgrind did not write the idle dump")


def measure(
    target: str,
    seconds: float,
    connections: int,
    keep: Path | None,
    policy: str | None,
    idle_s: float = 4.0,
    api: str = "chat",
    stream: bool = False,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """``api``/``stream``: which request wrk repeats (``bench_api_overhead.APIS``; the bare pass-through
    relays the same routes)."""
    from benchmarks.api_overhead import APIS

    path, body = APIS[api]
    body = {**body, "stream": True} if stream else body
    if max_tokens is not None:
        body = {**body, "max_output_tokens" if api == "responses" else "max_tokens": max_tokens}
    stub_port, server_port = free_port(), free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    server = f"http://127.0.0.1:{server_port}"
    py = sys.executable
    if target == "proxy":
        cmd = [py, "-m", "concurproxy", "serve", "--upstream", stub, "--port", str(server_port)]
        if policy:
            cmd += ["--config", policy]
        ready = server + "/ready"
    else:
        cmd = [py, "-m", "benchmarks.bare_passthrough", "--upstream", stub, "--port", str(server_port)]
        ready = server + "/ready"
    out_dir = keep or Path(tempfile.mkdtemp(prefix="callgrind-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("callgrind.out.*"):
        old.unlink()
    vg = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
    ]
    # Python's own allocator, as in production: PYTHONMALLOC=malloc (which memcheck needs, not
    # callgrind) makes every small allocation a libc malloc/free that production does not pay.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    env["CONCURPROXY_LOG_LEVEL"] = "WARNING"
    stub_cmd = [py, "-m", "concurproxy.testing.stub_upstream", "--port", str(stub_port)]
    with process(stub_cmd, stub + "/health"):
        # valgrind starts slowly and writes its profile on SIGTERM: long timeouts both ways
        with process([*vg, *cmd], ready, env=env, start_timeout_s=120, stop_timeout_s=60, capture_stderr=False) as proc:
            wrk(server + path, connections, 2, cpu=1, body=body)  # warm-up, not counted
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
            idle_started = time.monotonic()
            time.sleep(idle_s)  # the background alone
            idle_file = _dump(proc.pid, out_dir)
            idle_elapsed = time.monotonic() - idle_started
            load_started = time.monotonic()
            r = wrk(server + path, connections, seconds, cpu=1, body=body)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
            load_elapsed = time.monotonic() - load_started
    idle_ir = _total_ir([idle_file])
    ir = _total_ir([f for f in out_dir.glob("callgrind.out.*") if f != idle_file])
    if keep is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    background = idle_ir * load_elapsed / idle_elapsed  # the idle rate over the load's duration
    return {
        "requests": r["requests"],
        "non2xx": r["non2xx"],
        "instructions": ir,
        "per_request": ir / r["requests"],
        "idle_instructions_per_s": idle_ir / idle_elapsed,
        "marginal_per_request": max(0.0, ir - background) / r["requests"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--idle-seconds", type=float, default=4.0, help="background counted idle first (see above)")
    ap.add_argument("--target", choices=("proxy", "bare", "both"), default="both")
    ap.add_argument("--policy", help="policy file for the proxy")
    ap.add_argument("--keep", type=Path, help="keep callgrind.out.* here (for callgrind_annotate)")
    ap.add_argument("--api", choices=("chat", "responses", "messages"), default="chat", help="the step's API")
    ap.add_argument("--stream", action="store_true", help="streamed steps (wrk reads the whole event stream)")
    ap.add_argument("--max-tokens", type=int, help="output tokens per step (default: bench_overhead.MAX_TOKENS)")
    args = ap.parse_args(argv)
    if not (shutil.which("valgrind") and shutil.which("wrk")):
        print("needs valgrind and wrk (apt-get install valgrind wrk)", file=sys.stderr)
        return 2
    targets = ("proxy", "bare") if args.target == "both" else (args.target,)
    rows = {}
    for t in targets:
        keep = args.keep / t if args.keep else None
        rows[t] = measure(
            t,
            args.seconds,
            args.connections,
            keep,
            args.policy,
            args.idle_seconds,
            args.api,
            args.stream,
            args.max_tokens,
        )
        m = rows[t]
        print(
            f"{t:6s} {m['per_request'] / 1e6:.3f} M instructions/request, {m['marginal_per_request'] / 1e6:.3f} M "
            f"net of the idle background ({m['idle_instructions_per_s'] / 1e6:.1f} M/s) ({m['requests']:.0f} "
            f"requests, {m['non2xx']:.0f} non-2xx)"
        )
    if len(rows) == 2:
        p, b = rows["proxy"], rows["bare"]
        print(
            f"proxy/bare instructions per request: {p['per_request'] / b['per_request']:.2f} "
            f"(net of the idle background: {p['marginal_per_request'] / b['marginal_per_request']:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
