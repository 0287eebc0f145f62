#!/usr/bin/env bash
# Structured removal of other units than MLP neurons, and sparse storage (issue #5):
# 1. SmolLM2 F32: a third of every key/value group's query heads removed (9 → 6 heads) with
#    magnitude, Wanda-style (head output energy) and sparsegpt (the same choice + least-squares
#    attn_output refit) scores, and 10 % / 20 % of the decoder blocks removed by block influence;
#    calibrated on Brown ca01–ca10 (CALIB tokens), every file judged by llama.cpp's own
#    `llama-perplexity --kl-divergence` against the F32 logits on Brown cj01–cj12 (CHUNKS × 512) —
#    which also shows llama.cpp loads the smaller files.
# 2. Fashion-MNIST teacher (bench/distill-cnn.sh's, trained here if missing): half of every conv
#    block's channels removed, without and with 3 epochs of distillation recovery; and 90 %
#    global magnitude sparsity with recovery stored sparse (values + bitmask) and dense.
#   bench/prune-units.sh [CHUNKS] [CALIB] [THREADS]    (default 20 8192 2; ~15 min)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; CALIB="${2:-8192}"; THREADS="${3:-2}"; CTX=512
export RAYON_NUM_THREADS="$THREADS"
scripts/fetch-assets.sh fashion-mnist >&2
W="$CACHE/bench-units"; mkdir -p "$W"; rm -f "$W"/*.gguf "$W"/*.json "$W"/*.log "$W"/*.safetensors
F32="$CACHE/bench-quality/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-cj01-cj12.txt"
mkdir -p "$(dirname "$F32")"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
: >"$W/times.tsv"
lm() { # name structure method fraction
  /usr/bin/time -f "$1 %e %M" -a -o "$W/times.tsv" "$FRUGAL" prune "$F32" "$W/$1.gguf" --structure "$2" \
    --method "$3" --sparsity "$4" --calib "$CAL" --calib-tokens "$CALIB" --no-eval --json >"$W/$1.json"
}
lm heads-magnitude attn-heads magnitude 0.34
lm heads-wanda attn-heads wanda 0.34
lm heads-sparsegpt attn-heads sparsegpt 0.34
lm layers-10 layers wanda 0.1
lm layers-20 layers wanda 0.2
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX \
  --kl-divergence-base "$W/f32.kld" >"$W/ppl-f32.log" 2>&1
for n in heads-magnitude heads-wanda heads-sparsegpt layers-10 layers-20; do
  "$BIN/llama-perplexity" -m "$W/$n.gguf" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX \
    --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld-$n.log" 2>&1 || { echo "llama.cpp refused $n" >&2; tail -3 "$W/kld-$n.log" >&2; exit 1; }
done

T="$CACHE/bench-distill/teacher.safetensors"
[ -f "$T" ] || "$FRUGAL" distill --data fashion-mnist --arch teacher --epochs 3 --out "$T" >/dev/null
cnn() { # name args...
  local n="$1"; shift
  "$FRUGAL" prune "$T" "$W/$n.safetensors" --method magnitude --data fashion-mnist --json "$@" >"$W/$n.json"
}
cnn channels50-none --structure channels --sparsity 0.5 --recover-epochs 0
cnn channels50 --structure channels --sparsity 0.5 --recover-epochs 3
cnn sparse90 --sparsity 0.9 --recover-epochs 3 --storage sparse
cnn dense90 --sparsity 0.9 --recover-epochs 3 --storage dense

PY="$(scripts/setup-python.sh)"
"$PY" - "$W" "$CALIB" <<'PYEOF'
import json, os, re, sys
W, calib = sys.argv[1], sys.argv[2]
def grab(path, pat):
    m = re.search(pat, open(path).read()); return float(m.group(1)) if m else float("nan")
times = {l.split()[0]: float(l.split()[1]) for l in open(f"{W}/times.tsv")}
ppl0 = grab(f"{W}/ppl-f32.log", r"Final estimate: PPL = ([0-9.]+)")
print(f"SmolLM2-135M F32 PPL {ppl0:.4f}; llama-perplexity --kl-divergence on Brown cj01-cj12; calibration {calib} tokens of Brown ca01-ca10")
print(f"{'model':17} {'shape':>28} {'params M':>9} {'MiB':>6} {'mean KLD':>9} {'PPL':>9} {'dPPL':>8} {'wall s':>7}")
for n in ["heads-magnitude", "heads-wanda", "heads-sparsegpt", "layers-10", "layers-20"]:
    p = json.load(open(f"{W}/{n}.json"))["prune"]
    shape = (f"heads {p['n_head_before']} -> {p['n_head_after']}" if p["unit"] == "attn-heads"
             else f"blocks {p['n_layer_before']} -> {p['n_layer_after']} {p['removed']}")
    kld = grab(f"{W}/kld-{n}.log", r"Mean\s+KLD:\s+([0-9.]+)")
    ppl = grab(f"{W}/kld-{n}.log", r"Mean PPL\(Q\)\s+:\s+([0-9.]+)")
    mib = os.path.getsize(f"{W}/{n}.gguf") / 2**20
    print(f"{n:17} {shape:>28} {p['parameters_after'] / 1e6:9.2f} {mib:6.1f} {kld:9.5f} {ppl:9.3f} {ppl - ppl0:8.3f} {times[n]:7.1f}")
print()
print("Fashion-MNIST teacher (conv 32-64, fc 128), global magnitude / channel removal, 3 epochs of distillation recovery")
print(f"{'model':17} {'params':>8} {'storage':>8} {'bytes':>9} {'acc %':>7} {'input acc %':>11}")
for n in ["channels50-none", "channels50", "sparse90", "dense90"]:
    r = json.load(open(f"{W}/{n}.json"))
    params = (r["channels"]["parameters_after"] if r.get("channels")
              else f"{100 * (1 - r['prune']['sparsity']):.0f}% nz")
    print(f"{n:17} {params:>8} {r['storage']:>8} {r['output_bytes']:9d} {r['eval']['accuracy_pct']:7.2f} {r['input_eval']['accuracy_pct']:11.2f}")
PYEOF
