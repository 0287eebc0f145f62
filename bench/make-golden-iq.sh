#!/usr/bin/env bash
# Golden files for the IQ types and for quantizing with an importance-matrix file (issue #28):
#   - tests/golden/smollm2.imatrix.gguf: llama-imatrix's importance matrix of SmolLM2 F32 on
#     Brown ca01–ca08 (-c 512 --chunks 8, 2 threads), in llama.cpp's GGUF format;
#   - tests/golden/smollm2_quantize_imatrix.json: sha256 of llama-quantize's files from Frugal's
#     F32 file (as in bench/make-golden.sh) with `--imatrix tests/golden/smollm2.imatrix.gguf`
#     (the argument is recorded in the output as `quantize.imatrix.file`, so the CI test gives
#     Frugal the same string), for every quantized type (--pure) and the named mixes whose rules depend on the imatrix, and without
#     an imatrix for the IQ types llama.cpp allows without one; IQ2_XXS, IQ2_XS and IQ1_S --pure
#     with `--tensor-type token_embd=Q8_0` (an override with --pure; their quantizers need
#     importance weights, which no imatrix has for the token embedding — on SmolLM2 it falls
#     back to IQ4_NL, which does not, and plain --pure gives the same bytes in both tools too).
# Run: bench/make-golden-iq.sh   (a few minutes after llama.cpp and Frugal are built)
source "$(dirname "$0")/common.sh"
WORK="$CACHE/golden-work"; mkdir -p "$WORK"
F32="$WORK/smollm2-f32.frugal.gguf"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" 2>/dev/null
IM=tests/golden/smollm2.imatrix.gguf
if [ ! -f "$IM" ] || [ "${REMAKE_IMATRIX:-0}" = 1 ]; then
  "$FRUGAL" brown-text --files ca01-ca08 -o "$WORK/brown-ca01-ca08.txt" 2>/dev/null
  (cd "$WORK" && "$BIN/llama-imatrix" -m "$F32" -f brown-ca01-ca08.txt -o smollm2.imatrix.gguf \
      -c 512 --chunks 8 -t 2 >imatrix.log 2>&1)
  cp "$WORK/smollm2.imatrix.gguf" "$IM"
fi
PY="$(scripts/setup-python.sh)"
"$PY" - "$BIN/llama-quantize" "$F32" "$WORK" "$IM" > tests/golden/smollm2_quantize_imatrix.json <<'PYEOF'
import hashlib, json, subprocess, sys
tool, f32, work, im = sys.argv[1:5]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
out = {"made_by": "bench/make-golden-iq.sh: llama-quantize (llama-cpp-python 0.3.36) on SmolLM2 F32 written by frugal dequantize; imatrix_arg = the --imatrix argument given; sha256 = --pure with the imatrix, mix_sha256 = the named mixes with it, plain_sha256 / plain_mix_sha256 = without one",
       "imatrix_arg": im, "imatrix_sha256": sha(im), "sha256": {}, "mix_sha256": {}, "plain_sha256": {}, "plain_mix_sha256": {},
       "pure_override": "token_embd=Q8_0", "pure_override_sha256": {}}
def run(t, pure, imatrix, override=None):
    dst = f"{work}/iq-{'pure' if pure else 'mix'}-{'im' if imatrix else 'plain'}-{t}.gguf"
    args = [tool, *(["--pure"] if pure else []), *(["--imatrix", im] if imatrix else []),
            *(["--tensor-type", override] if override else []), f32, dst, t]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return sha(dst)
types = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S",
         "IQ2_M", "IQ1_M"]  # --pure IQ2_M is all IQ2_S (llama.cpp's IQ2_S mix is IQ2_XS-based)
# The k-quant mixes' rules do not depend on an imatrix (their weighted quantizers are the pure
# types' above; their rules are checked without one by bench/make-golden.sh); Q4_0's and Q5_0's
# and the IQ mixes' rules do.
mixes = ["Q4_0", "Q5_0", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
         "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"]
for t in types:
    out["sha256"][t] = run(t, True, True)
for t in ["IQ2_XXS", "IQ2_XS", "IQ1_S"]:
    out["pure_override_sha256"][t] = run(t, True, True, out["pure_override"])
for t in mixes:
    out["mix_sha256"][t] = run(t, False, True)
for t in ["IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_S"]:
    out["plain_sha256"][t] = run(t, True, False)
for t in ["IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"]:
    out["plain_mix_sha256"][t] = run(t, False, False)
# llama.cpp's decoding of each IQ and ternary file (--pure, with the imatrix): sha256 of the
# tensor data, in file order, of `llama-quantize --allow-requantize FILE F32`.
out["decoded_sha256"] = {}
import gguf, numpy as np
for t in ["IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0", "IQ2_M", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ1_S"]:
    src, dst = f"{work}/iq-pure-im-{t}.gguf", f"{work}/decoded-{t}.gguf"
    subprocess.run([tool, "--allow-requantize", src, dst, "F32"], check=True, capture_output=True)
    h = hashlib.sha256()
    for tensor in gguf.GGUFReader(dst).tensors:
        h.update(np.asarray(tensor.data).tobytes())
    out["decoded_sha256"][t] = h.hexdigest()
# What llama-quantize refuses without an importance matrix (the message names the tensor).
out["refused_without_imatrix"] = {}
for t in ["IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"]:
    r = subprocess.run([tool, "--pure", f32, f"{work}/refused.gguf", t], capture_output=True, text=True)
    assert r.returncode != 0, t
    m = [l for l in (r.stdout + r.stderr).splitlines() if "offending tensor" in l]
    out["refused_without_imatrix"][t] = m[0].split(":", 1)[1].strip() if m else ""
json.dump(out, sys.stdout, indent=1)
PYEOF
cat tests/golden/smollm2_quantize_imatrix.json >&2
