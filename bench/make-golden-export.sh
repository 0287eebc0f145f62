#!/usr/bin/env bash
# The oracles for `frugal export` (issue #27), written to tests/golden/export_smollm2.json:
#  1. llama.cpp's own converter (convert_hf_to_gguf.py of the pinned sdist, in the
#     torch/transformers venv of bench/make-minilm-golden.sh) run on SmolLM2 exported by
#     `frugal export` (folder seen as smollm2-export/): sha256 and size at every --outtype, and
#     of the bf16 export converted at bf16 (BF16 kept as BF16). `frugal convert` of the same
#     folder must give the same bytes (crates/frugal-compress/tests/hf_export.rs, in CI).
#  2. transformers 4.46.3 loading that folder (LlamaForCausalLM, float32, CPU): the token ids
#     of its tokenizer (the rebuilt tokenizer.json) for Brown cj01-cj12, and for the first 256
#     of them each position's logsumexp and top-5 logits, which Frugal's F32 forward of the
#     GGUF must reproduce within float tolerance.
#   bench/make-golden-export.sh     (after bench/make-minilm-golden.sh has built its venv)
source "$(dirname "$0")/common.sh"
PY="$CACHE/venv-st/bin/python"
[ -x "$PY" ] || { echo "no venv at $CACHE/venv-st: run bench/make-minilm-golden.sh first" >&2; exit 1; }
SRC="$CACHE/llama.cpp-0.3.36/src"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
"$FRUGAL" brown-text --files cj01-cj12 -o "$T/cj.txt" 2>/dev/null
"$FRUGAL" export "$Q41" "$T/smollm2-export" >&2
rows=()
for ty in f32 f16 bf16 q8_0; do
  "$PY" "$SRC/convert_hf_to_gguf.py" "$T/smollm2-export" --outfile "$T/o.gguf" --outtype "$ty" >"$T/log" 2>&1 \
    || { tail -20 "$T/log" >&2; exit 1; }
  rows+=("\"$ty\": {\"sha256\": \"$(sha256sum "$T/o.gguf" | cut -d' ' -f1)\", \"bytes\": $(stat -c %s "$T/o.gguf")}")
  rm -f "$T/o.gguf"
done
mkdir "$T/bf"
"$FRUGAL" export "$Q41" "$T/bf/smollm2-export" --dtype bf16 >&2
"$PY" "$SRC/convert_hf_to_gguf.py" "$T/bf/smollm2-export" --outfile "$T/o.gguf" --outtype bf16 >"$T/log" 2>&1 \
  || { tail -20 "$T/log" >&2; exit 1; }
rows+=("\"bf16_export_bf16\": {\"sha256\": \"$(sha256sum "$T/o.gguf" | cut -d' ' -f1)\", \"bytes\": $(stat -c %s "$T/o.gguf")}")
"$PY" - "$T/smollm2-export" "$T/cj.txt" > "$T/logits.json" <<'PYEOF'
import sys, json, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
folder, text = sys.argv[1], open(sys.argv[2], encoding="utf-8").read()
tok = AutoTokenizer.from_pretrained(folder)
ids = tok(text, add_special_tokens=False)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
model.eval()
n = 256
with torch.no_grad():
    logits = model(torch.tensor([ids[:n]])).logits[0].double()
lse = torch.logsumexp(logits, dim=-1)
top = torch.topk(logits, 5, dim=-1)
print(json.dumps({
    "n_ids": len(ids), "ids_head": ids[:n], "ids_sha256": __import__("hashlib").sha256(str(ids).encode()).hexdigest(),
    "logsumexp": [round(float(x), 6) for x in lse],
    "top5_ids": top.indices.tolist(),
    "top5_logits": [[round(float(v), 6) for v in row] for row in top.values],
}))
PYEOF
{
  printf '{"made_by": "bench/make-golden-export.sh: frugal export of SmolLM2-135M-Instruct Q4_1 (folder smollm2-export/), converted by convert_hf_to_gguf.py of llama-cpp-python 0.3.36 and loaded by transformers 4.46.3 (torch 2.5.1, float32, CPU); text Brown cj01-cj12",\n'
  printf ' "convert": {%s},\n' "$(IFS=,; echo "${rows[*]}")"
  printf ' "transformers": %s\n}\n' "$(cat "$T/logits.json")"
} > tests/golden/export_smollm2.json
echo "wrote tests/golden/export_smollm2.json" >&2
