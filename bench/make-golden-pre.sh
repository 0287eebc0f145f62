#!/usr/bin/env bash
# Regenerates tests/golden/pre_tokens.json: llama-tokenize's ids under the BPE pre-tokenizers
# Llama 3 and Qwen2 name (`tokenizer.ggml.pre` = llama-bpe, qwen2), on SmolLM2's byte-level
# vocabulary and merges — SmolLM2's GGUF with only that key changed (tools/set-pre below) — for
# hand-written strings (contractions in both cases, digit runs, newlines, CJK, emoji) and the
# whole Brown corpus. The CI test (crates/frugal-eval/tests/pre_tokenizers.rs) makes the same
# file with Frugal's writer and must produce the same ids. (No real Llama 3 or Qwen2 vocabulary
# can be fetched here; the splitting is what the pre-tokenizer decides.)
#   bench/make-golden-pre.sh
source "$(dirname "$0")/common.sh"
WORK="$CACHE/golden-work"; mkdir -p "$WORK"
PY="$(scripts/setup-python.sh)"
ALL="$WORK/brown-all.txt"
"$FRUGAL" brown-text --files ca01-cr09 -o "$ALL" 2>/dev/null
for pre in llama-bpe qwen2; do
  "$PY" - "$Q41" "$WORK/smollm2-pre-$pre.gguf" "$pre" <<'PYEOF'
import sys, gguf
src, out, pre = sys.argv[1:4]
r = gguf.GGUFReader(src)
w = gguf.GGUFWriter(out, "llama")
for k, f in r.fields.items():
    if k.startswith("GGUF.") or k == "general.architecture":
        continue
    t = f.types[0]
    if k == "tokenizer.ggml.pre":
        w.add_string(k, pre)
    elif t == gguf.GGUFValueType.ARRAY:
        sub = f.types[1]
        v = [bytes(f.parts[i]).decode("utf-8") for i in f.data] if sub == gguf.GGUFValueType.STRING \
            else [f.parts[i].tolist()[0] for i in f.data]
        w.add_key_value(k, v, t, sub)
    elif t == gguf.GGUFValueType.STRING:
        w.add_key_value(k, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
    else:
        w.add_key_value(k, f.parts[f.data[0]].tolist()[0], t)
for t in r.tensors:
    w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PYEOF
done
PYTHONPATH=bench "$PY" - "$BIN/llama-tokenize" "$WORK" "$ALL" > tests/golden/pre_tokens.json <<'PYEOF'
import functools, json, sys
import llama_tokenize
from llama_tokenize import summary
tool, work, all_file = sys.argv[1:4]
ids = functools.partial(llama_tokenize.ids, tool)
strings = ["Hello world!", "It's 3.14159, isn't it? I'D'VE SAID 42%... they'll we're",
           "12345678901 and 2024-12-04", "  two  spaces\n\nand\r\n\r\nCRLF\n", "\t\ttabs   \n x",
           "naïve café — ünïcödé ✓ 😀", "漢字とかな、한국어", "fn main() { println!(\"{}\", 1+2); }",
           "<|endoftext|> not special here", "   ", "a" * 300, "don't DON'T Don't"]
out = {"made_by": "bench/make-golden-pre.sh: SmolLM2's GGUF with tokenizer.ggml.pre replaced, llama-tokenize from llama-cpp-python 0.3.36"}
for pre in ["llama-bpe", "qwen2"]:
    m = f"{work}/smollm2-pre-{pre}.gguf"
    out[pre] = {"strings": [{"text": s, "ids": ids(m, s)} for s in strings],
                "brown_all": summary(ids(m, file=all_file))}
json.dump(out, sys.stdout, ensure_ascii=False)
PYEOF
echo "wrote tests/golden/pre_tokens.json" >&2
