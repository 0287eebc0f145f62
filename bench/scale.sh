#!/usr/bin/env bash
# Frugal and llama.cpp side by side on one model file, the same tokens and threads, so that the
# cost's growth with the model's size is visible (run it on SmolLM2 F32, then the 1.5B and 7B
# F16 models of bench/make-big-model.sh):
#
#   bench/scale.sh MODEL.gguf [CALIB_TOKENS] [EVAL_CHUNKS] [THREADS]   (default 1024, 2, 2)
#
# Every command runs through bench/peak-mem.sh (wall time, peak RSS, peak anonymous memory);
# the table gives both tools' figures and their ratio (llama.cpp / Frugal: above 1, Frugal is
# faster or smaller):
#   1. Q4_K_M by rounding: llama-quantize against frugal quantize.
#   2. Q4_K_M with an importance matrix on the same calibration tokens (Brown ca01–ca04, chunks
#      of 512): llama-imatrix (--process-output --no-ppl: Frugal's statistic, no logits) then
#      llama-quantize --imatrix, against frugal quantize --calib; and the importance matrix
#      alone (llama-imatrix's run against the report's imatrix_seconds).
#   3. GPTQ (Frugal only: llama.cpp has none), --max-memory 2G.
#   4. Perplexity of the input, Q8_0 and Q4_K_M (llama.cpp's files) on Brown cj01–cj12 in
#      chunks of 512: llama-perplexity against frugal eval; then the Q4_K_M's mean KL
#      divergence from the input by both (agreement within 5 % expected).
# FRUGAL=path uses that binary instead of a release build. Work files go to $SCALE_DIR
# (default: a folder beside the model, removed at the end); GPTQ is skipped with NO_GPTQ=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=$(realpath "$1"); tokens=${2:-1024}; chunks=${3:-2}; threads=${4:-2}; ctx=512
BIN="$(bench/build-llama-cpp.sh)"
scripts/fetch-assets.sh brown >&2
if [[ -z ${FRUGAL:-} ]]; then cargo build --release -q -p frugal-cli; FRUGAL="$PWD/target/release/frugal"; fi
export RAYON_NUM_THREADS="$threads"
W=${SCALE_DIR:-$(mktemp -d "$(dirname "$model")/scale.XXXX")}; mkdir -p "$W"
[[ -n ${SCALE_DIR:-} ]] || trap 'rm -rf "$W"' EXIT
"$FRUGAL" brown-text --files ca01-ca04 --out "$W/calib.txt" >/dev/null
"$FRUGAL" brown-text --files cj01-cj12 --out "$W/eval.txt" >/dev/null
calib_chunks=$((tokens / ctx))

# measure NAME CMD...: runs CMD under peak-mem.sh; sets WALL, RSS, ANON; keeps the output in $W/NAME.log
measure() {
  local name=$1; shift
  bench/peak-mem.sh "$@" >"$W/$name.log" 2>&1 || { tail -20 "$W/$name.log" >&2; echo "scale: $name failed" >&2; exit 1; }
  read -r WALL RSS ANON < <(grep '^wall ' "$W/$name.log" | awk '{print $2, $6, $10}')
}
rows=()
row() { # WHAT llama_wall llama_rss llama_anon frugal_wall frugal_rss frugal_anon
  rows+=("$(printf '%-44s %8.1f %7.2f %7.2f %8.1f %7.2f %7.2f %7.2f %7.2f' "$1" "$2" "$3" "$4" "$5" "$6" "$7" \
    "$(echo "$2 / $5" | bc -l)" "$(echo "$3 / $6" | bc -l)")")
}

# 1. Rounding.
measure llama-q4km "$BIN/llama-quantize" "$model" "$W/llama-q4km.gguf" Q4_K_M "$threads"; l=("$WALL" "$RSS" "$ANON")
measure frugal-q4km "$FRUGAL" quantize "$model" "$W/frugal-q4km.gguf" --type Q4_K_M --no-eval
row "quantize Q4_K_M (rounding)" "${l[@]}" "$WALL" "$RSS" "$ANON"

# 2. With an importance matrix on the same tokens.
measure llama-imatrix "$BIN/llama-imatrix" -m "$model" -f "$W/calib.txt" -o "$W/imatrix.gguf" -c "$ctx" -b "$ctx" \
  --chunks "$calib_chunks" -t "$threads" --process-output --no-ppl
im=("$WALL" "$RSS" "$ANON")
measure llama-q4km-im "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$model" "$W/llama-q4km-im.gguf" Q4_K_M "$threads"
lq=("$WALL" "$RSS" "$ANON")
measure frugal-q4km-im "$FRUGAL" quantize "$model" "$W/frugal-q4km-im.gguf" --type Q4_K_M --calib "$W/calib.txt" \
  --calib-ctx "$ctx" --calib-tokens "$tokens" --no-eval
fim=$(grep -o 'of which [0-9.]* s measuring' "$W/frugal-q4km-im.log" | awk '{print $3}')
row "Q4_K_M with imatrix ($tokens tokens), in all" "$(echo "${im[0]} + ${lq[0]}" | bc)" \
  "$(echo "if (${im[1]} > ${lq[1]}) ${im[1]} else ${lq[1]}" | bc)" "$(echo "if (${im[2]} > ${lq[2]}) ${im[2]} else ${lq[2]}" | bc)" \
  "$WALL" "$RSS" "$ANON"
imatrix_ratio=$(echo "$fim / ${im[0]}" | bc -l)

# 3. GPTQ (Frugal alone), within 2 GiB of anonymous memory.
gptq=""
if [[ ${NO_GPTQ:-0} != 1 ]]; then
  measure frugal-gptq "$FRUGAL" quantize "$model" "$W/frugal-gptq.gguf" --type Q4_K_M --calib "$W/calib.txt" \
    --calib-ctx "$ctx" --calib-tokens "$tokens" --method gptq --no-eval --max-memory 2G
  gptq=$(printf '%-44s %8s %7s %7s %8.1f %7.2f %7.2f' "quantize Q4_K_M gptq ($tokens tokens, 2G)" - - - "$WALL" "$RSS" "$ANON")
fi

# 4. Evaluation: each file alone, then the Q4_K_M's KL divergence from the input.
measure llama-q80 "$BIN/llama-quantize" "$model" "$W/llama-q80.gguf" Q8_0 "$threads"
for f in input:"$model" Q8_0:"$W/llama-q80.gguf" Q4_K_M:"$W/llama-q4km.gguf"; do
  name=${f%%:*}; file=${f#*:}
  measure "llama-ppl-$name" "$BIN/llama-perplexity" -m "$file" -f "$W/eval.txt" -c "$ctx" -b "$ctx" --chunks "$chunks" -t "$threads"
  l=("$WALL" "$RSS" "$ANON")
  measure "frugal-ppl-$name" "$FRUGAL" eval "$file" --text "$W/eval.txt" --ctx "$ctx" --chunks "$chunks"
  row "eval $name ($chunks × $ctx tokens)" "${l[@]}" "$WALL" "$RSS" "$ANON"
done
"$BIN/llama-perplexity" -m "$model" -f "$W/eval.txt" -c "$ctx" -b "$ctx" --chunks "$chunks" -t "$threads" \
  --kl-divergence-base "$W/base.kld" >/dev/null 2>&1
"$BIN/llama-perplexity" -m "$W/llama-q4km.gguf" -f "$W/eval.txt" -c "$ctx" -b "$ctx" --chunks "$chunks" -t "$threads" \
  --kl-divergence-base "$W/base.kld" --kl-divergence >"$W/llama-kld.log" 2>&1
rm -f "$W/base.kld"
"$FRUGAL" eval "$W/llama-q4km.gguf" --reference "$model" --text "$W/eval.txt" --ctx "$ctx" --chunks "$chunks" --json \
  >"$W/frugal-kld.json"
lk=$(grep -o 'Mean *KLD: *[0-9.]*' "$W/llama-kld.log" | awk '{print $NF}')
fk=$(python3 -c "import json; print(json.load(open('$W/frugal-kld.json'))['kld']['mean'])")

echo "model: $model ($(du -h "$model" | cut -f1)), $threads threads, $(date -u +%F)"
printf '%-44s %8s %7s %7s %8s %7s %7s %7s %7s\n' "" "llama s" "RSS GB" "anon GB" "frugal s" "RSS GB" "anon GB" "time×" "RSS×"
printf '%s\n' "${rows[@]}"
[[ -n $gptq ]] && echo "$gptq"
printf 'importance matrix alone: llama-imatrix %.1f s, frugal %.1f s (frugal / llama %.2f; issue #25 target at most 1.2)\n' \
  "${im[0]}" "$fim" "$imatrix_ratio"
printf 'Q4_K_M mean KLD from the input: llama-perplexity %s, frugal eval %.6f (ratio %.4f; within 5 %%: %s)\n' \
  "$lk" "$fk" "$(echo "$fk / $lk" | bc -l)" "$(python3 -c "print('yes' if abs($fk / $lk - 1) < 0.05 else 'NO')")"
