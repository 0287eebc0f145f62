#!/usr/bin/env bash
# The oracles for `frugal export` (issue #27), written to tests/golden/export_<model>.json:
#  1. llama.cpp's own converter (convert_hf_to_gguf.py of the pinned sdist, in the
#     torch/transformers 4.46.3 venv of bench/make-minilm-golden.sh) run on the model exported by
#     `frugal export` (folder seen as <model>-export/): sha256 and size at every --outtype, and
#     of the bf16 export converted at bf16 (BF16 kept as BF16). `frugal convert` of the same
#     folder must give the same bytes (crates/frugal-eval/tests/hf_export.rs, in CI).
#  2. transformers loading that folder (float32, CPU, eager attention): the token ids of its
#     tokenizer for Brown cj01-cj12, and for the first 256 of them each position's logsumexp
#     and top-5 logits, which Frugal's F32 forward of the GGUF must reproduce within float
#     tolerance. SmolLM2 (LlamaForCausalLM, the rebuilt tokenizer.json) with transformers
#     4.46.3; Gemma 3 270M (Gemma3ForCausalLM, the written tokenizer.model, through
#     transformers' fast tokenizer converted from it) and the synthetic qwen2, qwen3 and phi3
#     models of bench/make_arch_model.py (SmolLM2's weights as Qwen2ForCausalLM with seeded
#     Q/K/V biases, as Qwen3ForCausalLM with seeded QK-norms, as Phi3ForCausalLM with fused
#     QKV and gate-up weights, as LlamaForCausalLM with Llama 3.1's RoPE factors, which the
#     export writes as rope_scaling) with transformers 4.51.3, the
#     first to know Qwen 3: the venv venv-tf holds only transformers 4.51.3, tokenizers
#     0.21.4 and protobuf 5.29.5, and reads everything else (torch 2.5.1, sentencepiece
#     0.2.0) from venv-st through a .pth file. The converter stays on 4.46.3 (which knows
#     neither gemma3_text nor qwen3, so llama.cpp reads config.json as written; the export
#     writes every key it reads, so a newer transformers gives the same file).
#   bench/make-golden-export.sh [smollm2|gemma3|qwen2|qwen3|phi3]   (default smollm2; 30 s to 2 min)
MODEL="${1:-smollm2}"
case "$MODEL" in
  smollm2|qwen2|qwen3|phi3|llama3) export ASSETS="smollm2 brown" ;;
  gemma3) export ASSETS="gemma3 brown" ;;
  *) echo "usage: $0 [smollm2|gemma3|qwen2|qwen3|phi3|llama3]" >&2; exit 2 ;;
esac
source "$(dirname "$0")/common.sh"
PY="$CACHE/venv-st/bin/python"
[ -x "$PY" ] || { echo "no venv at $CACHE/venv-st: run bench/make-minilm-golden.sh first" >&2; exit 1; }
SRC="$CACHE/llama.cpp-0.3.36/src"
case "$MODEL" in
  smollm2)
    IN="$Q41"; PY_TF="$PY"; TF="transformers 4.46.3"
    DESC="SmolLM2-135M-Instruct Q4_1" ;;
  gemma3|qwen2|qwen3|phi3|llama3)
    TF="transformers 4.51.3"
    VTF="$CACHE/venv-tf"; PY_TF="$VTF/bin/python"
    PINS="transformers==4.51.3 tokenizers==0.21.4 protobuf==5.29.5"
    if [[ ! -f "$VTF/.frugal-requirements" || "$(<"$VTF/.frugal-requirements")" != "$PINS" ]]; then
      rm -rf -- "$VTF"
      "$("$PY" -c 'import sys; print(sys._base_executable)')" -m venv "$VTF"
      "$VTF/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps $PINS >&2
      SP="$("$VTF/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
      "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SP/zz-venv-st.pth"
      "$PY_TF" -c 'import transformers, torch, sentencepiece; from transformers import Gemma3ForCausalLM' >&2
      printf '%s' "$PINS" > "$VTF/.frugal-requirements"
    fi ;;
esac
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
case "$MODEL" in
  gemma3) IN="$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf"; DESC="Gemma 3 270M Q4_K_M" ;;
  qwen2|qwen3|phi3|llama3)
    IN="$T/arch-$MODEL.gguf"; DESC="bench/make_arch_model.py $MODEL (SmolLM2's weights, seed 26)"
    "$(scripts/setup-python.sh)" bench/make_arch_model.py "$MODEL" "$IN" ;;
esac
"$FRUGAL" brown-text --files cj01-cj12 -o "$T/cj.txt" 2>/dev/null
"$FRUGAL" export "$IN" "$T/$MODEL-export" >&2
rows=()
for ty in f32 f16 bf16 q8_0; do
  "$PY" "$SRC/convert_hf_to_gguf.py" "$T/$MODEL-export" --outfile "$T/o.gguf" --outtype "$ty" >"$T/log" 2>&1 \
    || { tail -20 "$T/log" >&2; exit 1; }
  rows+=("\"$ty\": {\"sha256\": \"$(sha256sum "$T/o.gguf" | cut -d' ' -f1)\", \"bytes\": $(stat -c %s "$T/o.gguf")}")
  rm -f "$T/o.gguf"
done
mkdir "$T/bf"
"$FRUGAL" export "$IN" "$T/bf/$MODEL-export" --dtype bf16 >&2
"$PY" "$SRC/convert_hf_to_gguf.py" "$T/bf/$MODEL-export" --outfile "$T/o.gguf" --outtype bf16 >"$T/log" 2>&1 \
  || { tail -20 "$T/log" >&2; exit 1; }
rows+=("\"bf16_export_bf16\": {\"sha256\": \"$(sha256sum "$T/o.gguf" | cut -d' ' -f1)\", \"bytes\": $(stat -c %s "$T/o.gguf")}")
rm -rf "$T/bf" "$T/o.gguf"
"$PY_TF" - "$T/$MODEL-export" "$T/cj.txt" > "$T/logits.json" <<'PYEOF'
import sys, json, hashlib, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
folder, text = sys.argv[1], open(sys.argv[2], encoding="utf-8").read()
tok = AutoTokenizer.from_pretrained(folder)
ids = tok(text, add_special_tokens=False)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
n = 256
with torch.no_grad():
    logits = model(torch.tensor([ids[:n]])).logits[0].double()
lse = torch.logsumexp(logits, dim=-1)
top = torch.topk(logits, 5, dim=-1)
print(json.dumps({
    "tokenizer": type(tok).__name__,
    "n_ids": len(ids), "ids_head": ids[:n], "ids_sha256": hashlib.sha256(str(ids).encode()).hexdigest(),
    "logsumexp": [round(float(x), 6) for x in lse],
    "top5_ids": top.indices.tolist(),
    "top5_logits": [[round(float(v), 6) for v in row] for row in top.values],
}))
PYEOF
{
  printf '{"made_by": "bench/make-golden-export.sh %s: frugal export of %s (folder %s-export/), converted by convert_hf_to_gguf.py of llama-cpp-python 0.3.36 (transformers 4.46.3) and loaded by %s (torch 2.5.1, float32, CPU); text Brown cj01-cj12",\n' "$MODEL" "$DESC" "$MODEL" "$TF"
  printf ' "convert": {%s},\n' "$(IFS=,; echo "${rows[*]}")"
  printf ' "transformers": %s\n}\n' "$(cat "$T/logits.json")"
} > "tests/golden/export_$MODEL.json"
echo "wrote tests/golden/export_$MODEL.json" >&2
