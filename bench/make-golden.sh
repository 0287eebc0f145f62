#!/usr/bin/env bash
# Regenerates the golden files in tests/golden/ from llama.cpp (built by bench/build-llama-cpp.sh),
# the reference implementation the tests compare Frugal against:
#   - smollm2_tokens.json: llama-tokenize's ids for test strings and for Brown cj01–cj12;
#   - smollm2_ppl.json: llama-perplexity on the F32 SmolLM2 (made by llama-quantize), cj01–cj12,
#     -c 512 --chunks 4, 2 threads;
#   - also checks that `frugal dequantize` writes the same F32 tensors as llama-quantize.
# Run: bench/make-golden.sh   (a few minutes after llama.cpp is built)
source "$(dirname "$0")/common.sh"
WORK="$CACHE/golden-work"; mkdir -p "$WORK"
F32="$WORK/smollm2-f32.llama-quantize.gguf"
[ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$F32" F32 >"$WORK/quantize.log" 2>&1
"$FRUGAL" dequantize "$Q41" "$WORK/smollm2-f32.frugal.gguf" 2>/dev/null
PY="$(scripts/setup-python.sh)"
"$PY" - "$F32" "$WORK/smollm2-f32.frugal.gguf" <<'PYEOF'
import sys, numpy as np, gguf
a, b = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
ta = {t.name: t for t in a.tensors}; diff = 0
for t in b.tensors:
    x, y = np.asarray(ta[t.name].data).view(np.uint32), np.asarray(t.data).view(np.uint32)
    diff += int((x.reshape(-1) != y.reshape(-1)).sum())
print(f"frugal dequantize vs llama-quantize F32: {len(b.tensors)} tensors, {diff} differing values", file=sys.stderr)
sys.exit(1 if diff else 0)
PYEOF

TEXT="$WORK/brown-cj01-cj12.txt"
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null

# Tokenizer golden: ids for each test string, and for the whole Brown text (count + sha256).
"$PY" - "$BIN/llama-tokenize" "$Q41" "$TEXT" > tests/golden/smollm2_tokens.json <<'PYEOF'
import hashlib, json, subprocess, sys
tool, model, text_file = sys.argv[1:4]
def ids(text=None, file=None):
    src = ["-f", file] if file else ["-p", text]
    out = subprocess.run([tool, "-m", model, *src, "--ids", "--log-disable", "--no-bos", "--no-parse-special"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)
strings = ["Hello world!", "  two  spaces\n\nand 12345 digits", "naïve café — ünïcödé ✓ 😀",
           "fn main() { println!(\"{}\", 1+2); }", "It's 3.14159, isn't it? I'd've said 42%...",
           "\t\ttabs\r\nand CRLF", "<|im_start|>user\nnot special here<|im_end|>", "   ", "a" * 300]
full = ids(file=text_file)
json.dump({"made_by": "bench/make-golden.sh with llama-tokenize from llama-cpp-python 0.3.36",
           "strings": [{"text": s, "ids": ids(s)} for s in strings],
           "brown_cj01_cj12": {"n_tokens": len(full), "first_64": full[:64],
                               "sha256_ids": hashlib.sha256(json.dumps(full).encode()).hexdigest()}},
          sys.stdout, ensure_ascii=False)
PYEOF

# Perplexity golden.
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c 512 --chunks 4 -t 2 -b 512 >"$WORK/ppl.log" 2>&1
"$PY" - "$WORK/ppl.log" > tests/golden/smollm2_ppl.json <<'PYEOF'
import json, re, sys
log = open(sys.argv[1]).read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
n = re.search(r"tokenizing the input .*?\n.*?(\d+) tokens", log, re.S) or re.search(r"(\d+) tokens", log)
json.dump({"made_by": "bench/make-golden.sh: llama-perplexity (llama-cpp-python 0.3.36) -c 512 --chunks 4 -t 2 on SmolLM2 F32 (llama-quantize --allow-requantize ... F32), Brown cj01-cj12 via `frugal brown-text`",
           "ctx": 512, "chunks": 4, "ppl": float(m.group(1)), "ppl_se": float(m.group(2)),
           "log_tail": [l for l in log.splitlines() if "tokeniz" in l or "perplexity:" in l][-6:]},
          sys.stdout, indent=1)
PYEOF
cat tests/golden/smollm2_ppl.json >&2

# Quantization golden: sha256 of `llama-quantize` files (--pure for every block type, and the
# named k-quant mixes), made
# from Frugal's F32 file (same tensors as llama-quantize's F32, metadata in Frugal's order), which
# is the input the CI test quantizes.
"$PY" - "$BIN/llama-quantize" "$WORK/smollm2-f32.frugal.gguf" "$WORK" > tests/golden/smollm2_quantize_pure.json <<'PYEOF'
import hashlib, json, subprocess, sys
tool, f32, work = sys.argv[1:4]
out = {"made_by": "bench/make-golden.sh: llama-quantize (llama-cpp-python 0.3.36) on SmolLM2 F32 written by frugal dequantize; sha256 = with --pure, mix_sha256 = the named mixes without --pure", "sha256": {}, "mix_sha256": {}}
out["f32_llama_quantize_sha256"] = hashlib.sha256(open(f"{work}/smollm2-f32.llama-quantize.gguf", "rb").read()).hexdigest()
def run(t, pure):
    dst = f"{work}/{'pure' if pure else 'mix'}-{t}.gguf"
    subprocess.run([tool, *(["--pure"] if pure else []), f32, dst, t], check=True, capture_output=True)
    return hashlib.sha256(open(dst, "rb").read()).hexdigest()
for t in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
    out["sha256"][t] = run(t, True)
for t in ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]:
    out["mix_sha256"][t] = run(t, False)
json.dump(out, sys.stdout, indent=1)
PYEOF
cat tests/golden/smollm2_quantize_pure.json >&2
