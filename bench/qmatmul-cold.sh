#!/usr/bin/env bash
# One-row quantized products with the weight streamed from memory (a decoded token's case:
# copies of the weight spanning 2 GiB, above the last-level cache), in one run: Frugal's
# kernels (weights read in place, as `frugal measure` serves them), the same with their
# prefetching off (FRUGAL_PREFETCH=0), and candle 0.11's (FRUGAL_CANDLE_QMATMUL=1), each a
# separate process, ROUNDS interleaved rounds, the best round's median kept per setting.
# bench/qmatmul-kernels.sh times the same products with the weight cache-resident.
#   bench/qmatmul-cold.sh [ROUNDS] [SHAPE-FILTER] [TYPES] [THREADS]
#   (default 3, the 7B shapes, "Q4_0,Q8_0,IQ4_NL,IQ4_XS,Q4_K,Q6_K", 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; ONLY="${2:-7B}"; TYPES="${3:-Q4_0,Q8_0,IQ4_NL,IQ4_XS,Q4_K,Q6_K}"
export RAYON_NUM_THREADS="${4:-2}"
cargo build --release -q -p frugal-models --example qmatvec_cold
X=target/release/examples/qmatvec_cold
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
for ((r = 0; r < ROUNDS; r++)); do
  "$X" "$ONLY" "$TYPES" >>"$W/frugal"
  FRUGAL_PREFETCH=0 "$X" "$ONLY" "$TYPES" >>"$W/noprefetch"
  FRUGAL_CANDLE_QMATMUL=1 "$X" "$ONLY" "$TYPES" >>"$W/candle"
done
python3 - "$W" "$ROUNDS" "$RAYON_NUM_THREADS" <<'PYEOF'
import math, sys
w, rounds, threads = sys.argv[1], sys.argv[2], sys.argv[3]
def best(name):
    b = {}
    for line in open(f"{w}/{name}"):
        shape, ty, s, nbytes = line.rstrip("\n").split("\t")
        s = float(s)
        k = (shape, ty)
        b[k] = (min(b[k][0], s) if k in b and not math.isnan(s) else s, int(nbytes))
    return b
f, n, c = best("frugal"), best("noprefetch"), best("candle")
print(f"one input row, weight streamed from memory (copies spanning 2 GiB); {threads} threads, best of {rounds} interleaved rounds")
print(f"{'shape [n × k]':24} {'type':6} {'candle ms':>9} {'no-pf ms':>9} {'frugal ms':>9} {'GB/s':>6} {'× candle':>9} {'× no-pf':>8}")
for k, (s, nbytes) in f.items():
    cs, ns = c[k][0], n[k][0]
    print(f"{k[0]:24} {k[1]:6} {1e3*cs:9.3f} {1e3*ns:9.3f} {1e3*s:9.3f} {nbytes/s/1e9:6.1f} {cs/s:8.2f}x {ns/s:7.2f}x")
PYEOF
