"""A stand-in for `python -m vllm.entrypoints.openai.api_server` (stdlib only, starts in ~50 ms).

Serves /health and a vLLM-shaped /metrics on --host/--port. Behaviour from the environment:
FAKE_ENGINE_MODE   ok (default) | exit-early | ignore-term | never-healthy | port-taken-once (the first start
                   exits as vLLM's engine core does when its ZeroMQ port was taken; FAKE_ENGINE_MARKER required)
FAKE_ENGINE_DELAY  seconds during which /health answers 503 (model loading)
FAKE_ENGINE_MARKER file that receives one line per event: argv at start, the signal on stop
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("FAKE_ENGINE_MODE", "ok")
DELAY = float(os.environ.get("FAKE_ENGINE_DELAY", "0"))
MARKER = os.environ.get("FAKE_ENGINE_MARKER")
STARTED = time.monotonic()
METRICS = (
    '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="fake"} 2.0\n'
    '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0",model_name="fake"} 0.0\n'
    '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0",model_name="fake"} 0.25\n'
    'vllm:cache_config_info{block_size="128",engine="0",num_gpu_blocks="48"} 1.0\n'
)


def mark(line: str) -> None:
    if MARKER:
        with open(MARKER, "a") as f:
            f.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            ready = MODE != "never-healthy" and time.monotonic() - STARTED >= DELAY
            self.send_response(200 if ready else 503)
            self.end_headers()
        elif self.path == "/metrics":
            body = METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def starts(marker: str) -> int:
    with open(marker) as f:
        return sum(line.startswith("argv") for line in f)


def main() -> int:
    args = sys.argv[1:]
    mark("argv " + " ".join(args))
    print("INFO fake engine: loading model", flush=True)
    if MODE == "port-taken-once" and MARKER and starts(MARKER) == 1:
        print("zmq.error.ZMQError: Address already in use (addr='tcp://*:34597')", flush=True)
        print("RuntimeError: Engine core initialization failed. See root cause above.", flush=True)
        return 1
    if MODE == "exit-early":
        print("ERROR fake engine: torch.OutOfMemoryError: CUDA out of memory", flush=True)
        return 3
    host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
    server = ThreadingHTTPServer((host, port), Handler)
    stop = threading.Event()

    def on_signal(sig: int, frame: object) -> None:
        mark(signal.Signals(sig).name)
        if MODE != "ignore-term":
            stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"INFO fake engine: serving on {host}:{port}", flush=True)
    while not stop.wait(0.05):
        pass
    server.shutdown()
    print("INFO fake engine: shut down cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
