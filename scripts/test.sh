#!/usr/bin/env bash
# Install the project with its test tools and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[dev]'
python -m pytest -q "$@"
