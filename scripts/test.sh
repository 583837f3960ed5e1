#!/usr/bin/env bash
# The whole test suite: lint, format check, bandit, then pytest (which starts its own Azurite and emulator;
# tests/infra/test_checkov.py runs checkov from .venv-checkov).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
# Security lint of the app and the local tools, medium severity and up (scope and exclusions: pyproject.toml).
.venv/bin/python -m bandit -c pyproject.toml -q -ll -r function_app.py triggers orchestrators activities dmf local
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": that is a failure for us, never a pass.
exit $rc
