#!/usr/bin/env bash
# The quality frontier (issue #28): every llama.cpp imatrix file of SmolLM2 from IQ1_S to Q8_0
# against Frugal's best file of equal or smaller size, in one run, judged by the peer's own
# evaluator on text used neither to calibrate nor to choose:
#   - same F32 input (`frugal dequantize` of the SmolLM2 Q4_1 GGUF), same calibration text
#     (Brown ca01–ca10: llama-imatrix's file for llama-quantize, `--calib` for Frugal);
#   - llama.cpp: `llama-quantize --imatrix` for each named type in $LLAMA_TYPES (26 by default);
#   - Frugal: `frugal quantize --target-bpw B` for each B in $BPWS with importance-weighted
#     rounding (rtn; the budget prices each type's rounded input, so F16 is a candidate), for
#     each B in $GPTQ_BPWS with GPTQ (`--method gptq`; its budget offers only the types GPTQ
#     rounds), and $PURE_TYPES with AWQ+GPTQ on the type's own grid. The default B are the
#     budgets whose files fall just under each llama.cpp size (file MiB ≈ 16.04·B + 1.7);
#   - every file judged with `llama-perplexity --kl-divergence` (ctx 512, CHUNKS chunks) on
#     Brown cj01–cj12 (learned), where Frugal's best file of each size is chosen, and on Brown
#     ck01–ck12 (fiction), where the chosen file is re-measured (data not used to choose).
# Prints every file's MiB and KLD on both texts, then per llama.cpp file the chosen Frugal file
# and the ratio of their KLD on the re-measuring text (the issue's target: at most 0.6×).
#   bench/frontier-vs-llama.sh [CHUNKS] [THREADS]
#   (default 20 chunks, 2 threads; about 80 minutes on 2 cores)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512
LLAMA_TYPES="${LLAMA_TYPES:-IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_XS IQ4_NL Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0}"
BPWS="${BPWS:-4.78 4.82 4.87 4.92 4.98 5.06 5.13 5.25 5.29 5.34 5.45 5.69 5.74 5.96 6.14 6.43 6.53 8.12 8.50}"
GPTQ_BPWS="${GPTQ_BPWS:-4.78 4.87 4.98 5.06 5.13 5.25 5.34 5.45}"
PURE_TYPES="${PURE_TYPES:-IQ4_NL IQ4_XS}"
W="$CACHE/bench-frontier"; mkdir -p "$W"
F32="$W/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; CHOOSE="$W/cj01-cj12.txt"; TEST="$W/ck01-ck12.txt"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$CHOOSE" 2>/dev/null
"$FRUGAL" brown-text --files ck01-ck12 -o "$TEST" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -rf "$W"/llama-*.gguf "$W"/frugal-*.gguf* "$W"/kld-*.log
: >"$W/times.tsv"
timed llama-imatrix "$W/imatrix.log" "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c $CTX -t "$THREADS" -o "$W/imatrix.gguf"
for T in $LLAMA_TYPES; do
  timed "llama-$T" "$W/llama-$T.log" "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-$T.gguf" "$T" "$THREADS"
done
fq() { local name="$1"; shift; timed "frugal-$name" "$W/frugal-$name.log" "$FRUGAL" quantize "$F32" "$W/frugal-$name.gguf" --no-eval --calib "$CAL" "$@"; }
for B in $BPWS; do fq "bpw$B-rtn" --type Q4_K_M --target-bpw "$B"; done
for B in $GPTQ_BPWS; do fq "bpw$B-gptq" --type Q4_K_M --target-bpw "$B" --method gptq; done
for T in $PURE_TYPES; do fq "$T-awq-gptq" --type "$T" --method awq-gptq; done
judge_kld CHOOSE TEST
PY="$(scripts/setup-python.sh)"
"$PY" - "$W" <<'PYEOF'
import os, re, sys, glob
W = sys.argv[1]
times = {}
for line in open(f"{W}/times.tsv"):
    label, s, kb = line.split(); times[label] = (float(s), int(kb) / 1024)
def kld(text, name):
    m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", open(f"{W}/kld-{text}-{name}.log").read())
    return float(m.group(1)) if m else float("nan")
names = [os.path.basename(p)[:-5] for p in glob.glob(f"{W}/*.gguf") if os.path.basename(p).startswith(("llama-", "frugal-"))]
n_el = 134515008
rows = {n: dict(mib=os.path.getsize(f"{W}/{n}.gguf") / 2**20, choose=kld("CHOOSE", n), test=kld("TEST", n), t=times.get(n, (float("nan"),) * 2)) for n in names}
rows = dict(sorted(rows.items(), key=lambda e: (e[1]["mib"], e[0])))
print(f"SmolLM2-135M; calibration Brown ca01-ca10; llama-perplexity --kl-divergence, mean KLD on cj01-cj12 (choose) and ck01-ck12 (re-measure)")
print(f"{'file':24} {'MiB':>7} {'bpw':>6} {'KLD cj':>9} {'KLD ck':>9} {'wall s':>7} {'RSS MiB':>8}")
for n, r in rows.items():
    print(f"{n:24} {r['mib']:7.2f} {r['mib'] * 2**20 * 8 / n_el:6.3f} {r['choose']:9.5f} {r['test']:9.5f} {r['t'][0]:7.2f} {r['t'][1]:8.0f}")
print()
print(f"{'llama.cpp file':18} {'MiB':>7} {'KLD ck':>9}   {'Frugal chosen on cj':24} {'MiB':>7} {'KLD ck':>9} {'ratio':>6}")
met = 0
peers = [n for n in rows if n.startswith("llama-")]
for p in peers:
    peer = rows[p]
    cands = {n: r for n, r in rows.items() if n.startswith("frugal-") and r["mib"] <= peer["mib"] + 1e-9}
    if not cands:
        print(f"{p:18} {peer['mib']:7.2f} {peer['test']:9.5f}   (no Frugal file this small)")
        continue
    best = min(cands, key=lambda n: cands[n]["choose"])
    ratio = cands[best]["test"] / peer["test"]
    met += ratio <= 0.6
    print(f"{p:18} {peer['mib']:7.2f} {peer['test']:9.5f}   {best:24} {cands[best]['mib']:7.2f} {cands[best]['test']:9.5f} {ratio:6.3f}")
print(f"at most 0.6x llama.cpp's KLD on the re-measuring text: {met} of {len(peers)} llama.cpp files")
PYEOF
