#!/usr/bin/env bash
# Per architecture, Frugal against llama.cpp on the synthetic models of bench/make_arch_model.py
# (SmolLM2's weights as qwen2, qwen3, Llama with Llama 3.1's RoPE factors, phi3 with fused
# QKV and gate-up weights, and swa, a Mistral-style window on every layer written as
# granite_swa; F16), in one run:
#   - F16 perplexity and evaluation speed: `frugal eval` against `llama-perplexity` (same text,
#     chunks and threads; Brown cj01–cj12, ctx 512);
#   - Q4_K_M by rounding and calibrated (Brown ca01–ca10, 1,024 tokens: llama-imatrix +
#     llama-quantize --imatrix against frugal quantize --calib (importance-weighted rounding),
#     --method gptq and awq-gptq where the method runs on the architecture — "n/a" with the
#     reason where Frugal refuses it), each judged by `llama-perplexity --kl-divergence`
#     against the F16 logits.
#   [ARCHS="qwen2 qwen3 llama3 phi3 swa"] bench/arch-quality.sh [CHUNKS] [THREADS]
#   (default 8 chunks, 2 threads). ARCHS may name gemma3: Gemma 3 270M's F32 decoding (the
#   shipped Q4_K_M through llama-quantize --allow-requantize; fetch it with ASSETS="smollm2
#   brown gemma3"), judged at ctx 1024, past its 512-position window.
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-8}"; THREADS="${2:-2}"; CTX=512
W="$CACHE/bench-archs"; mkdir -p "$W"
PY="$(scripts/setup-python.sh)"
CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-cj01-cj12.txt"
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
out="$W/table.txt"; : >"$out"
judge() { # model reference -> mean KLD
  "$BIN/llama-perplexity" -m "$1" -f "$TEXT" -c $ctx --chunks "$CHUNKS" -t "$THREADS" -b $ctx \
    --kl-divergence-base "$2" --kl-divergence 2>&1 | grep -o 'Mean    KLD: *[0-9.]*' | awk '{print $NF}'
}
for arch in ${ARCHS:-qwen2 qwen3 llama3 phi3 swa}; do
  ctx=$CTX; m="$W/$arch.gguf"
  if [ "$arch" = gemma3 ]; then
    ctx=1024; m="$CACHE/golden-work/gemma3-f32.llama-quantize.gguf"; mkdir -p "$CACHE/golden-work"
    [ -f "$m" ] || "$BIN/llama-quantize" --allow-requantize "$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf" "$m" F32 >/dev/null 2>&1
  fi
  [ -f "$m" ] || "$PY" bench/make_arch_model.py "$arch" "$m"
  # F16: llama.cpp's PPL (saving the logits for KLD) and speed, then Frugal's.
  t0=$(date +%s.%N)
  "$BIN/llama-perplexity" -m "$m" -f "$TEXT" -c $ctx --chunks "$CHUNKS" -t "$THREADS" -b $ctx \
    --kl-divergence-base "$W/$arch.kld" >"$W/$arch-ppl.log" 2>&1
  t_llama=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  ppl_llama=$(grep -o 'Final estimate: PPL = [0-9.]*' "$W/$arch-ppl.log" | awk '{print $NF}')
  t0=$(date +%s.%N)
  ppl_frugal=$("$FRUGAL" eval "$m" --text "$TEXT" --ctx $ctx --chunks "$CHUNKS" 2>/dev/null | awk '$1 == "PPL" {print $2}')
  t_frugal=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  # Q4_K_M.
  "$BIN/llama-imatrix" -m "$m" -f "$CAL" -c 512 --chunks 2 -t "$THREADS" -o "$W/$arch-imatrix.gguf" >"$W/$arch-imatrix.log" 2>&1
  "$BIN/llama-quantize" "$m" "$W/$arch-llama-rtn.gguf" Q4_K_M "$THREADS" >/dev/null 2>&1
  "$BIN/llama-quantize" --imatrix "$W/$arch-imatrix.gguf" "$m" "$W/$arch-llama-im.gguf" Q4_K_M "$THREADS" >/dev/null 2>&1
  "$FRUGAL" quantize "$m" "$W/$arch-frugal-rtn.gguf" --type Q4_K_M --no-eval >/dev/null 2>&1
  "$FRUGAL" quantize "$m" "$W/$arch-frugal-im.gguf" --type Q4_K_M --calib "$CAL" --calib-tokens 1024 --no-eval >/dev/null 2>&1
  # A method Frugal refuses on this architecture: n/a and why (its message names the cause).
  calibrated() { # method -> KLD, or n/a (reason)
    if "$FRUGAL" quantize "$m" "$W/$arch-frugal-$1.gguf" --type Q4_K_M --calib "$CAL" --calib-tokens 1024 --method "$1" --no-eval >"$W/$arch-$1.log" 2>&1; then
      judge "$W/$arch-frugal-$1.gguf" "$W/$arch.kld"
    elif grep -q "fused" "$W/$arch-$1.log"; then echo "n/a(fused)"
    elif grep -q "bias" "$W/$arch-$1.log"; then echo "n/a(bias)"
    else echo "failed"; fi
  }
  gptq=$(calibrated gptq); awq=$(calibrated awq-gptq)
  printf '%-8s %10s %10s %8.2f %8.2f %6.2f  %9s %9s %9s %9s %11s %11s\n' "$arch" "$ppl_llama" "$ppl_frugal" \
    "$t_llama" "$t_frugal" "$(echo "$t_llama / $t_frugal" | bc -l)" \
    "$(judge "$W/$arch-llama-rtn.gguf" "$W/$arch.kld")" "$(judge "$W/$arch-frugal-rtn.gguf" "$W/$arch.kld")" \
    "$(judge "$W/$arch-llama-im.gguf" "$W/$arch.kld")" "$(judge "$W/$arch-frugal-im.gguf" "$W/$arch.kld")" \
    "$gptq" "$awq" >>"$out"
done
echo "F16 synthetic models (gemma3: F32, ctx 1024), Brown cj01-cj12, ctx $CTX, $CHUNKS chunks, $THREADS threads; Q4_K_M KLD against the F16 logits (llama-perplexity); calibration Brown ca01-ca10, 1,024 tokens"
printf '%-8s %10s %10s %8s %8s %6s  %9s %9s %9s %9s %11s %11s\n' arch "PPL llama" "PPL frugal" "llama s" "frugal s" speed× "KLD l.rtn" "KLD f.rtn" "KLD l.im" "KLD f.im" "KLD f.gptq" "KLD f.awq-g"
cat "$out"
