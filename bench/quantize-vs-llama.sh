#!/usr/bin/env bash
# `frugal quantize` against `llama-quantize` on SmolLM2 F32, in one run, round to nearest (no
# calibration): wall time, peak RSS, size and whether the two files are byte-identical — every
# block type with --pure, and llama.cpp's named k-quant mixes.
# Each command runs REPS times (default 3); the table shows the median wall time and the largest
# peak RSS, the two tools alternating so both see the same machine load.
#   bench/quantize-vs-llama.sh [THREADS] [REPS] [iq]    (default 2, 3)
# With `iq` as third argument: the IQ and ternary types instead (issue #28), both tools given
# the same importance matrix file (tests/golden/smollm2.imatrix.gguf, llama-imatrix's).
ASSETS=smollm2 source "$(dirname "$0")/common.sh"
THREADS="${1:-2}"; REPS="${2:-3}"; export RAYON_NUM_THREADS="$THREADS"
IM=(); [ "${3:-}" = iq ] && IM=(--imatrix tests/golden/smollm2.imatrix.gguf)
W="$CACHE/bench-quantize"; mkdir -p "$W"
[ -f "$W/f32.gguf" ] || "$FRUGAL" dequantize "$Q41" "$W/f32.gguf" 2>/dev/null
once() { # cmd... -> appends "wall maxrss_kib" to $W/times.$TAG
  /usr/bin/time -f "%e %M" -o "$W/time.tmp" "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; exit 1; }
  cat "$W/time.tmp" >>"$W/times.$TAG"
}
summary() { # TAG -> sets T (median s) and R (max MiB)
  T=$(sort -n "$W/times.$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  R=$(awk 'BEGIN {m=0} {if ($2>m) m=$2} END {print int(m/1024)}' "$W/times.$1")
}
printf '%-8s %-6s %9s %10s %9s %10s %9s %8s %s\n' type mode "MiB" "llama s" "llama MiB" "frugal s" "frugal MiB" "speed×" files
run() { # type pure|mix
  local t="$1" mode="$2" pure=(); [ "$mode" = pure ] && pure=(--pure)
  rm -f "$W/llama-$t.gguf" "$W/frugal-$t.gguf"
  rm -f "$W/times.llama" "$W/times.frugal"
  for _ in $(seq "$REPS"); do
    TAG=llama once "$BIN/llama-quantize" "${pure[@]}" "${IM[@]}" "$W/f32.gguf" "$W/llama-$t.gguf" "$t" "$THREADS"
    TAG=frugal once "$FRUGAL" quantize "$W/f32.gguf" "$W/frugal-$t.gguf" --type "$t" "${pure[@]}" "${IM[@]}" --no-eval
  done
  summary llama; local lt=$T lr=$R
  summary frugal; local ft=$T fr=$R
  local same; same=$(cmp -s "$W/llama-$t.gguf" "$W/frugal-$t.gguf" && echo byte-identical || echo DIFFERENT)
  local mib; mib=$(stat -c %s "$W/frugal-$t.gguf" | awk '{printf "%.2f", $1/1048576}')
  printf '%-8s %-6s %9s %10.2f %9d %10.2f %9d %8.2f %s\n' "$t" "$mode" "$mib" "$lt" "$lr" "$ft" "$fr" "$(echo "$lt / $ft" | bc -l)" "$same"
}
if [ "${3:-}" = iq ]; then
  # (--pure IQ2_M is all IQ2_S; IQ2_XXS, IQ2_XS and IQ1_S cannot be --pure here: their
  # quantizers need importance weights, which the token embedding has none of.)
  for t in IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_M IQ1_M TQ2_0 TQ1_0; do run "$t" pure; done
  for t in IQ4_XS IQ3_M IQ3_XS IQ3_XXS IQ2_M IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S; do run "$t" mix; done
  exit 0
fi
for t in Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 Q6_K Q5_K Q4_K Q3_K Q2_K; do run "$t" pure; done
for t in Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q3_K_L Q3_K_M Q3_K_S Q2_K; do run "$t" mix; done
