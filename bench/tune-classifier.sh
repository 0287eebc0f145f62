#!/usr/bin/env bash
# Issue #8 for classifiers: `frugal tune` of the Fashion-MNIST teacher of issue #5 for an
# accuracy-drop limit of LIMITS points (judged on half of the test images, verified on the other
# half) against uniform int8 (`frugal quantize --type int8`) and PyTorch's post-training int8
# (static, fbgemm; dynamic) of the same weights (bench/cnn_torch_int8.py, the venv of
# bench/encoder-int.sh), all scored on the full test set in the same run. The teacher is the one
# bench/distill-cnn.sh trained (3 epochs, seed 0), else trained here the same way.
#   bench/tune-classifier.sh [LIMITS...]       (default 0.1 0.5 1.0; ~2 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMITS=("${@:-0.1 0.5 1.0}"); read -r -a LIMITS <<<"${LIMITS[*]}"
export RAYON_NUM_THREADS=2
scripts/fetch-assets.sh fashion-mnist >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
T="$CACHE/bench-distill/teacher.safetensors"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
if [ ! -f "$T" ]; then
  T="$W/teacher.safetensors"
  "$F" distill --data fashion-mnist --arch teacher --epochs 3 --out "$T" >/dev/null
fi
acc() { "$F" eval "$1" --data fashion-mnist --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy_pct"])'; }
echo "{\"model\": \"f32\", \"accuracy_pct\": $(acc "$T"), \"bytes\": $(stat -c %s "$T")}" >"$W/rows.jsonl"
"$F" quantize "$T" "$W/int8.safetensors" --type int8 >/dev/null
echo "{\"model\": \"frugal-int8\", \"accuracy_pct\": $(acc "$W/int8.safetensors"), \"bytes\": $(stat -c %s "$W/int8.safetensors")}" >>"$W/rows.jsonl"
for L in "${LIMITS[@]}"; do
  "$F" tune "$T" -o "$W/tuned-$L.safetensors" --data fashion-mnist --max-accuracy-drop-pt "$L" --json >"$W/tune-$L.json"
  python3 - "$L" "$W/tune-$L.json" "$(acc "$W/tuned-$L.safetensors")" >>"$W/rows.jsonl" <<'PYEOF'
import json, sys
l, path, full = sys.argv[1], sys.argv[2], float(sys.argv[3])
r = json.load(open(path)); c = r["candidates"][r["chosen"]]
print(json.dumps({"model": f"frugal-tune-{l}", "accuracy_pct": full, "bytes": r["output_bytes"],
  "heldout_drop_pt": r["accuracy_drop_pt"], "search_drop_pt": c["search"]["accuracy_drop_pt"],
  "plan": " ".join(f"{k.split('.')[0]}={v}" for k, v in c["plan"].items()), "seconds": r["seconds"]}))
PYEOF
done
VENV="$CACHE/venv-st"
if [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" bench/cnn_torch_int8.py "$T" "$CACHE/fashion-mnist" 2>/dev/null >>"$W/rows.jsonl"
else
  echo "(no $VENV: run bench/encoder-int.sh once to make it; PyTorch rows skipped)" >&2
fi
python3 - "$W/rows.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f32 = next(r for r in rows if r["model"] == "f32")
st = next((r for r in rows if r["model"] == "pytorch-static-int8"), None)
print("Fashion-MNIST teacher, full test set (10,000 images); tune limits judged on half, verified on the other half")
print(f"{'model':24} {'bytes':>9} {'of F32':>7} {'acc %':>7} {'drop pt':>8} {'held-out pt':>11} {'vs torch static':>15}  plan")
for r in rows:
    ratio = f"{r['bytes'] / st['bytes']:.3f}x" if st else "-"
    held = f"{r['heldout_drop_pt']:.2f}" if "heldout_drop_pt" in r else "-"
    print(f"{r['model']:24} {r['bytes']:>9} {100 * r['bytes'] / f32['bytes']:>6.1f}% {r['accuracy_pct']:>7.2f} "
          f"{f32['accuracy_pct'] - r['accuracy_pct']:>8.2f} {held:>11} {ratio:>15}  {r.get('plan', '')}")
PYEOF
