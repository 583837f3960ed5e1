#!/usr/bin/env bash
# Benchmarks: each writes its figures (ratios against a baseline measured in the same run) to
# bench/results/<area>.md; bench/RESULTS.md gathers them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for b in bench/*_*.py; do
  [ -f "$b" ] || continue
  echo "== $b"
  PYTHONPATH=. .venv/bin/python "$b" "$@"
done
.venv/bin/python bench/gather.py
