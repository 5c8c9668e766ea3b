#!/usr/bin/env bash
# Regenerates the published comparison: runs each systems file here on ml-latest-small
# into runs/results/<name>/ (resuming what is already there), then copies the light
# files (report.md, plots, each system's summary.json and config.toml; not the per-user
# results) into benchmarks/results/<name>/.
#
#   bash benchmarks/results/publish.sh [llamarec c20 ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${RAGREC_DATA:-../shared/data/ml-latest-small}
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(llamarec c20)
for name in "${names[@]}"; do
  run=runs/results/$name
  OPENBLAS_NUM_THREADS=1 .venv/bin/ragrec eval --systems "benchmarks/results/$name.systems.toml" \
    --data "$data" --out "$run" --no-progress
  dest=benchmarks/results/$name
  rm -rf "$dest" && mkdir -p "$dest"
  cp "$run"/report.md "$run"/*.png "$dest"/
  for system in "$run"/*/; do
    mkdir -p "$dest/$(basename "$system")"
    cp "$system"/summary.json "$system"/config.toml "$dest/$(basename "$system")"/
  done
  # the report links run folders by their runs/ path: point them at the copies
  sed -i "s#($run/#(#g" "$dest/report.md"
done
