#!/usr/bin/env bash
# Interop: files written by Frugal load in llama.cpp and give llama.cpp's own numbers.
#   1. `frugal dequantize` SmolLM2 → F32 GGUF (written by Frugal's GGUF v3 writer);
#   2. llama-perplexity runs on it and on llama-quantize's F32 of the same model; the two PPLs
#      must be identical (the tensors are bit-identical, so the whole file must be understood).
# Run: bench/interop-llama.sh   (needs llama.cpp from bench/build-llama-cpp.sh)
source "$(dirname "$0")/common.sh"
W="$CACHE/interop"; mkdir -p "$W"
"$FRUGAL" dequantize "$Q41" "$W/frugal-f32.gguf" 2>/dev/null
[ -f "$W/llama-f32.gguf" ] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$W/llama-f32.gguf" F32 >/dev/null 2>&1
"$FRUGAL" brown-text --files cj01-cj12 -o "$W/cj.txt" 2>/dev/null
ppl() { "$BIN/llama-perplexity" -m "$1" -f "$W/cj.txt" -c 512 --chunks 2 -t 2 2>&1 | grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*'; }
a="$(ppl "$W/frugal-f32.gguf")"; b="$(ppl "$W/llama-f32.gguf")"
echo "llama-perplexity on Frugal's GGUF:        $a"
echo "llama-perplexity on llama-quantize's GGUF: $b"
[ "$a" = "$b" ] && echo "interop: identical" || { echo "interop: DIFFERENT"; exit 1; }
