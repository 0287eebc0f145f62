#!/usr/bin/env bash
# The IQ types (issue #28) side by side with llama.cpp, in one run, judged by the peer's own
# evaluator on text used neither to calibrate nor to choose:
#   - same F32 input (`frugal dequantize` of the SmolLM2 Q4_1 GGUF);
#   - calibration on Brown ca01–ca10 (llama-imatrix, and Frugal's --calib / --imatrix);
#   - llama.cpp's types or mixes named in $TYPES (default IQ4_NL IQ4_XS) with its imatrix, and
#     Q4_0 for the size;
#   - Frugal: the same types from llama's imatrix file (byte-identical, so the same KLD — the
#     check that --imatrix reads it as llama-quantize does), with its own importance matrix,
#     GPTQ and AWQ+GPTQ on the types' own grids (the lattice types group by group);
#   - judged with `llama-perplexity --kl-divergence` (ctx 512, CHUNKS chunks) on two texts:
#     Brown cj01–cj12 (learned) — where the best Frugal file of each size is chosen — and Brown
#     ck01–ck12 (fiction) — where the chosen file is re-measured (data not used to choose).
# Prints one table: MiB, bpw, mean KLD on both texts, quantize wall time, and each chosen Frugal
# file's KLD over llama.cpp's of the same type on the re-measuring text.
#   [TYPES="IQ3_XXS IQ2_M"] bench/iq-vs-llama.sh [CHUNKS] [THREADS]
#   (default 20 chunks, 2 threads; about 12 minutes a type)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512; TYPES="${TYPES:-IQ4_NL IQ4_XS}"; export TYPES
W="$CACHE/bench-iq"; mkdir -p "$W"
F32="$W/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; CHOOSE="$W/cj01-cj12.txt"; TEST="$W/ck01-ck12.txt"
[ -f "$F32" ] || "$FRUGAL" dequantize "$Q41" "$F32" >/dev/null 2>&1
"$FRUGAL" brown-text --files ca01-ca10 -o "$CAL" 2>/dev/null
"$FRUGAL" brown-text --files cj01-cj12 -o "$CHOOSE" 2>/dev/null
"$FRUGAL" brown-text --files ck01-ck12 -o "$TEST" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
rm -f "$W"/llama-*.gguf "$W"/frugal-*.gguf "$W"/kld-*.log
: >"$W/times.tsv"
timed llama-imatrix "$W/imatrix.log" "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c $CTX -t "$THREADS" -o "$W/imatrix.gguf"
for T in $TYPES Q4_0; do
  timed "llama-$T" "$W/llama-$T.log" "$BIN/llama-quantize" --imatrix "$W/imatrix.gguf" "$F32" "$W/llama-$T.gguf" "$T" "$THREADS"
done
fq() { local name="$1"; shift; timed "frugal-$name" "$W/frugal-$name.log" "$FRUGAL" quantize "$F32" "$W/frugal-$name.gguf" --no-eval "$@"; }
for T in $TYPES; do
  fq "$T-llama-imatrix" --type "$T" --imatrix "$W/imatrix.gguf"
  fq "$T-imatrix" --type "$T" --calib "$CAL"
  fq "$T-gptq" --type "$T" --calib "$CAL" --method gptq
  fq "$T-awq-gptq" --type "$T" --calib "$CAL" --method awq-gptq
done
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
names = sorted(os.path.basename(p)[:-5] for p in glob.glob(f"{W}/*.gguf") if os.path.basename(p).startswith(("llama-", "frugal-")))
n_el = 134515008
rows = {n: dict(mib=os.path.getsize(f"{W}/{n}.gguf") / 2**20, choose=kld("CHOOSE", n), test=kld("TEST", n), t=times.get(n, (float("nan"),) * 2)) for n in names}
print(f"SmolLM2-135M; calibration Brown ca01-ca10; llama-perplexity --kl-divergence, KLD on cj01-cj12 (choose) and ck01-ck12 (re-measure)")
print(f"{'file':28} {'MiB':>7} {'bpw':>6} {'KLD cj':>9} {'KLD ck':>9} {'wall s':>7} {'RSS MiB':>8}")
for n, r in rows.items():
    print(f"{n:28} {r['mib']:7.2f} {r['mib'] * 2**20 * 8 / n_el:6.3f} {r['choose']:9.5f} {r['test']:9.5f} {r['t'][0]:7.2f} {r['t'][1]:8.0f}")
for T in os.environ["TYPES"].split():
    peer = rows[f"llama-{T}"]
    cands = {n: r for n, r in rows.items() if n.startswith(f"frugal-{T}") and r["mib"] <= peer["mib"] + 1e-9}
    best = min(cands, key=lambda n: cands[n]["choose"])
    same = rows[f"frugal-{T}-llama-imatrix"]
    print(f"{T}: Frugal from llama's imatrix file KLD {same['test']:.5f} vs llama {peer['test']:.5f} (same bytes); "
          f"chosen on cj: {best}, on ck {cands[best]['test']:.5f} = {cands[best]['test'] / peer['test']:.3f}x llama-{T}, "
          f"and {cands[best]['test'] / rows['llama-Q4_0']['test']:.3f}x llama-Q4_0 ({rows['llama-Q4_0']['mib']:.2f} MiB)")
print(f"llama-imatrix: {times['llama-imatrix'][0]:.1f} s (not in the llama rows' wall time)")
PYEOF
