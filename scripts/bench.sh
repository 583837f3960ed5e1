#!/usr/bin/env bash
# Benchmarks: each writes its figures (ratios against a baseline measured in the same run) to
# bench/results/<area>.md; bench/RESULTS.md gathers them. About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH=.
if [[ "${1:-}" == reliability ]]; then
  # The fault matrix and the soak (issue #14): counts, not timings; writes bench/RELIABILITY.md.
  #   bash scripts/bench.sh reliability           full: matrix at scale 1, soak of 2,000 drops + 2,000 messages
  #   bash scripts/bench.sh reliability --quick   matrix at scale 0.5, soak of 100 + 100
  if [[ "${2:-}" == --quick ]]; then matrix=(--scale 0.5); soak=(--drops 100 --messages 100 --wave 25)
  else matrix=(); soak=(); fi
  rc=0
  .venv/bin/python -m bench.reliability "${matrix[@]}" || rc=1
  .venv/bin/python -m bench.soak "${soak[@]}" || rc=1
  exit $rc
fi
benches=(
  bench.emulator_status_rps       # emulator: status calls/s on one core vs a bare HTTPS server
  bench.fno_client                # F&O client: streamed transfers and per-call overhead
  bench.runner_overhead           # local runner: overhead per activity call and per replay
  bench.package_csv_throughput    # raw CSV → package vs zip -6; 1 GiB conversion memory
  bench.inbound_memory_1gb        # staging + uploading a 1 GB package: peak memory vs read-it-all
  bench.inbound_fifty_packages    # 50 packages at once: elapsed vs sum of durations, status calls
  bench.events                    # pushed completion (F&O business event) vs polling: delay and status calls
  bench.outbound_drain            # draining 100 messages vs a naive loop, F&O-like latency; 1 GiB message memory
  bench.operators_index           # operators: file history and a day's failures, index vs full-table scan
  bench.cold_start                # import function_app vs a bare DFApp: CPU, wall time, memory
  bench.preflight                 # pre-flight of a 1 GiB raw CSV vs building its packages; memory
)
for b in "${benches[@]}"; do
  echo "== $b"
  .venv/bin/python -m "$b"
done
.venv/bin/python -m bench.gather
