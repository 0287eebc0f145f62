#!/usr/bin/env bash
# Pruning SmolLM2's decoder weights with magnitude, Wanda and SparseGPT, at 50 % unstructured and
# 2:4, judged by llama.cpp's own evaluator: `llama-perplexity --kl-divergence` against the F32
# logits on Brown cj01–cj12 (ctx 512, CHUNKS chunks); calibration on Brown ca01–ca10 (all of it,
# ~26 k tokens). Prints one table: method, pattern, sparsity, mean KLD, PPL, ΔPPL and ΔPPL as a
# fraction of magnitude's at the same pattern, wall time and peak RSS of the pruning run.
#   bench/prune-llm.sh [CHUNKS] [THREADS]    (default 20 chunks, 2 threads)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512
W="$CACHE/bench-prune"; mkdir -p "$W"
F32="$CACHE/bench-quality/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-cj01-cj12.txt"
mkdir -p "$(dirname "$F32")"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -f "$W"/pruned-*.gguf "$W"/kld-*.log
: >"$W/times.tsv"
for P in unstructured 2:4; do
  for M in magnitude wanda sparsegpt; do
    name="$M-${P/:/of}"
    /usr/bin/time -f "$name %e %M" -a -o "$W/times.tsv" "$FRUGAL" prune "$F32" "$W/pruned-$name.gguf" \
      --method "$M" --sparsity 0.5 --pattern "$P" --calib "$CAL" --calib-tokens 32768 --no-eval --json \
      >"$W/prune-$name.json" 2>"$W/prune-$name.err" || { echo "FAILED: $name" >&2; tail -3 "$W/prune-$name.err" >&2; exit 1; }
  done
done
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" >"$W/ppl-f32.log" 2>&1
for f in "$W"/pruned-*.gguf; do
  n="$(basename "$f" .gguf)"; n="${n#pruned-}"
  "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld-$n.log" 2>&1
done
PY="$(scripts/setup-python.sh)"
"$PY" - "$W" <<'PYEOF'
import json, re, sys
W = sys.argv[1]
def grab(path, pat):
    m = re.search(pat, open(path).read()); return float(m.group(1)) if m else float("nan")
times = {}
for line in open(f"{W}/times.tsv"):
    n, s, kb = line.split(); times[n] = (float(s), int(kb) / 1024)
ppl0 = grab(f"{W}/ppl-f32.log", r"Final estimate: PPL = ([0-9.]+)")
print(f"SmolLM2-135M F32 PPL {ppl0:.4f}; llama-perplexity --kl-divergence on Brown cj01-cj12; calibration Brown ca01-ca10")
print(f"{'method':10} {'pattern':13} {'sparsity':>8} {'mean KLD':>9} {'PPL':>9} {'dPPL':>9} {'dPPL/mag':>9} {'wall s':>7} {'RSS MiB':>8}")
for p in ["unstructured", "2of4"]:
    mag = None
    for m in ["magnitude", "wanda", "sparsegpt"]:
        n = f"{m}-{p}"
        rep = json.load(open(f"{W}/prune-{n}.json"))
        kld = grab(f"{W}/kld-{n}.log", r"Mean\s+KLD:\s+([0-9.]+)")
        ppl = grab(f"{W}/kld-{n}.log", r"Mean PPL\(Q\)\s+:\s+([0-9.]+)")
        d = ppl - ppl0
        if m == "magnitude": mag = d
        t = times[n]
        print(f"{m:10} {p.replace('of', ':'):13} {rep['prune']['sparsity']:8.4f} {kld:9.5f} {ppl:9.3f} {d:9.3f} {d / mag:9.3f} {t[0]:7.1f} {t[1]:8.0f}")
PYEOF
