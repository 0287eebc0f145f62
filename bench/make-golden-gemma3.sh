#!/usr/bin/env bash
# Regenerates the Gemma 3 270M golden files in tests/golden/ from llama.cpp (built by
# bench/build-llama-cpp.sh), the oracle the tests compare Frugal against:
#   - gemma3_tokens.json: llama-tokenize's ids (SentencePiece vocabulary, no special parsing, no
#     BOS) for test strings, and for the whole Brown corpus (ca01–cr09) and cj01–cj12 with BOS
#     (count, first 64, sha256 of the JSON list);
#   - gemma3_ppl.json: llama-perplexity on Gemma 3's F32 decoding (made by llama-quantize
#     --allow-requantize … F32), Brown cj01–cj12, -c 1024 --chunks 4, 2 threads — a context past
#     the 512-position sliding window, so the windowed layers' mask matters — and the KL
#     divergence of the shipped Q4_K_M against that F32 on the same chunks.
# Run: bench/make-golden-gemma3.sh   (a few minutes after llama.cpp is built)
ASSETS="gemma3 brown" source "$(dirname "$0")/common.sh"
G3="$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf"
WORK="$CACHE/golden-work"; mkdir -p "$WORK"
F32="$WORK/gemma3-f32.llama-quantize.gguf"
[ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$G3" "$F32" F32 >"$WORK/gemma3-quantize.log" 2>&1
PY="$(scripts/setup-python.sh)"

TEXT="$WORK/brown-cj01-cj12.txt"
ALL="$WORK/brown-all.txt"
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
"$FRUGAL" brown-text --files ca01-cr09 -o "$ALL" 2>/dev/null

PYTHONPATH=bench "$PY" - "$BIN/llama-tokenize" "$G3" "$ALL" "$TEXT" > tests/golden/gemma3_tokens.json <<'PYEOF'
import functools, json, sys
import llama_tokenize
from llama_tokenize import summary
tool, model, all_file, cj_file = sys.argv[1:5]
ids = functools.partial(llama_tokenize.ids, tool, model)
strings = ["Hello world!", "  two  spaces\n\nand 12345 digits", "naïve café — ünïcödé ✓ 😀",
           "fn main() { println!(\"{}\", 1+2); }", "It's 3.14159, isn't it? I'd've said 42%...",
           "\t\ttabs\r\nand CRLF", "<start_of_turn>user\nnot special here<end_of_turn>", "   ",
           "a" * 300, "\n\n\n x \n", "<b>bold</b> <0x41> ▁already▁escaped", "漢字とかな、한국어"]
json.dump({"made_by": "bench/make-golden-gemma3.sh with llama-tokenize from llama-cpp-python 0.3.36",
           "strings": [{"text": s, "ids": ids(s)} for s in strings],
           "brown_all_bos": summary(ids(file=all_file, bos=True)),
           "brown_cj01_cj12_bos": summary(ids(file=cj_file, bos=True))},
          sys.stdout, ensure_ascii=False)
PYEOF

# Perplexity of F32, then the KL divergence of the shipped Q4_K_M against it (same chunks).
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c 1024 --chunks 4 -t 2 -b 1024 \
  --kl-divergence-base "$WORK/gemma3-f32.kld" >"$WORK/gemma3-ppl.log" 2>&1
"$BIN/llama-perplexity" -m "$G3" -f "$TEXT" -c 1024 --chunks 4 -t 2 -b 1024 \
  --kl-divergence-base "$WORK/gemma3-f32.kld" --kl-divergence >"$WORK/gemma3-kld.log" 2>&1
"$PY" - "$WORK/gemma3-ppl.log" "$WORK/gemma3-kld.log" > tests/golden/gemma3_ppl.json <<'PYEOF'
import json, re, sys
log, kld = open(sys.argv[1]).read(), open(sys.argv[2]).read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
k = re.search(r"Mean\s+KLD:\s+([0-9.]+)\s+±\s+([0-9.]+)", kld)
t = re.search(r"Same top p:\s+([0-9.]+)\s+±\s+([0-9.]+)", kld)
json.dump({"made_by": "bench/make-golden-gemma3.sh: llama-perplexity (llama-cpp-python 0.3.36) -c 1024 --chunks 4 -t 2 on Gemma 3 270M F32 (llama-quantize --allow-requantize ... F32), Brown cj01-cj12 via `frugal brown-text`; kld = the shipped Q4_K_M against that F32 (--kl-divergence)",
           "ctx": 1024, "chunks": 4, "ppl": float(m.group(1)), "ppl_se": float(m.group(2)),
           "q4_k_m_kld": float(k.group(1)), "q4_k_m_kld_se": float(k.group(2)),
           "q4_k_m_same_top_pct": float(t.group(1)),
           "log_tail": [l for l in log.splitlines() if "tokeniz" in l or "perplexity:" in l][-6:]},
          sys.stdout, indent=1)
PYEOF
cat tests/golden/gemma3_ppl.json >&2
