"""`concurproxy worker …` command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

import pytest

from concurproxy.cli import main


def test_profiles_lists_capacity(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "profiles"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "1024 KV tokens" in out and "qwen3-32b-h100" in out


def test_thrash_curve_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "thrash-curve", "--profile", "tiny", "--agents", "2,8", "--duration", "10"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("agents"))
    rows = [line.split() for line in lines[header + 2 : header + 4]]
    assert [r[0] for r in rows] == ["2", "8"]
    assert int(rows[1][3]) > 0  # preemptions at 8 agents


def test_thrash_curve_rejects_contexts_longer_than_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "worker",
                "thrash-curve",
                "--profile",
                "tiny",
                "--agents",
                "1",
                "--steps",
                "50",
                "--duration",
                "1",
            ]
        )
        == 2
    )
    assert "exceeds max_model_len" in capsys.readouterr().err


def test_unknown_action_and_bad_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "bogus"]) == 2
    assert main(["worker", "thrash-curve", "--profile", "nope"]) == 2
    assert main(["worker", "--", "--model", "x"]) == 2  # -- only with --engine vllm
    err = capsys.readouterr().err
    assert "unknown worker action" in err and "unknown profile" in err


def test_scheduler_flags_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--profile", "tiny", "--port", "0", "--long-prefill-token-threshold", "-1"]) == 2
    assert "long_prefill_token_threshold" in capsys.readouterr().err


def test_engine_vllm_calls_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(vllm_args: list[str], host: str, port: int, node_agent_port: int | None) -> int:
        calls.append((vllm_args, host, port, node_agent_port))
        return 3

    import concurproxy.engines.vllm_launcher as launcher

    monkeypatch.setattr(launcher, "run_vllm", fake)
    rc = main(
        [
            "worker",
            "--engine",
            "vllm",
            "--port",
            "9001",
            "--node-agent-port",
            "9400",
            "--",
            "--model",
            "m",
            "--enforce-eager",
        ]
    )
    assert rc == 3
    assert calls == [(["--model", "m", "--enforce-eager"], "127.0.0.1", 9001, 9400)]


def test_engine_vllm_without_launcher_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "concurproxy.engines.vllm_launcher", None)
    assert main(["worker", "--engine", "vllm", "--", "--model", "m"]) == 2
    assert "vllm_launcher" in capsys.readouterr().err


def test_serve_replicas_in_a_real_process() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concurproxy",
            "worker",
            "--profile",
            "tiny",
            "--port",
            "0",
            "--replicas",
            "2",
            "--time-scale",
            "20",
            "--max-num-batched-tokens",
            "512",
            "--long-prefill-token-threshold",
            "64",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "64 blocks x 16 tokens" in banner, banner + (proc.stderr.read() if proc.poll() is not None else "")
        assert "max_num_batched_tokens 512, long_prefill_token_threshold 64" in banner
        urls = [proc.stdout.readline().split()[-1] for _ in range(2)]
        assert len(set(urls)) == 2
        for u in urls:
            with urllib.request.urlopen(u + "/health", timeout=10) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0
