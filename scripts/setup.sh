#!/usr/bin/env bash
# Idempotent local setup: a .venv with the dev requirements, a .venv-checkov with checkov, and Azurite from npm in
# local/node_modules.
# Re-runs are cheap: each step is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  echo "Python 3.11 or newer is required" >&2; return 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt requirements-worker.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pipq() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
  pipq --upgrade pip
  pipq -r requirements-dev.txt
  # The real worker's loader and binding code (see requirements-worker.txt for why these flags).
  runtime=$(grep -E '^azure-functions-runtime==' requirements-worker.txt)
  protos=$(grep -E '^azure-functions-runtime-v1==' requirements-worker.txt)
  pipq --no-deps --ignore-requires-python "$runtime"
  rm -rf .venv/functions-worker-protos
  pipq --no-deps --ignore-requires-python --target .venv/functions-worker-protos "$protos"
  echo "$want" > "$stamp"
fi

# checkov (infra static checks) in a venv of its own: its pins would break the app's dependencies.
if [ ! -x .venv-checkov/bin/python ]; then
  "$(pick_python)" -m venv .venv-checkov
fi
cstamp=.venv-checkov/.requirements.sha
cwant=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
if [ ! -x .venv-checkov/bin/checkov ] || [ "$(cat "$cstamp" 2>/dev/null)" != "$cwant" ]; then
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
  echo "$cwant" > "$cstamp"
fi

command -v node >/dev/null 2>&1 || { echo "Node.js 20+ is required (for Azurite)" >&2; exit 1; }
nstamp=local/node_modules/.package.sha
nwant=$(sha256sum local/package.json | cut -d' ' -f1)
if [ ! -x local/node_modules/.bin/azurite ] || [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
  (cd local && npm install --no-audit --no-fund --silent)
  echo "$nwant" > "$nstamp"
fi

# The console's browser tests (tests/operators/test_console_browser.py) drive Debian's Chromium, never a
# browser downloaded by "playwright install". Installed once when missing and apt is there; skipped otherwise.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  as_root=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo"; else as_root="none"; fi
  fi
  if [ "$as_root" = none ]; then
    echo "note: /usr/bin/chromium is missing (apt-get install chromium as root); the console's browser tests will be skipped" >&2
  else
    { $as_root apt-get update -qq && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "could not install chromium: the console's browser tests will be skipped" >&2
  fi
fi
