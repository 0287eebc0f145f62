#!/usr/bin/env bash
# Classifiers served as stored: F32 against int8 through integer products, on the embedded
# run's own models, side by side in one run.
#
#   bench/classifier-serving.sh [SEEDS]        # default "1 2 3" (seed 0 was used while building the kernels)
#
# For each seed: `frugal run --seed S` (timed), then `frugal measure` of each int8 model and
# its F32 source on the digits workload (QUERIES queries × REPEATS runs, one thread), and of
# the int8 model with --decoded-weights (the same weights in F32 products): energy per query
# with its 95 % interval, queries per second, and the int8/F32 ratio with whether the saving's
# interval excludes zero. Energy is what the machine offers (RAPL, else the labelled estimate).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SEEDS=${1:-"1 2 3"}
QUERIES=${QUERIES:-5000}
REPEATS=${REPEATS:-7}
cargo build --release -q -p frugal-cli
FRUGAL="$PWD/target/release/frugal"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for seed in $SEEDS; do
  t0=$(date +%s.%N)
  "$FRUGAL" run --out "$T/run-$seed" --seed "$seed" > "$T/run-$seed.txt"
  t1=$(date +%s.%N)
  printf '\nseed %s: frugal run took %.1f s\n' "$seed" "$(echo "$t1 - $t0" | bc)"
  grep -E '^  (policy|verdict)' "$T/run-$seed.txt" | cut -c1-160
  for pair in "teacher teacher-int8" "student-pruned student-int8"; do
    set -- $pair
    for spec in "$1:stored" "$2:decoded" "$2:stored"; do
      m=${spec%%:*}; how=${spec##*:}
      extra=(); [[ $how == decoded ]] && extra=(--decoded-weights)
      "$FRUGAL" measure "$T/run-$seed/$m.safetensors" --data digits --queries "$QUERIES" \
        --repeats "$REPEATS" --warmup 200 "${extra[@]}" --json > "$T/$seed-$m-$how.json"
    done
    python3 - "$T" "$seed" "$1" "$2" <<'PY'
import json, sys, math
t, seed, src, q = sys.argv[1:]
def load(m, how):
    return json.load(open(f"{t}/{seed}-{m}-{how}.json"))
rows = [(src, "f32 (source)", load(src, "stored")), (q, "int8 decoded, f32 products", load(q, "decoded")),
        (q, "int8, integer products", load(q, "stored"))]
base = rows[0][2]["joules_per_unit"]
print(f"  {'model':16} {'products':28} {'uJ/query [95 % CI]':>30} {'queries/s':>10} {'vs source':>10}  saving significant")
for m, how, r in rows:
    e = r["joules_per_unit"]
    lo, hi = e["ci95"]
    h = math.hypot((base["ci95"][1]-base["ci95"][0])/2, (hi-lo)/2)
    d = base["mean"] - e["mean"]
    sig = "-" if r is rows[0][2] else ("yes" if d - h > 0 else ("no (costs more)" if d + h < 0 else "no"))
    print(f"  {m:16} {how:28} {1e6*e['mean']:10.2f} [{1e6*lo:7.2f}, {1e6*hi:7.2f}] {r['queries_per_second']['mean']:10.0f} {e['mean']/base['mean']:9.2f}x  {sig}")
prov = {s['provenance']['kind'] for s in rows[0][2]['energy']['sources']}
print(f"  energy: {', '.join(sorted(prov))}; {r['served']}")
PY
  done
done
