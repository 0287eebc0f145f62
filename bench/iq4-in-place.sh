#!/usr/bin/env bash
# IQ4_NL and IQ4_XS weights served as stored (issue #28, item 4): Frugal's 8-bit kernels read
# them in place, against the same weights decoded to f32 when loading (what Frugal did before),
# with llama.cpp's Q4_0 of the same model beside them, in one run:
#   - SmolLM2 F32 (`frugal dequantize` of the Q4_1 GGUF), quantized by `llama-quantize
#     --imatrix` (the committed tests/golden/smollm2.imatrix.gguf) to IQ4_NL, IQ4_XS and Q4_0;
#   - `frugal measure FILE` (the language-model workload: prompts, TOKENS generated each) with
#     the stored types' kernels and with --decoded-weights: energy per unit with its 95 %
#     interval, queries per second, peak RSS (/usr/bin/time);
#   - the products alone (`bench/qmatmul-kernels.sh`'s example at SmolLM2's and 7B's shapes):
#     Frugal's IQ4 kernels against the F32 GEMM on the decoded weight.
#   [QUERIES=100] bench/iq4-in-place.sh [REPEATS] [THREADS]      (default 5 repeats, 2 threads)
source "$(dirname "$0")/common.sh"
REPEATS="${1:-5}"; THREADS="${2:-2}"
W="$CACHE/bench-iq4-in-place"; mkdir -p "$W"
F32="$W/f32.gguf"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
export RAYON_NUM_THREADS="$THREADS"
for T in IQ4_NL IQ4_XS Q4_0; do
  "$BIN/llama-quantize" --imatrix tests/golden/smollm2.imatrix.gguf "$F32" "$W/$T.gguf" "$T" "$THREADS" >"$W/$T.quantize.log" 2>&1
  for how in stored decoded; do
    extra=(); [[ $how == decoded ]] && extra=(--decoded-weights)
    /usr/bin/time -f "%M" -o "$W/$T-$how.rss" "$FRUGAL" measure "$W/$T.gguf" --repeats "$REPEATS" --queries "${QUERIES:-100}" \
      "${extra[@]}" --json >"$W/$T-$how.json" 2>"$W/$T-$how.log"
  done
done
PY="$(scripts/setup-python.sh)"
"$PY" - "$W" <<'PYEOF'
import json, math, os, sys
W = sys.argv[1]
print(f"SmolLM2-135M, frugal measure (the language-model workload), {os.environ['RAYON_NUM_THREADS']} threads")
print(f"{'file':8} {'MiB':>6} {'weights':9} {'mJ/unit [95 % CI]':>28} {'queries/s':>9} {'RSS MiB':>8}  in place vs decoded")
for t in ["IQ4_NL", "IQ4_XS", "Q4_0"]:
    mib = os.path.getsize(f"{W}/{t}.gguf") / 2**20
    r = {h: json.load(open(f"{W}/{t}-{h}.json")) for h in ["stored", "decoded"]}
    for h in ["stored", "decoded"]:
        e = r[h]["joules_per_unit"]; lo, hi = e["ci95"]
        rss = int(open(f"{W}/{t}-{h}.rss").read().split()[-1]) / 1024
        tps = r[h]["queries_per_second"]["mean"]
        note = ""
        if h == "stored":
            d = r["decoded"]["joules_per_unit"]
            half = math.hypot((hi - lo) / 2, (d["ci95"][1] - d["ci95"][0]) / 2)
            saving = d["mean"] - e["mean"]
            sig = "significant" if saving - half > 0 else ("costs more" if saving + half < 0 else "not significant")
            note = f"energy {e['mean'] / d['mean']:.2f}x ({sig})"
        print(f"{t:8} {mib:6.2f} {('in place' if h == 'stored' else 'decoded'):9} {1e3*e['mean']:9.2f} [{1e3*lo:7.2f}, {1e3*hi:7.2f}] {tps:9.1f} {rss:8.0f}  {note}")
w = r["stored"]
prov = {s['provenance']['kind'] for s in w['energy']['sources']} if 'energy' in w else set()
print(f"unit: {w.get('unit')}; query: {w.get('query')}; energy: {', '.join(sorted(prov)) or 'see the JSON'}")
PYEOF
echo
RAYON_NUM_THREADS="$THREADS" cargo run --release -q -p frugal-models --example qmatmul -- 3 "" IQ4_NL,IQ4_XS,Q4_0 "1,512"
