"""CPU cost of pressure polling (proxy side) and of the node agent's scraping.

    python -m benchmarks.pressure_poll

A fake engine serves a realistic vLLM body (see ``benchmarks.metrics_parse``) on loopback; we
measure the process CPU time (not wall time) spent per poll, which is what the proxy pays.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from aiohttp import web

from benchmarks.metrics_parse import realistic_vllm_body
from concurproxy.nodeagent.agent import NodeAgent, NodeAgentConfig
from concurproxy.nodeagent.gpu import DisabledProbe
from concurproxy.signals.poller import PressurePoller


async def run() -> None:
    body = realistic_vllm_body(1)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as s:
        for n in (1, 16):
            poller = PressurePoller(s, {f"r{i}": url + "/metrics" for i in range(n)}, timeout_s=5)
            await poller.poll_once()
            rounds = 100
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                await poller.poll_once()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            print(
                f"poller, {n:2d} replicas: {cpu / rounds / n * 1e6:7.0f} µs CPU per replica-poll "
                f"(both ends, one process), round of {n} in {wall / rounds * 1e3:.2f} ms"
            )
        agent = NodeAgent(NodeAgentConfig(engine_url=url), DisabledProbe())
        rounds = 200
        c0 = time.process_time()
        for _ in range(rounds):
            await agent.scrape_once(s)
        cpu = (time.process_time() - c0) / rounds
        print(f"node agent scrape: {cpu * 1e6:.0f} µs CPU each (both ends) → {cpu / 0.1 * 100:.1f}% of a core at 10 Hz")
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    prog = "python -m benchmarks.pressure_poll"
    argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0]).parse_args(argv)
    asyncio.run(run())


if __name__ == "__main__":
    main()
