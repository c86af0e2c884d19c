"""The README's first command runs end to end (short): worker + proxy + load, two controllers."""

import subprocess
import sys


def test_demo_command_prints_the_comparison():
    out = subprocess.run(
        [sys.executable, "-m", "concurproxy", "demo", "--duration", "3", "--agents", "4"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "tasks", "done"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:3]}
    assert set(rows) == {"none", "aimd"}
    assert all(int(r[1]) > 0 and int(r[2]) == 0 for r in rows.values())  # tasks done, none failed
    assert "aimd vs none" in out.stdout
