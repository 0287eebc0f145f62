#!/usr/bin/env bash
# `frugal tune` with and without its cache of the reference's logits, in one run: the same F32
# SmolLM2, calibration Brown ca01-ca10, search text cj13-cj40, held-out text cj01-cj12, CHUNKS
# chunks of 512 tokens each, --no-energy. The two outputs must be byte-identical and every
# candidate's figures equal; the table gives each run's time and peak memory (/usr/bin/time)
# and the ratio.
#   bench/tune-reference-cache.sh [LIMIT] [CHUNKS] [THREADS]   (default 0.03 8 2; ~8 min)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${1:-0.03}"; CHUNKS="${2:-8}"; THREADS="${3:-2}"
scripts/fetch-assets.sh smollm2 brown >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
W="$CACHE/bench-tune-cache"; mkdir -p "$W"
F32="$W/f32.gguf"; CAL="$W/calib.txt"; HELD="$W/held.txt"; SEARCH="$W/search.txt"
[ -s "$F32" ] || "$F" dequantize "$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$F32" >/dev/null
"$F" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$F" brown-text --files cj01-cj12 -o "$HELD" 2>/dev/null
"$F" brown-text --files cj13-cj40 -o "$SEARCH" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
for MIB in 0 2048; do
  rm -f "$W/tune-$MIB".*
  /usr/bin/time -f "%e %M" -o "$W/time-$MIB" "$F" tune "$F32" -o "$W/tune-$MIB.gguf" \
    --max-kld "$LIMIT" --calib "$CAL" --eval "$SEARCH" --heldout "$HELD" --eval-chunks "$CHUNKS" \
    --no-energy --reference-cache-mib "$MIB" --json >"$W/tune-$MIB.json"
done
python3 - "$W" "$LIMIT" "$CHUNKS" <<'PYEOF'
import hashlib, json, sys
w, limit, chunks = sys.argv[1:4]
runs = {}
for mib in ("0", "2048"):
    r = json.load(open(f"{w}/tune-{mib}.json"))
    secs, kib = open(f"{w}/time-{mib}").read().split()
    digest = hashlib.sha256(open(f"{w}/tune-{mib}.gguf", "rb").read()).hexdigest()
    runs[mib] = (r, float(secs), int(kib) / 1024, digest)
(a, ta, ma, da), (b, tb, mb, db) = runs["0"], runs["2048"]
figures = lambda r: [(c.get("search"), c.get("heldout")) for c in r["candidates"]]
print(f"frugal tune --max-kld {limit}, {chunks} chunks per text, {len(a['candidates'])} candidates")
print(f"{'reference cache':>16} {'total s':>8} {'search s':>9} {'peak MiB':>9} {'chunks reused':>14}  output sha256")
for name, (r, t, m, d) in (("off", runs["0"]), ("2048 MiB", runs["2048"])):
    print(f"{name:>16} {t:8.1f} {r['seconds']['search']:9.1f} {m:9.0f} {r['reference_chunks_reused']:14d}  {d[:16]}")
print(f"time ratio (off / cached): {ta / tb:.2f}x; outputs identical: {da == db}; "
      f"every candidate's figures identical: {figures(a) == figures(b)}")
if da != db or figures(a) != figures(b):
    sys.exit("error: the cache changed the result")
PYEOF
