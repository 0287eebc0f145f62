#!/usr/bin/env bash
# The tail limit (issue #28, item 6): `frugal tune --max-kld-p999 X` against the smallest
# llama.cpp imatrix file of SmolLM2 whose 99.9th-percentile KLD meets X, both judged by
# `llama-perplexity --kl-divergence` on the held-out text tune verifies on (Brown ck01–ck12,
# ctx 512, CHUNKS chunks, against the F32 logits). Reuses bench/frontier-vs-llama.sh's files
# (run it first, with the same CHUNKS): its 26 llama.cpp files and their judge logs on ck01–ck12,
# and its F32 logits. tune searches on Brown cb01–cb10 (editorial) and calibrates on its default
# Brown mix (the last two files of every genre: none of cb01–cb10 or ck01–ck12).
#   bench/tail-vs-llama.sh [CHUNKS] [THREADS] [LIMITS]   (default 20 2 "0.5"; ~7 min a limit)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; LIMITS="${3:-0.5}"; CTX=512
F="$CACHE/bench-frontier"; W="$CACHE/bench-tail"; mkdir -p "$W"
F32="$F/f32.gguf"; TEST="$F/ck01-ck12.txt"; BASE="$F/f32-TEST.kld"
for need in "$F32" "$TEST" "$BASE" "$F/kld-TEST-llama-Q8_0.log"; do
  [ -f "$need" ] || { echo "missing $need: run bench/frontier-vs-llama.sh $CHUNKS first" >&2; exit 2; }
done
grep -q "computing over $CHUNKS chunks" "$F/kld-TEST-llama-Q8_0.log" \
  || { echo "the frontier's logs are not of $CHUNKS chunks" >&2; exit 2; }
SEARCH="$W/cb01-cb10.txt"; "$FRUGAL" brown-text --files cb01-cb10 -o "$SEARCH" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"
: >"$W/times.tsv"
for L in $LIMITS; do
  rm -f "$W/tune-$L.gguf"*
  timed "tune-$L" "$W/tune-$L.log" "$FRUGAL" tune "$F32" -o "$W/tune-$L.gguf" --max-kld-p999 "$L" \
    --eval "$SEARCH" --heldout "$TEST" --eval-chunks "$CHUNKS" --no-energy
  "$BIN/llama-perplexity" -m "$W/tune-$L.gguf" -f "$TEST" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX \
    --kl-divergence-base "$BASE" --kl-divergence >"$W/kld-TEST-tune-$L.log" 2>&1
done
python3 - "$F" "$W" "$LIMITS" <<'PYEOF'
import glob, os, re, sys
F, W, limits = sys.argv[1], sys.argv[2], sys.argv[3].split()
def judged(log):
    t = open(log).read()
    p999 = re.search(r"^99\.9%\s+KLD:\s+([0-9.]+)", t, re.M)
    mean = re.search(r"Mean\s+KLD:\s+([0-9.]+)", t)
    return float(p999.group(1)), float(mean.group(1))
llama = []
for log in glob.glob(f"{F}/kld-TEST-llama-*.log"):
    n = os.path.basename(log)[len("kld-TEST-"):-4]
    llama.append((os.path.getsize(f"{F}/{n}.gguf") / 2**20, n, *judged(log)))
llama.sort()
times = dict((l.split()[0], float(l.split()[1])) for l in open(f"{W}/times.tsv"))
print("SmolLM2-135M; 99.9th-percentile KLD by llama-perplexity on Brown ck01-ck12 (tune's held-out text)")
print(f"{'limit':>6}  {'smallest llama.cpp file meeting it':34} {'MiB':>7} {'p99.9':>8}   {'frugal tune':>11} {'p99.9':>8} {'mean':>8} {'size ratio':>10} {'tune s':>7}")
for L in limits:
    peer = next((r for r in llama if r[2] <= float(L)), None)
    mib = os.path.getsize(f"{W}/tune-{L}.gguf") / 2**20
    p, m = judged(f"{W}/kld-TEST-tune-{L}.log")
    ok = "" if p <= float(L) else "  (limit missed)"
    if peer:
        print(f"{L:>6}  {peer[1]:34} {peer[0]:7.2f} {peer[2]:8.4f}   {mib:11.2f} {p:8.4f} {m:8.5f} {mib / peer[0]:10.3f} {times[f'tune-{L}']:7.1f}{ok}")
    else:
        print(f"{L:>6}  {'(none meets it)':34} {'':7} {'':8}   {mib:11.2f} {p:8.4f} {m:8.5f} {'':10} {times[f'tune-{L}']:7.1f}{ok}")
PYEOF
