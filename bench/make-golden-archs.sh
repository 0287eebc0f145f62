#!/usr/bin/env bash
# Regenerates tests/golden/arch_ppl.json: for each synthetic architecture of
# bench/make_arch_model.py (SmolLM2's weights written as qwen2, qwen3, Llama with Llama 3.1's
# RoPE frequency factors, phi3 with fused QKV and gate-up weights, and swa: a Mistral-style
# window on every layer, written as granite_swa), the sha256 of the file it writes,
# llama-perplexity's PPL on it (F16 weights, Brown cj01–cj12, -c 512 --chunks 4, 2 threads) and
# the sha256 of `llama-quantize … Q4_K_M` of it — the oracles the CI test
# (crates/frugal-eval/tests/arch_golden.rs) holds Frugal's evaluation and quantization of the
# same bytes to (these files are written in name order, blk.10 before blk.2: llama.cpp's
# layer-ordered counting of its mix rules must be followed, not the file's order).
# Run: bench/make-golden-archs.sh   (a few minutes after llama.cpp is built)
source "$(dirname "$0")/common.sh"
WORK="$CACHE/golden-work"; mkdir -p "$WORK"
PY="$(scripts/setup-python.sh)"
TEXT="$WORK/brown-cj01-cj12.txt"
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
rows=()
for arch in qwen2 qwen3 llama3 phi3 swa; do
  m="$WORK/arch-$arch.gguf"
  "$PY" bench/make_arch_model.py "$arch" "$m"
  "$BIN/llama-perplexity" -m "$m" -f "$TEXT" -c 512 --chunks 4 -t 2 -b 512 >"$WORK/arch-$arch.log" 2>&1
  ppl=$(grep -o 'Final estimate: PPL = [0-9.]*' "$WORK/arch-$arch.log" | awk '{print $NF}')
  sha=$(sha256sum "$m" | cut -d' ' -f1)
  "$BIN/llama-quantize" "$m" "$WORK/arch-$arch-q4_k_m.gguf" Q4_K_M 2 >/dev/null 2>&1
  q4=$(sha256sum "$WORK/arch-$arch-q4_k_m.gguf" | cut -d' ' -f1)
  rows+=("\"$arch\": {\"sha256\": \"$sha\", \"ppl\": $ppl, \"q4_k_m_sha256\": \"$q4\"}")
  echo "$arch: PPL $ppl, sha256 $sha, Q4_K_M $q4" >&2
done
{
  printf '{"made_by": "bench/make-golden-archs.sh: bench/make_arch_model.py ARCH (seed 26), llama-perplexity (llama-cpp-python 0.3.36) -c 512 --chunks 4 -t 2 on Brown cj01-cj12 via `frugal brown-text`",\n "ctx": 512, "chunks": 4,\n'
  (IFS=$'\n'; printf ' %s' "$(printf '%s,\n' "${rows[@]}" | sed '$ s/,$//')")
  printf '\n}\n'
} > tests/golden/arch_ppl.json
cat tests/golden/arch_ppl.json >&2
