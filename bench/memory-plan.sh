#!/usr/bin/env bash
# The memory plan Frugal prints before a run against the run's measured peak anonymous memory
# (bench/peak-mem.sh), side by side with their ratio, on one model:
#
#   bench/memory-plan.sh MODEL_F16.gguf [CALIB_TOKENS]    # e.g. a make_big_model.py 1.5b file
#
# Runs: quantize Q8_0 (round to nearest), eval of that Q8_0 against MODEL (4 chunks of
# Brown cj01–cj12), quantize Q4_K_M with an importance matrix and with GPTQ (Brown ca01–ca04,
# CALIB_TOKENS tokens, default 1024). FRUGAL=path uses that binary instead of a release build.
# A plan is meant as an upper bound of the anonymous peak (the memory-mapped model is apart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=$(realpath "$1"); tokens=${2:-1024}
if [[ -z ${FRUGAL:-} ]]; then cargo build --release -q -p frugal-cli; FRUGAL="$PWD/target/release/frugal"; fi
scripts/fetch-assets.sh brown >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$FRUGAL" brown-text --files cj01-cj12 --out "$work/eval.txt" >/dev/null
"$FRUGAL" brown-text --files ca01-ca04 --out "$work/calib.txt" >/dev/null
rows=()
run() {  # NAME ARGS...: the plan's total and the measured peak anonymous memory
  local name=$1; shift
  local out; out=$(bench/peak-mem.sh "$FRUGAL" "$@" 2>&1)
  local plan; plan=$(grep -o 'memory plan: about [0-9.]* [GM]iB' <<<"$out" | awk '{print $4, $5}')
  local anon; anon=$(grep -o 'peak anonymous [0-9.]* GB' <<<"$out" | awk '{print $3}')
  local wall; wall=$(grep -o '^wall [0-9.]* s' <<<"$out" | awk '{print $2}')
  local gb; gb=$(awk -v v="${plan% *}" -v u="${plan#* }" 'BEGIN { printf "%.2f", v * (u == "GiB" ? 1073741824 : 1048576) / 1e9 }')
  rows+=("$(printf '| %s | %s GB | %s GB | %.2f | %s s |' "$name" "$gb" "$anon" "$(echo "$gb / $anon" | bc -l)" "$wall")")
  grep -q '(exit 0)' <<<"$out" || { echo "$out" >&2; exit 1; }
}
run "quantize Q8_0" quantize "$model" "$work/q8.gguf" --type Q8_0 --no-eval
run "eval Q8_0 vs input, 4 chunks" eval "$work/q8.gguf" --reference "$model" --text "$work/eval.txt" --chunks 4
run "quantize Q4_K_M --calib ($tokens tokens)" quantize "$model" "$work/im.gguf" --type Q4_K_M --calib "$work/calib.txt" --calib-tokens "$tokens" --no-eval
run "quantize Q4_K_M --method gptq ($tokens tokens)" quantize "$model" "$work/gptq.gguf" --type Q4_K_M --calib "$work/calib.txt" --calib-tokens "$tokens" --method gptq --no-eval
echo "model: $model"
echo "| run | plan | measured peak anonymous | plan / measured | wall |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
