"""Real processes on free loopback ports for fault tests: bundled workers, stub upstreams, `concurproxy serve`.

Every process started here is killed by `Procs.close` (use it in ``finally``
or as a context manager); nothing is left running after a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType

from benchmarks.soak import _free_port
from benchmarks.soak import open_fds as open_fds  # re-exported for the hardening tests
from benchmarks.soak import rss_bytes as rss_bytes

# One definition of the /proc probes: the soak benchmark's (benchmarks/ is on the tests' path).
free_port = _free_port


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING", **(env or {})},
        )
        self.procs.append(p)
        return p

    def worker(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        p = self.spawn(["concurproxy", "worker", "--profile", "tiny", "--port", str(port), *extra])
        wait_http(f"http://127.0.0.1:{port}/v1/models", p)
        return p

    def stub(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        p = self.spawn(["concurproxy.testing.stub_upstream", "--port", str(port), *extra])
        wait_http(f"http://127.0.0.1:{port}/health", p)
        return p

    def serve(self, config: str, port: int) -> subprocess.Popen[bytes]:
        p = self.spawn(["concurproxy", "serve", "--config", config, "--port", str(port)])
        wait_http(f"http://127.0.0.1:{port}/ready", p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)  # a SIGSTOPped process must be able to die
                    p.kill()
                except ProcessLookupError:
                    pass
            p.wait(10)
        self.procs.clear()


def wait_http(url: str, proc: subprocess.Popen[bytes], status: int = 200, limit_s: float = 30.0) -> None:
    """Poll until ``url`` answers ``status`` (bounded; the process must stay alive)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == status:
                    return
        except urllib.error.HTTPError as e:
            if e.code == status:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}")
