#!/usr/bin/env bash
# all-MiniLM-L6-v2 quantized to Frugal's int8 and int4 safetensors weights, evaluated against the
# F32 model on 2,000 Brown passages of 128 tokens (the first 4 windows of each of the 500 Brown
# documents): cosine of the embeddings (mean, min), leave-one-out 1-NN genre accuracy (same-document
# neighbours excluded), and the model's own encoding speed (items/s, THREADS threads).
# int4 with GPTQ calibrates on 512 other Brown passages (windows from the 9th of each document).
# PyTorch (F32 and dynamic int8) runs on the same items, same pooling, same protocol.
# The F32, int8 and PyTorch rows run REPS times (default 3), alternating, and a last table gives
# each variant's median items/s (the machine's speed drifts between runs).
#   bench/encoder-int.sh [PASSAGES] [THREADS]    (default 2000, 2; FAST=1 skips the int4 rows)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"; THREADS="${2:-2}"; export RAYON_NUM_THREADS="$THREADS"
scripts/fetch-assets.sh minilm brown >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; M="${FRUGAL_CACHE:-$HOME/.cache/frugal}/minilm"
W="${FRUGAL_CACHE:-$HOME/.cache/frugal}/bench-encoder"; rm -rf "$W"; mkdir -p "$W"
row() { # name dir
  "$F" eval "$2" --reference "$M" --passages "$N" --json >"$W/$1.json"
  python3 - "$1" "$W/$1.json" "$2" <<'PYEOF'
import json, os, sys
name, path, d = sys.argv[1:4]; r = json.load(open(path))
mib = os.path.getsize(os.path.join(d, "model.safetensors")) / 2**20
print(f"{name:16} {mib:8.2f} {r['cosine_mean']:10.6f} {r['cosine_min']:10.6f} {r['knn_accuracy_pct']:7.2f} {r['reference_knn_accuracy_pct']:7.2f} {r['items_per_second']:8.1f}")
PYEOF
}
echo "all-MiniLM-L6-v2, $N Brown passages of 128 tokens, $THREADS threads"
printf '%-16s %8s %10s %10s %7s %7s %8s\n' variant MiB "cos mean" "cos min" "1-NN %" "F32 %" "items/s"
"$F" quantize "$M" "$W/int8" --type int8 --no-eval >/dev/null
# The peer on exactly the same items: PyTorch F32 and dynamic int8 (torch venv of
# bench/make-minilm-golden.sh).
VENV="${FRUGAL_CACHE:-$HOME/.cache/frugal}/venv-st"
[ -x "$VENV/bin/python" ] && "$F" eval "$M" --passages "$N" --dump-items "$W/items.json" --json >/dev/null
for _ in $(seq "${REPS:-3}"); do
  row F32 "$M"
  row int8 "$W/int8"
  if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" bench/encoder_torch.py "$M" "$W/items.json" "$THREADS" 2>/dev/null
  else
    echo "(no torch venv at $VENV: run bench/make-minilm-golden.sh once for the PyTorch rows)" >&2
  fi
done | tee "$W/rows.txt"
echo "median over ${REPS:-3} runs:"
python3 - "$W/rows.txt" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 7 and f[-1].replace(".", "").isdigit():
        rows.setdefault(f[0], []).append((line.rstrip(), float(f[-1])))
for name, runs in rows.items():
    med = statistics.median(v for _, v in runs)
    print(f"{runs[-1][0][:-8]}{med:8.1f}")
f32 = statistics.median(v for _, v in rows.get("torch-int8-dyn", [("", float("nan"))]))
i8 = statistics.median(v for _, v in rows.get("int8", [("", float("nan"))]))
print(f"Frugal int8 / PyTorch dynamic int8 items/s: {i8 / f32:.2f}")
PYEOF
[ "${FAST:-0}" = 1 ] && exit 0
for g in 32 64 128; do
  "$F" quantize "$M" "$W/int4-g$g" --type "int4-g$g" --no-eval >/dev/null; row "int4-g$g" "$W/int4-g$g"
  "$F" quantize "$M" "$W/int4-g$g-gptq" --type "int4-g$g" --calib brown --calib-tokens 65536 --no-eval >/dev/null; row "int4-g$g-gptq" "$W/int4-g$g-gptq"
done
