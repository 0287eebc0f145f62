#!/usr/bin/env bash
# Fashion-MNIST, the networks of issue #5: teacher conv(32)-conv(64)-fc(128) and student
# conv(8)-conv(16)-fc(32), batch 128, EPOCHS epochs, THREADS threads. Frugal (`frugal distill`:
# AdamW, warm-up + cosine) and PyTorch (its plain recipe: Adam 1e-3, constant; bench/cnn_torch.py)
# train the teacher once (seed 0) and the student on labels, distilled (T = 4, α = 0.7) and
# distilled with attention transfer (T = 1, α = 0.5, β = 1000 decaying) for seeds 0..SEEDS-1,
# on the same IDX files; then Frugal prunes the teacher to 90 % (global
# magnitude) and recovers it by distillation from its unpruned self. One table: test accuracy and
# training samples/s (teacher forward included when distilling) side by side, with ratios.
#   bench/distill-cnn.sh [EPOCHS] [SEEDS] [THREADS]      (default 3 3 2; ~18 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${1:-3}"; SEEDS="${2:-3}"; THREADS="${3:-2}"; export RAYON_NUM_THREADS="$THREADS"
scripts/fetch-assets.sh fashion-mnist >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
W="$CACHE/bench-distill"; rm -rf "$W"; mkdir -p "$W"
run() { # name json-out args...
  local name="$1" out="$2"; shift 2
  "$F" distill --data fashion-mnist --epochs "$EPOCHS" --json "$@" >"$out"
  python3 - "$name" "$out" >>"$W/frugal.jsonl" <<'PYEOF'
import json, sys
name, path = sys.argv[1:3]; r = json.load(open(path))
sps = sum(e["samples_per_second"] for e in r["epochs"]) / len(r["epochs"])
print(json.dumps({"run": name.split(":")[0], "seed": r["opts"]["seed"],
                  "accuracy_pct": r["eval"]["accuracy_pct"], "samples_per_second": sps}))
PYEOF
}
run teacher "$W/teacher.json" --arch teacher --out "$W/teacher.safetensors"
for ((s = 0; s < SEEDS; s++)); do
  run student-labels "$W/labels-$s.json" --seed "$s" --out "$W/labels-$s.safetensors"
  run student-distilled "$W/distilled-$s.json" --seed "$s" --teacher "$W/teacher.safetensors" \
    --out "$W/distilled-$s.safetensors"
  run student-attention "$W/attention-$s.json" --seed "$s" --teacher "$W/teacher.safetensors" \
    --temperature 1 --alpha 0.5 --attention-weight 1000 --attention-decay \
    --out "$W/attention-$s.safetensors"
done
"$F" prune "$W/teacher.safetensors" "$W/teacher-90.safetensors" --method magnitude --sparsity 0.9 \
  --data fashion-mnist --recover-epochs "$EPOCHS" --json >"$W/prune90.json"
"$F" prune "$W/teacher.safetensors" "$W/teacher-90-norecover.safetensors" --method magnitude \
  --sparsity 0.9 --data fashion-mnist --recover-epochs 0 --json >"$W/prune90-none.json"

VENV="$CACHE/venv-st"
if [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" bench/cnn_torch.py "$CACHE/fashion-mnist" "$THREADS" "$EPOCHS" "$SEEDS" >"$W/torch.jsonl"
  TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  echo "(no torch venv at $VENV: run bench/make-minilm-golden.sh once for the PyTorch rows)" >&2
  : >"$W/torch.jsonl"; TORCH_VERSION=none
fi
python3 - "$W" "$EPOCHS" "$THREADS" "$TORCH_VERSION" <<'PYEOF'
import json, statistics as st, sys
w, epochs, threads, tv = sys.argv[1:5]
load = lambda p: [json.loads(l) for l in open(p) if l.strip()]
fr, pt = load(f"{w}/frugal.jsonl"), load(f"{w}/torch.jsonl")
def agg(rows, run):
    r = [x for x in rows if x["run"] == run]
    if not r:
        return None
    a = [x["accuracy_pct"] for x in r]
    return st.mean(a), (st.stdev(a) if len(a) > 1 else 0.0), st.mean(x["samples_per_second"] for x in r), len(r)
print(f"Fashion-MNIST, {epochs} epochs, batch 128, {threads} threads; PyTorch {tv}")
print(f"{'run':20} {'Frugal acc %':>16} {'PyTorch acc %':>16} {'Frugal smp/s':>13} {'PyTorch smp/s':>14} {'speed ratio':>11}")
res = {}
for run in ("teacher", "student-labels", "student-distilled", "student-attention"):
    f, p = agg(fr, run), agg(pt, run)
    res[run] = (f, p)
    fa = f"{f[0]:.2f} ± {f[1]:.2f} (n={f[3]})"
    pa = f"{p[0]:.2f} ± {p[1]:.2f} (n={p[3]})" if p else "-"
    ratio = f"{f[2] / p[2]:.2f}x" if p else "-"
    print(f"{run:20} {fa:>16} {pa:>16} {f[2]:13.0f} {(p[2] if p else 0):14.0f} {ratio:>11}")
for kind in ("distilled", "attention"):
    for i, name in enumerate(("Frugal", "PyTorch")):
        f, p = res[f"student-{kind}"][i], res["student-labels"][i]
        if f and p:
            print(f"{name}: {kind} − labels = {f[0] - p[0]:+.2f} points (mean over seeds); "
                  f"teacher − {kind} = {res['teacher'][i][0] - f[0]:.2f} points")
tp = [x for x in pt if x["run"] == "teacher"]
if tp:
    print(f"PyTorch teacher inference: {tp[0]['images_per_second']:.0f} images/s at batch 256")
te = json.load(open(f"{w}/teacher.json"))["eval"]
print(f"Frugal teacher inference: {te.get('images_per_second', float('nan')):.0f} images/s at batch 256")
for tag, path in (("no recovery", "prune90-none.json"), (f"{epochs} epochs distillation recovery", "prune90.json")):
    r = json.load(open(f"{w}/{path}"))
    print(f"teacher pruned to {100 * r['prune']['sparsity']:.1f} % (global magnitude), {tag}: "
          f"{r['eval']['accuracy_pct']:.2f} % (unpruned {r['input_eval']['accuracy_pct']:.2f} %)")
PYEOF
