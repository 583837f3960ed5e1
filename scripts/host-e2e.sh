#!/usr/bin/env bash
# The demo's drops against the real Functions host: `func start` (Azure Functions Core Tools 4) on this code, with
# Azurite and the F&O emulator, INBOUND_BLOB_SOURCE=LogsAndContainerScan, outcome rows checked in Table Storage.
# Not part of scripts/test.sh: it needs Core Tools and network access (the host downloads its extension bundle).
# Everything but `func start` lives in local/host_e2e.py; tests/e2e/test_host_e2e_scenario.py runs the same steps
# with the local runner as the host. Extra arguments go to `python -m local.host_e2e run` (--keep, --timeout ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v func >/dev/null 2>&1; then
  echo "host-e2e: Azure Functions Core Tools ('func') is not on PATH, so the real host cannot run here." >&2
  echo "  Install it (npm install -g azure-functions-core-tools@4) and run this again. The same steps against" >&2
  echo "  the local runner: .venv/bin/python -m pytest tests/e2e/test_host_e2e_scenario.py" >&2
  exit 2
fi
version=$(func --version)
case "$version" in
  4.*) ;;
  *) echo "host-e2e: Core Tools 4.x is needed, found '$version'" >&2; exit 2 ;;
esac
echo "[host-e2e] Azure Functions Core Tools $version"
bash scripts/setup.sh
exec .venv/bin/python -m local.host_e2e run --host-cmd "func start --port {port}" "$@"
