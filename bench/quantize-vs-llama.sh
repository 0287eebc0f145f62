#!/usr/bin/env bash
# `frugal quantize` against `llama-quantize --pure` on SmolLM2 F32, in one run: wall time, size and
# whether the two files are byte-identical, for every legacy block type.
#   bench/quantize-vs-llama.sh
ASSETS=smollm2 source "$(dirname "$0")/common.sh"
W="$CACHE/bench-quantize"; mkdir -p "$W"
"$FRUGAL" dequantize "$Q41" "$W/f32.gguf" 2>/dev/null
now() { date +%s.%N; }
printf '%-6s %10s %14s %14s %8s %s\n' type "MiB" "llama-quantize s" "frugal s" "speed×" "files"
for T in Q8_0 Q5_1 Q5_0 Q4_1 Q4_0; do
  t0=$(now); "$BIN/llama-quantize" --pure "$W/f32.gguf" "$W/llama-$T.gguf" "$T" >/dev/null 2>&1; t1=$(now)
  "$FRUGAL" quantize "$W/f32.gguf" "$W/frugal-$T.gguf" --type "$T" --no-eval >/dev/null; t2=$(now)
  same=$(cmp -s "$W/llama-$T.gguf" "$W/frugal-$T.gguf" && echo byte-identical || echo DIFFERENT)
  mib=$(stat -c %s "$W/frugal-$T.gguf" | awk '{printf "%.2f", $1/1048576}')
  printf '%-6s %10s %14.2f %14.2f %8.2f %s\n' "$T" "$mib" "$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(echo "($t1-$t0)/($t2-$t1)" | bc -l)" "$same"
done
