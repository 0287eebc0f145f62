#!/usr/bin/env bash
# `frugal tune` against every llama.cpp type on SmolLM2, judged by the peer's own evaluator, in
# one run (issue #8). Same F32 input; calibration Brown ca01-ca10 (llama-imatrix and frugal
# --calib); frugal's search text Brown cj13-cj40 and held-out text Brown cj01-cj12; every file
# (llama.cpp's, with and without the importance matrix, and each tune output) judged with
# `llama-perplexity --kl-divergence` on cj01-cj12, ctx 512, CHUNKS chunks, against the F32 logits.
# For each KLD limit: the smallest llama.cpp file that meets it, and the tune output's size and
# KLD by the same judge.
#   bench/tune-vs-llama.sh [CHUNKS] [THREADS] [LIMITS]   (default 20 2 "0.01 0.03 0.1"; ~40 min)
#   MODEL=gemma3 bench/tune-vs-llama.sh 8 2 0.03   (Gemma 3 270M: its F32 decoding by
#   llama-quantize --allow-requantize, as bench/make-golden-gemma3.sh makes it; its 262,144-token
#   vocabulary makes the judge's F32 logits about 0.27 GB per chunk)
# JUDGE=ck01-ck29 judges on Brown files that neither tune nor llama-imatrix saw (default: the
# held-out cj01-cj12, which tune uses to verify its choice); REJUDGE=1 keeps the files of the last
# run and only judges them again.
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; LIMITS="${3:-0.01 0.03 0.1}"; CTX=512
Q="$CACHE/bench-quality"; mkdir -p "$Q"
case "${MODEL:-smollm2}" in
  smollm2) W="$CACHE/bench-tune"; F32="$Q/f32.gguf"
           [ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1 ;;
  gemma3)  W="$CACHE/bench-tune-gemma3"; F32="$CACHE/golden-work/gemma3-f32.llama-quantize.gguf"
           G3="$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf"
           mkdir -p "$CACHE/golden-work"
           [ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$G3" "$F32" F32 >/dev/null 2>&1 ;;
  *) echo "MODEL: smollm2 or gemma3" >&2; exit 2 ;;
esac
mkdir -p "$W"
CAL="$W/calib-ca01-ca10.txt"; HELD="$W/eval-cj01-cj12.txt"; SEARCH="$W/search-cj13-cj40.txt"
JUDGE="${JUDGE:-cj01-cj12}"; JT="$W/judge-$JUDGE.txt"
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$HELD" 2>/dev/null
"$FRUGAL" brown-text --files cj13-cj40 -o "$SEARCH" 2>/dev/null
"$FRUGAL" brown-text --files "$JUDGE" -o "$JT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -f "$W"/kld-*.log
if [ "${REJUDGE:-0}" != 1 ]; then
rm -f "$W"/llama-*.gguf "$W"/tune-*.gguf "$W"/*.json
: >"$W/times.tsv"

# llama.cpp: the importance matrix once, then every type with and without it (types that need
# an importance matrix only with it).
"$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c $CTX -t "$THREADS" -o "$W/imatrix.gguf" >"$W/imatrix.log" 2>&1
for T in Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0 IQ4_NL IQ4_XS IQ3_S IQ3_M IQ3_XXS IQ2_M; do
  case "$T" in IQ3_XXS|IQ2_M|IQ3_S|IQ3_M) ;; *)
    "$BIN/llama-quantize" "$F32" "$W/llama-$T.gguf" "$T" "$THREADS" >"$W/q-$T.log" 2>&1 || echo "llama-quantize $T failed" >&2 ;;
  esac
  "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-$T-im.gguf" "$T" "$THREADS" >"$W/q-$T-im.log" 2>&1 || echo "llama-quantize $T (imatrix) failed" >&2
done

# Frugal: one tune per limit.
for L in $LIMITS; do
  /usr/bin/time -f "%e %M" -o "$W/time.tmp" "$FRUGAL" tune "$F32" -o "$W/tune-$L.gguf" --max-kld "$L" \
    --calib "$CAL" --eval "$SEARCH" --heldout "$HELD" --eval-chunks 8 --no-energy --json >"$W/tune-$L.json" 2>"$W/tune-$L.err" \
    || { echo "frugal tune $L failed:" >&2; tail -3 "$W/tune-$L.err" >&2; continue; }
  echo "tune-$L $(cat "$W/time.tmp")" >>"$W/times.tsv"
done
fi

# The peer's judge on every file, against the F32 logits on the judge's text.
BASE="$W/f32-$JUDGE-$CHUNKS.kld"
[ -f "$BASE" ] || "$BIN/llama-perplexity" -m "$F32" -f "$JT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$BASE" >"$W/ppl-f32.log" 2>&1
for f in "$W"/llama-*.gguf "$W"/tune-*.gguf; do
  n="$(basename "$f" .gguf)"
  "$BIN/llama-perplexity" -m "$f" -f "$JT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$BASE" --kl-divergence >"$W/kld-$n.log" 2>&1 || echo "judge $n failed" >&2
done

python3 - "$W" "$LIMITS" "$JUDGE" <<'PYEOF'
import glob, json, os, re, sys
W, limits, judge = sys.argv[1], [float(x) for x in sys.argv[2].split()], sys.argv[3]
def kld(name):
    m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", open(f"{W}/kld-{name}.log").read())
    return float(m.group(1)) if m else float("nan")
times = {l.split()[0]: (float(l.split()[1]), int(l.split()[2]) / 1024) for l in open(f"{W}/times.tsv")}
llama = {}
for f in sorted(glob.glob(f"{W}/llama-*.gguf")):
    n = os.path.basename(f)[:-5]
    llama[n] = (os.path.getsize(f), kld(n))
print(f"llama.cpp files, judged by llama-perplexity --kl-divergence on Brown {judge}:")
for n, (b, k) in sorted(llama.items(), key=lambda x: x[1][0]):
    print(f"  {n:18} {b / 2**20:8.2f} MiB  KLD {k:.5f}")
print()
print(f"{'limit':>6} {'smallest llama.cpp file meeting it':36} {'MiB':>8} {'KLD':>8}   {'frugal tune':>8} {'KLD':>8} {'tune own held-out':>17} {'size ratio':>10} {'tune s':>7} {'RSS MiB':>8}")
for L in limits:
    ok = [(b, n, k) for n, (b, k) in llama.items() if k <= L]
    best = min(ok) if ok else None
    name = f"tune-{L:g}"
    if not os.path.exists(f"{W}/{name}.gguf"):
        print(f"{L:6g} {'-' if not best else best[1]:36} (tune failed)")
        continue
    tb, tk = os.path.getsize(f"{W}/{name}.gguf"), kld(name)
    own = json.load(open(f"{W}/{name}.json"))["quality"]["kld"]["mean"]
    t = times.get(name, (float("nan"), float("nan")))
    if best:
        print(f"{L:6g} {best[1]:36} {best[0] / 2**20:8.2f} {best[2]:8.5f}   {tb / 2**20:8.2f} {tk:8.5f} {own:17.5f} {tb / best[0]:10.4f} {t[0]:7.1f} {t[1]:8.0f}")
    else:
        print(f"{L:6g} {'(none meets it)':36} {'':8} {'':8}   {tb / 2**20:8.2f} {tk:8.5f} {own:17.5f} {'':>10} {t[0]:7.1f} {t[1]:8.0f}")
PYEOF
