#!/usr/bin/env bash
# The quality frontier (issue #28): every llama.cpp imatrix file of a model from IQ1_S to Q8_0
# against Frugal's best file of equal or smaller size, in one run, judged by the peer's own
# evaluator on text used neither to calibrate nor to choose:
#   - same F32 input (SmolLM2: `frugal dequantize` of its Q4_1 GGUF; MODEL=gemma3: Gemma 3
#     270M's Q4_K_M decoded by `llama-quantize --allow-requantize … F32`), same calibration text
#     (Brown ca01–ca10: llama-imatrix's file for llama-quantize, `--calib` for Frugal);
#   - llama.cpp: `llama-quantize --imatrix` for each named type in $LLAMA_TYPES (26 by default);
#   - Frugal: `frugal imatrix --gains` once (the importance matrix, input rounding and KL gains,
#     as llama-imatrix runs once), then `frugal quantize --imatrix IT --target-bpw B` for each B
#     in $BPWS with importance-weighted rounding (rtn; the budget prices each type's rounded
#     input, so F16 is a candidate), for
#     each B in $GPTQ_BPWS with GPTQ (`--method gptq`; the same candidates, a float choice
#     written as it is), and $PURE_TYPES with AWQ+GPTQ on the type's own grid. BPWS=auto (Gemma's
#     default) sets one budget per llama.cpp file, just under its size: B = (its bytes − the
#     file's fixed part) · 8 / parameters, less 0.002, read off the files llama-quantize wrote
#     before any file is judged;
#   - every file judged with `llama-perplexity --kl-divergence` (ctx 512, CHUNKS chunks) on
#     Brown cj01–cj12 (learned), where Frugal's best file of each size is chosen, and on Brown
#     ck01–ck12 (fiction), where the chosen file is re-measured (data not used to choose).
# Prints every file's MiB and KLD on both texts, then per llama.cpp file the chosen Frugal file
# and the ratio of their KLD on the re-measuring text (the issue's target: at most 0.6×).
#   bench/frontier-vs-llama.sh [CHUNKS] [THREADS]
#   (default 20 chunks, 2 threads; about 80 minutes on 2 cores)
# KEEP_LLAMA=1 keeps the last run's llama.cpp files and judge logs and remakes only Frugal's.
#   MODEL=gemma3 bench/frontier-vs-llama.sh 8 2   (13 llama.cpp types by default, BPWS=auto,
#   no GPTQ or AWQ rows; its 262,144-token vocabulary makes every step about 2.5× SmolLM2's)
MODEL="${MODEL:-smollm2}"
case "$MODEL" in
  smollm2) ASSETS="smollm2 brown" ;;
  gemma3) ASSETS="gemma3 brown" ;;
  *) echo "MODEL: smollm2 or gemma3" >&2; exit 2 ;;
esac
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512
if [ "$MODEL" = smollm2 ]; then
  LLAMA_TYPES="${LLAMA_TYPES:-IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_XS IQ4_NL Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0}"
  BPWS="${BPWS:-4.78 4.82 4.87 4.92 4.98 5.06 5.13 5.25 5.29 5.34 5.45 5.69 5.74 5.96 6.14 6.43 6.53 8.12 8.50}"
  GPTQ_BPWS="${GPTQ_BPWS:-4.78 4.87 4.98 5.06 5.13 5.25 5.34 5.45}"
  PURE_TYPES="${PURE_TYPES:-IQ4_NL IQ4_XS}"
  W="$CACHE/bench-frontier"; F32="$W/f32.gguf"; LABEL="SmolLM2-135M"
  mkdir -p "$W"; [ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
else
  LLAMA_TYPES="${LLAMA_TYPES:-IQ1_M IQ2_XXS IQ2_M IQ3_XXS IQ3_M IQ4_XS IQ4_NL Q3_K_M Q4_0 Q4_K_M Q5_K_M Q6_K Q8_0}"
  BPWS="${BPWS:-auto}"; GPTQ_BPWS="${GPTQ_BPWS:-}"; PURE_TYPES="${PURE_TYPES:-}"
  W="$CACHE/bench-frontier-gemma3"; F32="$W/f32.gguf"; LABEL="Gemma-3-270M"
  mkdir -p "$W"; [ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf" "$F32" F32 >/dev/null 2>&1
fi
CAL="$W/calib-ca01-ca10.txt"; CHOOSE="$W/cj01-cj12.txt"; TEST="$W/ck01-ck12.txt"
read -r N_EL FIXED < <("$FRUGAL" inspect --json "$F32" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["n_parameters"], d["file_size"] - d["tensor_bytes"])')
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$CHOOSE" 2>/dev/null
"$FRUGAL" brown-text --files ck01-ck12 -o "$TEST" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -rf "$W"/frugal-*.gguf* "$W"/kld-*-frugal-*.log
if [ "${KEEP_LLAMA:-0}" = 1 ]; then
  # The llama.cpp files, their judge logs and the F32 logits of the last run (same inputs,
  # same CHUNKS) are kept: only Frugal's files are made and judged again.
  grep -v '^frugal-' "$W/times.tsv" >"$W/times.keep" || true; mv "$W/times.keep" "$W/times.tsv"
else
  rm -rf "$W"/llama-*.gguf "$W"/kld-*.log "$W"/f32-*.kld
  : >"$W/times.tsv"
  timed llama-imatrix "$W/imatrix.log" "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c $CTX -t "$THREADS" -o "$W/imatrix.gguf"
  for T in $LLAMA_TYPES; do
    timed "llama-$T" "$W/llama-$T.log" "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-$T.gguf" "$T" "$THREADS"
  done
fi
if [ "$BPWS" = auto ]; then
  BPWS="$(for f in "$W"/llama-*.gguf; do stat -c %s "$f"; done | sort -un | awk -v n="$N_EL" -v fx="$FIXED" '{ printf "%.3f ", int(((($1 - fx) * 8 / n) - 0.002) * 1000) / 1000 }')"
  echo "budgets (bits per weight, just under each llama.cpp size): $BPWS" >&2
fi
# Frugal's calibration once, as llama-imatrix's: the importance matrix with the input rounding
# and the KL gains every budget weighs by (`frugal imatrix --gains`), read by each budget's run.
IM="$W/imatrix-frugal.gguf"
timed frugal-imatrix "$W/imatrix-frugal.log" "$FRUGAL" imatrix "$F32" --calib "$CAL" --gains -o "$IM"
fq() { local name="$1"; shift; timed "frugal-$name" "$W/frugal-$name.log" "$FRUGAL" quantize "$F32" "$W/frugal-$name.gguf" --no-eval --calib "$CAL" "$@"; }
for B in $BPWS; do fq "bpw$B-rtn" --type Q4_K_M --target-bpw "$B" --imatrix "$IM"; done
for B in $GPTQ_BPWS; do fq "bpw$B-gptq" --type Q4_K_M --target-bpw "$B" --method gptq --imatrix "$IM"; done
for T in $PURE_TYPES; do fq "$T-awq-gptq" --type "$T" --method awq-gptq; done
judge_kld CHOOSE TEST
PY="$(scripts/setup-python.sh)"
"$PY" - "$W" "$N_EL" "$LABEL" <<'PYEOF'
import os, re, sys, glob
W, n_el, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
times = {}
for line in open(f"{W}/times.tsv"):
    name, s, kb = line.split(); times[name] = (float(s), int(kb) / 1024)
def kld(text, name):
    m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", open(f"{W}/kld-{text}-{name}.log").read())
    return float(m.group(1)) if m else float("nan")
names = [os.path.basename(p)[:-5] for p in glob.glob(f"{W}/*.gguf") if os.path.basename(p).startswith(("llama-", "frugal-"))]
rows = {n: dict(mib=os.path.getsize(f"{W}/{n}.gguf") / 2**20, choose=kld("CHOOSE", n), test=kld("TEST", n), t=times.get(n, (float("nan"),) * 2)) for n in names}
rows = dict(sorted(rows.items(), key=lambda e: (e[1]["mib"], e[0])))
print(f"{label}; calibration Brown ca01-ca10; llama-perplexity --kl-divergence, mean KLD on cj01-cj12 (choose) and ck01-ck12 (re-measure)")
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
for name in ("llama-imatrix", "frugal-imatrix"):
    if name in times:
        print(f"{name}: {times[name][0]:.2f} s, {times[name][1]:.0f} MiB (calibration, once; Frugal's with the gains its budgets read)")
PYEOF
