#!/usr/bin/env bash
# Frugal's kernels for Q4_1, Q5_0 and Q5_1 (crates/frugal-models/src/qmatmul.rs) against
# candle 0.11's (scalar for these types; `FRUGAL_CANDLE_QMATMUL=1` selects them), in one build
# and one run: `frugal measure`'s decode workload on SmolLM2 as shipped (Q4_1) and requantized
# to Q5_0 and Q5_1 (`frugal quantize --type`), ROUNDS interleaved rounds each, THREADS threads.
# Energy is what `frugal measure` reports (RAPL where readable, else its labelled estimate).
#   [SKIP_MEASURE=1] bench/qmatmul.sh [ROUNDS] [THREADS]   (default 3 2; ~5 min; SKIP_MEASURE=1
#   prints the table of the last run again)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; THREADS="${2:-2}"
scripts/fetch-assets.sh smollm2 >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
W="$CACHE/bench-qmatmul"; mkdir -p "$W"
Q41="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
for T in Q5_0 Q5_1; do
  [ -s "$W/$T.gguf" ] || "$F" quantize "$Q41" "$W/$T.gguf" --type "$T" --no-eval >/dev/null
done
export RAYON_NUM_THREADS="$THREADS"
[ -n "${SKIP_MEASURE:-}" ] || rm -f "$W"/m-*.json
for ((r = 0; r < ROUNDS; r++)); do
  [ -n "${SKIP_MEASURE:-}" ] && break
  for T in Q4_1 Q5_0 Q5_1; do
    M="$W/$T.gguf"; [ "$T" = Q4_1 ] && M="$Q41"
    for K in candle frugal; do
      FRUGAL_CANDLE_QMATMUL=$([ "$K" = candle ] && echo 1 || echo 0) "$F" measure "$M" \
        --queries 4 --repeats 2 --warmup 1 --tokens 16 --json >"$W/m-$T-$K-$r.json"
    done
  done
done
python3 - "$W" "$ROUNDS" <<'PYEOF'
import json, statistics as st, sys
w, rounds = sys.argv[1], int(sys.argv[2])
def get(t, k):
    rs = [json.load(open(f"{w}/m-{t}-{k}-{r}.json")) for r in range(rounds)]
    return rs
print(f"SmolLM2 decode, frugal measure --queries 4 --repeats 2 --warmup 1 --tokens 16, {rounds} interleaved rounds")
print(f"{'type':6} {'kernels':8} {'tokens/s':>9} {'J/token':>8}  provenance")
for t in ("Q4_1", "Q5_0", "Q5_1"):
    row = {}
    for k in ("candle", "frugal"):
        rs = get(t, k)
        tps = st.mean(r["queries_per_second"]["mean"] * r["units_per_query"] for r in rs)
        jpt = st.mean(r["joules_per_unit"]["mean"] for r in rs)
        row[k] = (tps, jpt)
        src = rs[0]["energy"]["sources"][0]
        print(f"{t:6} {k:8} {tps:9.2f} {jpt:8.3f}  {src['provenance']['kind']} ({src['source']})")
    print(f"{t:6} ratio    {row['frugal'][0] / row['candle'][0]:8.2f}x {row['candle'][1] / row['frugal'][1]:7.2f}x less energy")
PYEOF
