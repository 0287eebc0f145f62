#!/usr/bin/env bash
# Structured pruning of SmolLM2 and recovery by distillation (issue #5): at least 20 % of every
# block's MLP neurons removed (1,536 → 1,216, a physically smaller GGUF) with magnitude, Wanda-style
# and least-squares-refitted (sparsegpt) scores, calibrated on Brown ca01–ca10; then the Wanda-style
# model distilled from the F32 model (teacher top-64 cached once, student MLP weights trained) on
# TOKENS tokens of Brown cj13–cj80 — other documents than the evaluation's. Every file judged by
# llama.cpp's own evaluator, `llama-perplexity --kl-divergence` against the F32 logits on Brown
# cj01–cj12 (ctx 512, CHUNKS chunks). "recovered" is the share of the PPL lost by dropping that
# the distillation wins back.
#   bench/prune-structured.sh [CHUNKS] [TOKENS] [LR] [THREADS] [EPOCHS]
#   (default 20 24576 2e-4 2 1; ~25 min, plus ~3 min per extra 10 k training tokens)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; TOKENS="${2:-24576}"; LR="${3:-2e-4}"; THREADS="${4:-2}"; EPOCHS="${5:-1}"; CTX=512
W="$CACHE/bench-structured"; mkdir -p "$W"
F32="$CACHE/bench-quality/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-cj01-cj12.txt"
TRAIN="$W/train-cj13-cj80.txt"
mkdir -p "$(dirname "$F32")"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
"$FRUGAL" brown-text --files cj13-cj80 -o "$TRAIN" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -f "$W"/mlp-*.gguf "$W"/kld-*.log
: >"$W/times.tsv"
for M in magnitude wanda sparsegpt; do
  /usr/bin/time -f "$M %e %M" -a -o "$W/times.tsv" "$FRUGAL" prune "$F32" "$W/mlp-$M.gguf" \
    --structure mlp-neurons --sparsity 0.2 --method "$M" --calib "$CAL" --calib-tokens 32768 \
    --no-eval --json >"$W/prune-$M.json" 2>"$W/prune-$M.err" || { echo "FAILED: $M" >&2; tail -3 "$W/prune-$M.err" >&2; exit 1; }
done
/usr/bin/time -f "wanda+kd %e %M" -a -o "$W/times.tsv" "$FRUGAL" distill --student "$W/mlp-wanda.gguf" \
  --teacher "$F32" --text "$TRAIN" --max-tokens "$TOKENS" --lr "$LR" --epochs "$EPOCHS" --out "$W/mlp-wanda+kd.gguf" \
  --no-eval --json >"$W/distill.json" 2>"$W/distill.err" || { echo "FAILED: distill" >&2; tail -3 "$W/distill.err" >&2; exit 1; }
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" >"$W/ppl-f32.log" 2>&1
for n in magnitude wanda sparsegpt wanda+kd; do
  "$BIN/llama-perplexity" -m "$W/mlp-$n.gguf" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX \
    --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld-$n.log" 2>&1
done
PY="$(scripts/setup-python.sh)"
"$PY" - "$W" <<'PYEOF'
import json, os, re, sys
W = sys.argv[1]
def grab(path, pat):
    m = re.search(pat, open(path).read()); return float(m.group(1)) if m else float("nan")
times = {}
for line in open(f"{W}/times.tsv"):
    n, s, kb = line.split(); times[n] = (float(s), int(kb) / 1024)
ppl0 = grab(f"{W}/ppl-f32.log", r"Final estimate: PPL = ([0-9.]+)")
d = json.load(open(f"{W}/distill.json"))
print(f"SmolLM2-135M F32 PPL {ppl0:.4f}; llama-perplexity --kl-divergence on Brown cj01-cj12; "
      f"calibration Brown ca01-ca10; distillation on {d['tokens']} tokens of Brown cj13-cj80, "
      f"{d['opts']['epochs']} epoch(s), lr {d['opts']['lr']}, alpha {d['opts']['alpha']}, top-{d['opts']['top_k']}")
print(f"{'model':14} {'n_ff':>5} {'params M':>9} {'MiB':>7} {'mean KLD':>9} {'PPL':>9} {'dPPL':>8} {'wall s':>7} {'RSS MiB':>8}")
res = {}
for n in ["magnitude", "wanda", "sparsegpt", "wanda+kd"]:
    src = "wanda" if n == "wanda+kd" else n
    rep = json.load(open(f"{W}/prune-{src}.json"))["prune"]
    kld = grab(f"{W}/kld-{n}.log", r"Mean\s+KLD:\s+([0-9.]+)")
    ppl = grab(f"{W}/kld-{n}.log", r"Mean PPL\(Q\)\s+:\s+([0-9.]+)")
    res[n] = ppl
    t = times[n]
    mib = os.path.getsize(f"{W}/mlp-{n}.gguf") / 2**20
    print(f"{n:14} {rep['n_ff_after']:5} {rep['parameters_after'] / 1e6:9.2f} {mib:7.1f} {kld:9.5f} {ppl:9.3f} {ppl - ppl0:8.3f} {t[0]:7.1f} {t[1]:8.0f}")
lost = res["wanda"] - ppl0
print(f"distillation recovered {(res['wanda'] - res['wanda+kd']) / lost * 100:.1f} % of the PPL lost by dropping "
      f"({res['wanda']:.3f} -> {res['wanda+kd']:.3f}; F32 {ppl0:.3f}); teacher cache {d['teacher_cache_bytes'] / 2**20:.1f} MiB "
      f"in {d['teacher_seconds']:.0f} s, training {d['train_seconds']:.0f} s ({d['tokens_per_second']:.0f} tokens/s)")
PYEOF
