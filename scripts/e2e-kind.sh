#!/usr/bin/env bash
# The real end-to-end run on Kubernetes: kind cluster + KubeRay 1.7.0 + the kit's image,
# the tuning job through Ray Job Submission (port-forwarded, token from the operator's
# Secret), a scaling study at 1 and 2 workers, then everything down.
# Needs docker, kind, kubectl, helm and ~8 GiB for Docker. Not run in CI here (no
# Kubernetes can start on those machines). Usage: make e2e-kind
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
STATE=${STATE:-.rayscale-e2e-kind}
OUT=${OUT:-results/e2e-kind}
TINY=(--data "synthetic:rows=4000,features=10,noise=1.0,seed=0" --num-samples 4 --max-rounds 60)

for t in docker kind kubectl helm; do
  command -v "$t" >/dev/null || { echo "e2e-kind: $t is not installed" >&2; exit 2; }
done

down() { "$BIN/rayscale" cluster down --state-dir "$STATE" || true; }
trap down EXIT

# up: kind cluster (if missing), CRDs server-side, operator via Helm, image built and loaded.
"$BIN/rayscale" cluster up --provider kind --workers 1 --state-dir "$STATE"
"$BIN/rayscale" cluster status --state-dir "$STATE"
mkdir -p "$OUT"
"$BIN/rayscale" job submit --state-dir "$STATE" --save "$OUT/job.json" -- "${TINY[@]}"
# The study scales the same RayCluster (patching its worker group) between points.
"$BIN/rayscale" scaling --provider kind --workers 1,2 --baselines none --state-dir "$STATE" \
  --out "$OUT/scaling" -- "${TINY[@]}"
echo "e2e-kind: passed; results in $OUT"
