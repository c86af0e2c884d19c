"""Virtual-time benchmark: a heavy and a light tenant share a fixed-capacity server, fifo vs vtc.

    python -m benchmarks.fairness_vtime [--seconds 600] [--slots 32] [--seed 1]

Model (pure simulation, no sleeps, seeded): the server runs at most ``slots``
steps at once (the admission window); a step occupies a slot for
``prompt / prefill_tps + output * tpot`` seconds. Waiting steps are ordered by
the fairness policy under test; each finished step is charged its usage.

* heavy tenant: ``heavy_agents`` closed-loop agents with no think time and
  growing contexts (4k → 16k prompt tokens, +600 per step, 128-384 output);
* light tenant: ``light_agents`` agents issuing short control steps
  (300 prompt, 32 output) every ``light_think_s`` seconds.

Prints each tenant's share of weighted tokens and its p50/p99 step latency
(queue wait + service), and the light tenant's unloaded latency for reference.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from concurproxy.control.fairness.base import FairnessParams
from concurproxy.control.fairness.registry import default_registry
from concurproxy.control.types import StepInfo


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seconds: float = 600.0
    warmup_s: float = 30.0
    slots: int = 32
    prefill_tps: float = 20_000.0
    tpot_s: float = 0.015
    heavy_agents: int = 48
    light_agents: int = 4
    light_think_s: float = 1.0
    seed: int = 1


@dataclass(slots=True)
class TenantStats:
    latencies: list[float] = field(default_factory=list)
    tokens: float = 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p * len(xs)))]


def simulate(policy: str, cfg: BenchConfig, *, heavy: bool = True) -> dict[str, TenantStats]:
    params = FairnessParams(input_weight=1.0, output_weight=2.0)
    q = default_registry(plugins=False).queue(policy, params)
    rng = random.Random(cfg.seed)
    stats = {"heavy": TenantStats(), "light": TenantStats()}
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, agent)
    seq = 0
    ctx: dict[int, int] = {}
    running = 0
    started: dict[int, tuple[StepInfo, float, int]] = {}  # agent -> (step, arrival, output)

    def at(t: float, kind: str, agent: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, agent))

    n_heavy = cfg.heavy_agents if heavy else 0
    for a in range(n_heavy):
        ctx[a] = 4000 + rng.randrange(0, 12000, 600)
        at(rng.uniform(0, 1), "arrive", a)
    for a in range(n_heavy, n_heavy + cfg.light_agents):
        at(rng.uniform(0, cfg.light_think_s), "arrive", a)

    def dispatch(now: float) -> None:
        nonlocal running
        while running < cfg.slots:
            agent = q.pop(now)
            if agent is None:
                return
            step, _, out = started[agent]
            running += 1
            at(now + step.est_prompt_tokens / cfg.prefill_tps + out * cfg.tpot_s, "done", agent)

    while events:
        now, _, kind, agent = heapq.heappop(events)
        if now > cfg.seconds:
            break
        is_heavy = agent < n_heavy
        if kind == "arrive":
            tenant = "heavy" if is_heavy else "light"
            prompt = ctx[agent] if is_heavy else 300
            out = rng.randint(128, 384) if is_heavy else 32
            step = StepInfo(tenant, "executor" if is_heavy else "monitor", f"a{agent}", "t", est_prompt_tokens=prompt)
            started[agent] = (step, now, out)
            q.push(agent, step, now)
        else:
            running -= 1
            step, arrived, out = started.pop(agent)
            q.charge(step, step.est_prompt_tokens, out, now)
            if now >= cfg.warmup_s:
                s = stats[step.tenant]
                s.latencies.append(now - arrived)
                s.tokens += params.cost(step.est_prompt_tokens, out)
            if is_heavy:
                ctx[agent] = 4000 if ctx[agent] >= 16000 else ctx[agent] + 600
                at(now, "arrive", agent)
            else:
                at(now + cfg.light_think_s, "arrive", agent)
        dispatch(now)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--heavy-agents", type=int, default=48)
    ap.add_argument("--light-agents", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policies", default="fifo,vtc")
    a = ap.parse_args(argv)
    cfg = BenchConfig(
        seconds=a.seconds,
        slots=a.slots,
        heavy_agents=a.heavy_agents,
        light_agents=a.light_agents,
        seed=a.seed,
    )
    base = simulate("fifo", cfg, heavy=False)["light"]
    print(f"light tenant unloaded: p50 {base.pct(0.5):.3f} s  p99 {base.pct(0.99):.3f} s")
    cols = ("token share", 12), ("steps", 8), ("p50 s", 9), ("p99 s", 9), ("p99/unloaded", 14)
    print(f"{'policy':<8}{'tenant':<8}" + "".join(f"{c:>{w}}" for c, w in cols))
    for policy in a.policies.split(","):
        stats = simulate(policy, cfg)
        total = sum(s.tokens for s in stats.values()) or 1.0
        for tenant, s in stats.items():
            print(
                f"{policy:<8}{tenant:<8}{s.tokens / total:>12.3f}{len(s.latencies):>8}"
                f"{s.pct(0.5):>9.3f}{s.pct(0.99):>9.3f}{s.pct(0.99) / base.pct(0.99):>14.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
