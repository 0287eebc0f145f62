#!/usr/bin/env bash
# What the energy meter costs (issue #6: under 1 % of the workload's CPU time), two ways, in one run:
# 1. `frugal measure -- CMD`: the meter's own CPU time (this process: spawning, waiting, sampling
#    the counters every second) against the command's (its children's), as the report gives
#    them (`energy.meter_cpu_seconds`, `energy.workload_cpu_seconds`);
# 2. the same command's CPU time (user + sys, GNU time's figures) run bare and run under the
#    meter, alternated REPS times: the ratio of the medians.
# CMD: Frugal training the Fashion-MNIST teacher for one epoch on THREADS threads (~30 s).
#   bench/meter-overhead.sh [REPS] [THREADS]     (default 3 2; ~4 min)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-3}"; THREADS="${2:-2}"; export RAYON_NUM_THREADS="$THREADS"
scripts/fetch-assets.sh fashion-mnist >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
CMD=("$F" distill --data fashion-mnist --arch teacher --epochs 1 --out "$W/t.safetensors")
cpu() { # CPU seconds (user + sys) of "$@", from GNU time's -f output
  /usr/bin/time -f "%U %S" -o "$W/time" "$@" >/dev/null 2>&1
  awk '{print $1 + $2}' "$W/time"
}
for ((r = 0; r < REPS; r++)); do
  cpu "${CMD[@]}" >>"$W/bare"
  /usr/bin/time -f "%U %S" -o "$W/time" "$F" measure --json -- "${CMD[@]}" >"$W/m-$r.json" 2>/dev/null
  awk '{print $1 + $2}' "$W/time" >>"$W/metered"
done
python3 - "$W" "$REPS" <<'PYEOF'
import json, statistics, sys
w, reps = sys.argv[1], int(sys.argv[2])
rows = [json.load(open(f"{w}/m-{r}.json"))["energy"] for r in range(reps)]
print("| run | workload CPU s | meter CPU s | meter / workload |")
print("|---|---:|---:|---:|")
for r, e in enumerate(rows):
    print(f"| {r} | {e['workload_cpu_seconds']:.2f} | {e['meter_cpu_seconds']:.4f} | {100 * e['meter_cpu_seconds'] / e['workload_cpu_seconds']:.3f} % |")
bare = [float(x) for x in open(f"{w}/bare")]
metered = [float(x) for x in open(f"{w}/metered")]
mb, mm = statistics.median(bare), statistics.median(metered)
print()
print("| CPU s (user + sys), median of %d | bare | under `frugal measure --` | ratio |" % reps)
print("|---|---:|---:|---:|")
print(f"| teacher, 1 epoch | {mb:.2f} | {mm:.2f} | {mm / mb:.4f} |")
print(f"(bare runs: {', '.join(f'{x:.2f}' for x in bare)}; metered: {', '.join(f'{x:.2f}' for x in metered)})")
PYEOF
