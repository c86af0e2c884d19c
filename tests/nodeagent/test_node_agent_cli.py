"""`concurproxy node-agent` as a real process, with the real pynvml path of this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_the_feed_without_engine_or_driver_and_stops_on_sigterm() -> None:
    dead_engine = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concurproxy",
            "node-agent",
            "--engine-url",
            dead_engine,
            "--port",
            "0",
            "--scrape-interval-ms",
            "50",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (m := re.search(r"node agent: (\S+)/pressure", line := proc.stderr.readline())):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "node agent did not start"
        url = m.group(1)
        for _ in range(200):  # bounded: wait for the first scrape and the first NVML read
            with urllib.request.urlopen(url + "/pressure", timeout=5) as r:
                doc = json.load(r)
            if doc["engine"]["scrapes"] > 0 and doc["nvml"]["age_s"] is not None:
                break
            time.sleep(0.02)
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert doc["engine"]["ok"] is False and doc["engine"]["failures"] >= 1
    if doc["nvml"]["available"]:  # a GPU node
        assert doc["nvml"]["gpus"]
    else:  # this machine: no NVIDIA driver — said so, not crashed
        assert doc["nvml"]["error"].startswith("NVML unavailable:") and doc["nvml"]["gpus"] == []
    assert "concurproxy_node_engine_up 0.0" in metrics
