#!/usr/bin/env bash
# The main job, end to end on the embedded stack: Azurite + F&O emulator + local Functions runner.
# Sample files are dropped into the inbound container, imported one at a time, and the outcomes shown.
# Prints the operators' console URL (with its key); --keep keeps the stack up until Ctrl-C to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m local.demo "$@"
