#!/usr/bin/env bash
# Frugal's quantizers against llama.cpp's on SmolLM2, judged by the peer's own evaluator, in one run.
# Same F32 input (`frugal dequantize` of the Q4_1 GGUF, bit-identical to llama-quantize's F32),
# calibration on Brown ca01–ca10 (llama-imatrix and frugal --calib), evaluation on Brown cj01–cj12
# (not used for calibration) with `llama-perplexity --kl-divergence`, ctx 512, CHUNKS chunks,
# THREADS threads. Prints one table: size, bpw, mean KLD, PPL, same top-1, quantize wall time and
# peak RSS, and KLD ratios against the llama.cpp row each Frugal row is meant to beat.
#   bench/quantize-quality.sh [CHUNKS] [THREADS]    (default 20 chunks, 2 threads)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512
W="$CACHE/bench-quality"; mkdir -p "$W"
F32="$W/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; TEXT="$W/eval-cj01-cj12.txt"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
RES="$W/results.tsv"; : >"$RES"
rm -f "$W"/llama-*.gguf "$W"/frugal-*.gguf "$W"/kld-*.log   # no stale rows from earlier runs

timed() { # label logfile cmd... -> appends "label seconds peakKB" to $W/times.tsv
  local label="$1" log="$2"; shift 2
  /usr/bin/time -f "%e %M" -o "$W/time.tmp" "$@" >"$log" 2>&1 || { echo "FAILED: $label (see $log)" >&2; tail -5 "$log" >&2; return 1; }
  echo "$label $(cat "$W/time.tmp")" >>"$W/times.tsv"
}
: >"$W/times.tsv"

# llama.cpp: importance matrix on the calibration text, then its quantizations.
timed llama-imatrix "$W/imatrix.log" "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c $CTX -t "$THREADS" -o "$W/imatrix.gguf"
for T in Q8_0 Q4_K_M Q4_1 Q4_0 Q2_K; do
  timed "llama $T" "$W/llama-$T.log" "$BIN/llama-quantize" "$F32" "$W/llama-$T.gguf" "$T" "$THREADS"
  [ "$T" = Q8_0 ] || timed "llama $T imatrix" "$W/llama-$T-im.log" "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-$T-im.gguf" "$T" "$THREADS"
done

# Size budget of llama.cpp's imatrix files, in bits per quantized weight, for --target-bpw.
PY="$(scripts/setup-python.sh)"
bpw_of() { "$PY" - "$1" <<'PYEOF'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1]); b = n = 0
for t in r.tensors:
    if len([d for d in t.shape if d > 1]) >= 2 and t.tensor_type not in (0, 1):
        b += int(t.n_bytes); n += int(t.n_elements)
print(f"{8 * b / n:.6f}")
PYEOF
}
BPW_Q4KM=$(bpw_of "$W/llama-Q4_K_M-im.gguf")

# Frugal.
fq() { local name="$1"; shift; timed "frugal $name" "$W/frugal-$name.log" "$FRUGAL" quantize "$F32" "$W/frugal-$name.gguf" --no-eval "$@"; }
fq Q4_K_M --type Q4_K_M
fq Q4_K_M-imatrix --type Q4_K_M --calib "$CAL"
fq Q4_K_M-gptq --type Q4_K_M --calib "$CAL" --method gptq
fq Q4_K_M-gptq-budget --type Q4_K_M --calib "$CAL" --method gptq --target-bpw "$BPW_Q4KM"
fq Q4_K_M-awq-gptq --type Q4_K_M --calib "$CAL" --method awq-gptq
fq Q4_0-gptq --type Q4_0 --calib "$CAL" --method gptq
fq Q4_0-awq --type Q4_0 --calib "$CAL" --method awq
fq Q4_0-awq-gptq --type Q4_0 --calib "$CAL" --method awq-gptq
fq Q2_K-gptq --type Q2_K --calib "$CAL" --method gptq
fq Q2_K-awq-gptq --type Q2_K --calib "$CAL" --method awq-gptq

# The peer's judge: llama-perplexity with KL divergence against the F32 logits.
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" >"$W/ppl-f32.log" 2>&1
judge() { # name file
  "$BIN/llama-perplexity" -m "$2" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld-$1.log" 2>&1
  echo "$1 $2" >>"$RES"
}
for f in "$W"/llama-*.gguf "$W"/frugal-*.gguf; do
  n="$(basename "$f" .gguf)"; judge "$n" "$f"
done

"$PY" - "$W" <<'PYEOF'
import os, re, sys
W = sys.argv[1]
times = {}
for line in open(f"{W}/times.tsv"):
    *label, s, kb = line.split(); times[" ".join(label)] = (float(s), int(kb) / 1024)
def grab(log, pat):
    m = re.search(pat, log); return float(m.group(1)) if m else float("nan")
rows = {}
for line in open(f"{W}/results.tsv"):
    name, path = line.split()
    log = open(f"{W}/kld-{name}.log").read()
    n_el = 134515008
    rows[name] = dict(mib=os.path.getsize(path) / 2**20, bpw=os.path.getsize(path) * 8 / n_el,
        kld=grab(log, r"Mean\s+KLD:\s+([0-9.]+)"), ppl=grab(log, r"Mean PPL\(Q\)\s+:\s+([0-9.]+)"),
        top=grab(log, r"Same top p:\s+([0-9.]+)"))
    key = name.replace("llama-", "llama ").replace("frugal-", "frugal ")
    if key.endswith("-im"):
        key = key[:-3] + " imatrix"
    rows[name]["time"] = times.get(key, (float("nan"), float("nan")))
ppl_f32 = grab(open(f"{W}/ppl-f32.log").read(), r"Final estimate: PPL = ([0-9.]+)")
# Which llama.cpp row each Frugal row is measured against.
peer = {"frugal-Q4_K_M": "llama-Q4_K_M", "frugal-Q4_K_M-imatrix": "llama-Q4_K_M-im",
        "frugal-Q4_K_M-gptq": "llama-Q4_K_M-im", "frugal-Q4_K_M-gptq-budget": "llama-Q4_K_M-im",
        "frugal-Q4_K_M-awq-gptq": "llama-Q4_K_M-im",
        "frugal-Q4_0-gptq": "llama-Q4_0-im", "frugal-Q4_0-awq": "llama-Q4_0-im",
        "frugal-Q4_0-awq-gptq": "llama-Q4_0-im",
        "frugal-Q2_K-gptq": "llama-Q2_K-im", "frugal-Q2_K-awq-gptq": "llama-Q2_K-im"}
print(f"SmolLM2-135M F32 (PPL {ppl_f32:.4f}), judged by llama-perplexity --kl-divergence on Brown cj01-cj12; calibration Brown ca01-ca10")
print(f"{'file':28} {'MiB':>7} {'bpw':>6} {'mean KLD':>9} {'PPL':>8} {'top-1 %':>8} {'wall s':>7} {'RSS MiB':>8}  {'KLD / peer':>10} {'size / peer':>11}")
for name, r in rows.items():
    ratio = size = ""
    if name in peer and peer[name] in rows:
        p = rows[peer[name]]
        ratio = f"{r['kld'] / p['kld']:.3f}"; size = f"{r['mib'] / p['mib']:.4f}"
    print(f"{name:28} {r['mib']:7.2f} {r['bpw']:6.3f} {r['kld']:9.5f} {r['ppl']:8.4f} {r['top']:8.3f} {r['time'][0]:7.2f} {r['time'][1]:8.0f}  {ratio:>10} {size:>11}")
print(f"llama-imatrix: {times['llama-imatrix'][0]:.1f} s, {times['llama-imatrix'][1]:.0f} MiB (not included in the llama rows' wall time)")
PYEOF
