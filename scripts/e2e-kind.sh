#!/usr/bin/env bash
# The real end-to-end run on Kubernetes: kind cluster + KubeRay 1.7.0 + the kit's image,
# the tuning job through Ray Job Submission (port-forwarded, token from the operator's
# Secret) with its results on the claim every pod mounts, a scaling study at 1 and 2
# workers (scale-down through the autoscaler), then everything down.
# Needs docker, kind, kubectl, helm, about 8 GiB and 5 CPUs for Docker (`up` refuses
# less, with the figure). Not run in CI here (no Kubernetes can start on those machines).
# Usage: make e2e-kind
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

# up: kind cluster (if missing; its volumes mounted from results/kind-rayscale on this
# machine), the operator's chart pulled once (its CRDs server-side, the operator via Helm),
# image built and loaded (docker save + image-archive where `kind load docker-image`
# fails), the results claim on kind's `standard` class, the RayCluster pinned at 1 worker.
"$BIN/rayscale" cluster up --provider kind --workers 1 --state-dir "$STATE" --timeout 900
"$BIN/rayscale" cluster status --state-dir "$STATE"
mkdir -p "$OUT"
# Checkpoints on (every 15 rounds), written by uid 1000 to the claim: the first thing a
# hostPath results volume broke.
"$BIN/rayscale" job submit --state-dir "$STATE" --save "$OUT/job.json" -- "${TINY[@]}" --checkpoint-every 15 --checkpoint-min-s 0
name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$OUT/job.json")
cluster=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$STATE/cluster.json")
kubectl --context kind-rayscale exec "$(kubectl --context kind-rayscale get pod -l "ray.io/cluster=$cluster,ray.io/node-type=head" -o name)" \
  -c ray-head -- test -s "/home/ray/rayscale_results/$name/rayscale-result.json"
echo "e2e-kind: rayscale-result.json is on the claim"
# The study scales the same RayCluster (patching its worker group) between points.
"$BIN/rayscale" scaling --provider kind --workers 1,2 --baselines none --state-dir "$STATE" \
  --out "$OUT/scaling" -- "${TINY[@]}"
# down deletes the kind cluster it created; the claim's files stay on this machine.
trap - EXIT
down
ls results/kind-rayscale/*_rayscale-results/"$name"/rayscale-result.json
echo "e2e-kind: passed; results in $OUT, the claim's files in results/kind-rayscale"
