#!/usr/bin/env bash
# Install vLLM's CPU build if needed, then run the demo (python -m scripts.vllm.demo --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
eval "$(bash scripts/vllm/install.sh | grep '^CONCURPROXY_VLLM_PYTHON=' | sed 's/^/export /')"
exec python -m scripts.vllm.demo "$@"
