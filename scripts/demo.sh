#!/usr/bin/env bash
# Install concurproxy and run the main job on its embedded default: bundled simulated worker
# (a 1024-token KV cache that thrashes) + the proxy + a short seeded multi-agent load, once with
# admission off and once with AIMD, printed side by side. Extra arguments go to `concurproxy demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
exec python -m concurproxy demo "$@"
