#!/usr/bin/env bash
# Frugal's calibrated quantizers against llama.cpp's on Gemma 3 270M, judged by the peer's own
# evaluator, in one run. Input: the F32 decoding of the shipped Q4_K_M (llama-quantize
# --allow-requantize … F32). Calibration: Brown ca01–ca10 (llama-imatrix and frugal --calib, 1,024
# tokens in chunks of 512 for both). Judge: `llama-perplexity --kl-divergence` against the F32
# logits on Brown ck01–ck29 (text used neither to calibrate nor to choose any setting: every
# Frugal row runs its defaults), ctx 1024 (past the 512-position sliding window), CHUNKS chunks.
# Prints one table — size, mean KLD, PPL, same top-1, quantize wall time and peak RSS — and each
# Frugal row's KLD and size against llama.cpp's imatrix Q3_K_M (issue #26: KLD ≤ 0.7× at no
# larger size for awq-gptq).
#   bench/gemma3-quality.sh [CHUNKS] [THREADS]    (default 10 chunks, 2 threads)
ASSETS="gemma3 brown" source "$(dirname "$0")/common.sh"
CHUNKS="${1:-10}"; THREADS="${2:-2}"; CTX=1024
W="$CACHE/bench-gemma3"; mkdir -p "$W"
G3="$CACHE/gemma3/gemma-3-270m-q4_k_m.gguf"
F32="$W/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-ck01-ck29.txt"
[ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$G3" "$F32" F32 >"$W/f32.log" 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files ck01-ck29 -o "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -f "$W"/llama-*.gguf "$W"/frugal-*.gguf "$W"/kld-*.log
: >"$W/times.tsv"; : >"$W/results.tsv"
timed() { # label logfile cmd...
  local label="$1" log="$2"; shift 2
  /usr/bin/time -f "%e %M" -o "$W/time.tmp" "$@" >"$log" 2>&1 || { echo "FAILED: $label (see $log)" >&2; tail -5 "$log" >&2; return 1; }
  echo "$label $(cat "$W/time.tmp")" >>"$W/times.tsv"
}

# llama.cpp: the importance matrix on the same 1,024 calibration tokens, then its files.
timed llama-imatrix "$W/imatrix.log" "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c 512 --chunks 2 -t "$THREADS" -o "$W/imatrix.gguf"
timed "llama-Q3_K_M" "$W/llama-Q3_K_M.log" "$BIN/llama-quantize" "$F32" "$W/llama-Q3_K_M.gguf" Q3_K_M "$THREADS"
timed "llama-Q3_K_M-im" "$W/llama-Q3_K_M-im.log" "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-Q3_K_M-im.gguf" Q3_K_M "$THREADS"

fq() { local name="$1"; shift; timed "frugal-$name" "$W/frugal-$name.log" "$FRUGAL" quantize "$F32" "$W/frugal-$name.gguf" --no-eval "$@"; }
fq Q3_K_M --type Q3_K_M
fq Q3_K_M-imatrix --type Q3_K_M --calib "$CAL" --calib-tokens 1024
fq Q3_K_M-gptq --type Q3_K_M --calib "$CAL" --calib-tokens 1024 --method gptq
fq Q3_K_M-awq-gptq --type Q3_K_M --calib "$CAL" --calib-tokens 1024 --method awq-gptq

"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" >"$W/ppl-f32.log" 2>&1
for f in "$W"/llama-*.gguf "$W"/frugal-*.gguf; do
  n="$(basename "$f" .gguf)"
  "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld-$n.log" 2>&1
  echo "$n $f" >>"$W/results.tsv"
done

PY="$(scripts/setup-python.sh)"
"$PY" - "$W" "$CHUNKS" <<'PYEOF'
import os, re, sys
W, chunks = sys.argv[1], sys.argv[2]
times = {}
for line in open(f"{W}/times.tsv"):
    label, s, kb = line.split(); times[label] = (float(s), int(kb) / 1024)
def grab(log, pat):
    m = re.search(pat, log); return float(m.group(1)) if m else float("nan")
rows = {}
for line in open(f"{W}/results.tsv"):
    name, path = line.split()
    log = open(f"{W}/kld-{name}.log").read()
    rows[name] = dict(mib=os.path.getsize(path) / 2**20,
        kld=grab(log, r"Mean\s+KLD:\s+([0-9.]+)"), kse=grab(log, r"Mean\s+KLD:\s+[0-9.]+\s+±\s+([0-9.]+)"),
        ppl=grab(log, r"Mean PPL\(Q\)\s+:\s+([0-9.]+)"), top=grab(log, r"Same top p:\s+([0-9.]+)"),
        time=times.get(name, (float("nan"), float("nan"))))
ppl_f32 = grab(open(f"{W}/ppl-f32.log").read(), r"Final estimate: PPL = ([0-9.]+)")
peer = rows.get("llama-Q3_K_M-im")
print(f"Gemma 3 270M F32 (PPL {ppl_f32:.4f}), judged by llama-perplexity --kl-divergence on Brown ck01-ck29, ctx 1024, {chunks} chunks; calibration Brown ca01-ca10, 1,024 tokens")
print(f"{'file':24} {'MiB':>7} {'mean KLD':>18} {'PPL':>8} {'top-1 %':>8} {'wall s':>7} {'RSS MiB':>8}  {'KLD / llama im':>14} {'size / llama im':>15}")
for name, r in rows.items():
    ratio = size = ""
    if peer and name.startswith("frugal"):
        ratio = f"{r['kld'] / peer['kld']:.3f}"; size = f"{r['mib'] / peer['mib']:.4f}"
    print(f"{name:24} {r['mib']:7.2f} {r['kld']:9.5f} ± {r['kse']:.5f} {r['ppl']:8.4f} {r['top']:8.3f} {r['time'][0]:7.2f} {r['time'][1]:8.0f}  {ratio:>14} {size:>15}")
print(f"llama-imatrix: {times['llama-imatrix'][0]:.1f} s, {times['llama-imatrix'][1]:.0f} MiB (not in the llama rows' wall time)")
PYEOF
