"""The virtual-time benchmark runs fast and shows vtc protecting the light tenant."""

from __future__ import annotations

from benchmarks.fairness_vtime import BenchConfig, main, simulate


def test_vtc_protects_light_tenant_latency_and_keeps_heavy_busy() -> None:
    cfg = BenchConfig(seconds=200.0, slots=32, heavy_agents=48, light_agents=4, seed=3)
    unloaded = simulate("fifo", cfg, heavy=False)["light"].pct(0.99)
    fifo = simulate("fifo", cfg)
    vtc = simulate("vtc", cfg)
    assert fifo["light"].pct(0.99) > 5 * unloaded  # stuck behind long prefills
    assert vtc["light"].pct(0.99) < 3 * unloaded
    assert len(vtc["light"].latencies) > 2 * len(fifo["light"].latencies)  # its agents get their steps in
    heavy_share = vtc["heavy"].tokens / (vtc["heavy"].tokens + vtc["light"].tokens)
    assert heavy_share > 0.95  # the heavy tenant keeps the rest of the capacity


def test_cli_prints_a_table(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--seconds", "60"]) == 0
    out = capsys.readouterr().out
    assert "unloaded" in out and "vtc     light" in out and "fifo    heavy" in out
