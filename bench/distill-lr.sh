#!/usr/bin/env bash
# Fashion-MNIST, issue #5's student conv(8)-conv(16)-fc(32): learning from labels against
# distillation (T = 1, α = 1 and T = 4, α = 0.7; "T A b=B" in KDS: decoupled with NCKD weight B,
# "T A at=B": attention transfer of weight B, "T A atd=B" the same weight falling to 0) over
# a grid of peak learning rates, seeds
# 0..SEEDS-1, EPOCHS epochs each (batch 128, AdamW, warm-up + cosine), from one teacher
# conv(32)-conv(64)-fc(128) trained first (seed 0, TEACHER_EPOCHS epochs at TEACHER_LR) — or,
# with TEACHERS=N, from the ensemble of N such teachers (seeds 0..N-1, the mean of their logits).
# Two runs at a time, one thread each (training is deterministic for a seed whatever the
# thread count). A run whose JSON is already in the work folder is not run again, so an
# interrupted sweep continues and a wider grid reuses the narrower one's runs. One table:
# mean ± standard deviation of test accuracy over seeds per learning rate, and the
# distilled − labels differences.
#   [KDS="T A;T A"] [TEACHERS=N] bench/distill-lr.sh [EPOCHS] [SEEDS] [LRS] [TEACHER_LR] \
#     [TEACHER_EPOCHS]
#   (default KDS="1 1;4 0.7", TEACHERS=1, 3 3 "0.003 0.006 0.012 0.024 0.048" 0.003 3; ~25 min
#   on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${1:-3}"; SEEDS="${2:-3}"; LRS="${3:-0.003 0.006 0.012 0.024 0.048}"
TEACHER_LR="${4:-0.003}"; TEACHER_EPOCHS="${5:-3}"; KDS="${KDS:-1 1;4 0.7}"; TEACHERS="${TEACHERS:-1}"
scripts/fetch-assets.sh fashion-mnist >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"; CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
W="$CACHE/bench-distill-lr"; mkdir -p "$W"
TEACHER="$W/teacher-lr$TEACHER_LR-e$TEACHER_EPOCHS"

run() { # json-out args... (skipped when the JSON exists; written by rename when complete)
  local out="$1"; shift
  [ -s "$out" ] && return 0
  if RAYON_NUM_THREADS=1 "$F" distill --data fashion-mnist --json "$@" >"$out.tmp" 2>"$out.log"; then
    mv "$out.tmp" "$out"
  else
    echo "error: distill-lr: frugal distill $* failed (see $out.log)" >&2; rm -f "$out.tmp"; return 1
  fi
}
export -f run; export F
# Teacher s > 0 of an ensemble is "$TEACHER-s$s"; the ensemble's runs are tagged "-xN".
ENSEMBLE=""; TAG=""; [ "$TEACHERS" -gt 1 ] && TAG="-x$TEACHERS"
tjobs=()
for ((s = 0; s < TEACHERS; s++)); do
  t="$TEACHER"; [ "$s" -gt 0 ] && t="$TEACHER-s$s"
  ENSEMBLE+=" --teacher $t.safetensors"
  tjobs+=("run $t.json --arch teacher --epochs $TEACHER_EPOCHS --seed $s --lr $TEACHER_LR --out $t.safetensors")
done
printf '%s\n' "${tjobs[@]}" | xargs -P2 -I{} bash -c '{}'
jobs=()
for lr in $LRS; do
  for ((s = 0; s < SEEDS; s++)); do
    tag="e$EPOCHS-lr$lr-s$s"
    jobs+=("run $W/labels-$tag.json --epochs $EPOCHS --seed $s --lr $lr --out $W/tmp-labels-$tag.safetensors")
    IFS=';' read -ra kds <<<"$KDS"
    for kd in "${kds[@]}"; do
      set -- $kd
      dkd=""; dtag=""; shift 2
      for kv in "$@"; do # b=B: --nckd-weight B; at=B: --attention-weight B; atd=B: decaying
        case "$kv" in
          b=*) dkd+=" --nckd-weight ${kv#b=}" ;;
          at=*) dkd+=" --attention-weight ${kv#at=}" ;;
          atd=*) dkd+=" --attention-weight ${kv#atd=} --attention-decay" ;;
          *) echo "error: distill-lr: unknown KDS field $kv (b=B, at=B or atd=B)" >&2; exit 2 ;;
        esac
        dtag+="-${kv/=/}"
      done
      set -- $kd
      jobs+=("run $W/kd-T$1-a$2$dtag-$tag-teacher-lr$TEACHER_LR-e$TEACHER_EPOCHS$TAG.json --epochs $EPOCHS \
--seed $s --lr $lr$ENSEMBLE --temperature $1 --alpha $2$dkd --out $W/tmp-kd-$1-$2$dtag-$tag.safetensors")
    done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P2 -I{} bash -c '{}'
rm -f "$W"/tmp-*.safetensors "$W"/tmp-*.safetensors.checkpoint

python3 - "$W" "$EPOCHS" "$SEEDS" "$LRS" "$TEACHER_LR" "$TEACHER_EPOCHS" "$KDS" "$TAG" <<'PYEOF'
import json, statistics as st, sys
w, epochs, seeds, lrs, tlr, tep, kds, tag = sys.argv[1:9]
kds = [k.split() for k in kds.split(";")]
# "T A" is Hinton's loss; further fields b=B (decoupled, NCKD weight B), at=B (attention
# transfer, weight B) and atd=B (its weight decaying to 0) tag the files -bB, -atB, -atdB.
name = lambda k: f"T{k[0]}-a{k[1]}" + "".join("-" + f.replace("=", "") for f in k[2:])
label = lambda k: ", ".join([f"T={k[0]}", f"a={k[1]}", *k[2:]])
load = lambda p: json.load(open(p))
acc = lambda p: load(p)["eval"]["accuracy_pct"]
first_kd = f"{w}/kd-{name(kds[0])}-e{epochs}-lr{lrs.split()[0]}-s0-teacher-lr{tlr}-e{tep}{tag}.json"
# (runs from before `teacher_eval` was written: the teacher's own JSON)
teacher = (load(first_kd).get("teacher_eval") or load(f"{w}/teacher-lr{tlr}-e{tep}.json")["eval"])["accuracy_pct"]
who = f"ensemble of {tag[2:]} teachers" if tag else "teacher"
print(f"Fashion-MNIST student, {epochs} epochs, batch 128, seeds 0-{int(seeds) - 1}; "
      f"{who} {teacher:.2f} % ({tep} epochs at lr {tlr})")
print(f"{'peak lr':>8} {'labels %':>14}" + "".join(f" {label(k) + ' %':>14}" for k in kds)
      + "".join(f" {'d(' + name(k) + ')':>7}" for k in kds) + f" {'teacher - best':>14}")
fmt = lambda a: f"{st.mean(a):.2f} ± {st.stdev(a) if len(a) > 1 else 0:.2f}"
for lr in lrs.split():
    tags = [f"e{epochs}-lr{lr}-s{s}" for s in range(int(seeds))]
    lab = [acc(f"{w}/labels-{t}.json") for t in tags]
    kd = [[acc(f"{w}/kd-{name(k)}-{x}-teacher-lr{tlr}-e{tep}{tag}.json") for x in tags] for k in kds]
    best = max(st.mean(lab), *(st.mean(v) for v in kd))
    print(f"{lr:>8} {fmt(lab):>14}" + "".join(f" {fmt(v):>14}" for v in kd)
          + "".join(f" {st.mean(v) - st.mean(lab):+7.2f}" for v in kd) + f" {teacher - best:14.2f}")
PYEOF
