#!/usr/bin/env bash
# Issue #8, the energy objective: `frugal tune --objective energy` against `--objective size` and
# against every llama.cpp file (of bench/tune-vs-llama.sh) that meets the same KLD limit, all
# run on the same inference workload — `frugal measure`'s (a 32-token Brown prompt fed through
# the key/value cache and 16 generated tokens, weights as stored, 4 queries per metered run) —
# and judged by the peer's evaluator (llama-perplexity --kl-divergence on Brown cj01-cj12).
# The files are measured in ROUNDS interleaved rounds of 2 metered runs each (a shared machine
# drifts by ~10 % over minutes: measuring one file after another would put the drift between
# files); J/token is the mean over every run of a file with its 95 % Student-t interval.
# llama-bench's generation speed (tg32) of each file is printed beside it: the peer's own
# kernels rank the types differently from candle's, which Frugal's runtime uses.
#
#   bench/tune-energy.sh [LIMITS] [THREADS] [ROUNDS]   (default "0.03" 2 3; ~25 min on 2 cores)
#   SKIP_TUNE=1 bench/tune-energy.sh …                 (measure again, keeping the tuned files)
#
# Needs bench/tune-vs-llama.sh's files in $CACHE/bench-tune (it is run first when they are
# missing).
source "$(dirname "$0")/common.sh"
LIMITS="${1:-0.03}"; THREADS="${2:-2}"; ROUNDS="${3:-3}"; CHUNKS=20; CTX=512
Q="$CACHE/bench-quality"; W="$CACHE/bench-tune"; E="$CACHE/bench-tune-energy"
F32="$Q/f32.gguf"; CAL="$W/calib-ca01-ca10.txt"; HELD="$W/eval-cj01-cj12.txt"; SEARCH="$W/search-cj13-cj40.txt"
[ -f "$W/f32-$CHUNKS.kld" ] && [ -f "$W/llama-Q8_0.gguf" ] || bench/tune-vs-llama.sh "$CHUNKS" "$THREADS"
export RAYON_NUM_THREADS="$THREADS"
[ "${SKIP_TUNE:-0}" = 1 ] || rm -rf "$E"
mkdir -p "$E"; rm -f "$E"/measure-*.json "$E"/bench-*.json
kld() { grep -oP 'Mean\s+KLD:\s+\K[0-9.]+' "$1" || echo nan; }

for L in $LIMITS; do
  [ "${SKIP_TUNE:-0}" = 1 ] && break
  for O in size energy; do
    /usr/bin/time -f "%e" -o "$E/time-$O-$L" "$FRUGAL" tune "$F32" -o "$E/tune-$O-$L.gguf" \
      --max-kld "$L" --objective "$O" --calib "$CAL" --eval "$SEARCH" --heldout "$HELD" \
      --eval-chunks 8 --json >"$E/tune-$O-$L.json" 2>"$E/tune-$O-$L.err" \
      || { echo "frugal tune $O $L failed:" >&2; tail -3 "$E/tune-$O-$L.err" >&2; continue; }
    "$BIN/llama-perplexity" -m "$E/tune-$O-$L.gguf" -f "$HELD" -c $CTX --chunks "$CHUNKS" -t "$THREADS" \
      -b $CTX --kl-divergence-base "$W/f32-$CHUNKS.kld" --kl-divergence >"$E/kld-tune-$O-$L.log" 2>&1
  done
done

# Every file to measure: the reference, the tuned ones, and the llama.cpp files that meet the
# largest limit (the IQ types, which candle cannot multiply, are left out).
MAXL="$(printf '%s\n' $LIMITS | sort -g | tail -1)"
: >"$E/files.tsv"
echo -e "f32\t$F32\t0" >>"$E/files.tsv"
for f in "$E"/tune-*.gguf; do
  n="$(basename "$f" .gguf)"; echo -e "$n\t$f\t$(kld "$E/kld-$n.log")" >>"$E/files.tsv"
done
for f in "$W"/llama-Q*.gguf; do
  n="$(basename "$f" .gguf)"; k="$(kld "$W/kld-$n.log")"
  python3 -c "import sys; sys.exit(0 if float('$k') <= $MAXL else 1)" && echo -e "$n\t$f\t$k" >>"$E/files.tsv"
done
for ((r = 1; r <= ROUNDS; r++)); do
  while IFS=$'\t' read -r n f k; do
    "$FRUGAL" measure "$f" --queries 4 --repeats 2 --warmup 1 --tokens 16 --json >"$E/measure-$n-$r.json" 2>"$E/measure-$n.err" \
      || echo "frugal measure $n failed" >&2
  done <"$E/files.tsv"
done
while IFS=$'\t' read -r n f k; do
  "$BIN/llama-bench" -m "$f" -p 0 -n 32 -r 3 -t "$THREADS" -o json >"$E/bench-$n.json" 2>/dev/null \
    || echo "llama-bench $n failed" >&2
done <"$E/files.tsv"

python3 - "$E" "$LIMITS" <<'PYEOF'
import glob, json, math, os, statistics, sys
E, limits = sys.argv[1], [float(x) for x in sys.argv[2].split()]
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]
rows = []
for line in open(f"{E}/files.tsv"):
    n, f, k = line.rstrip("\n").split("\t")
    ms = [json.load(open(p)) for p in sorted(glob.glob(f"{E}/measure-{n}-*.json")) if os.path.getsize(p)]
    if ms:
        # Every metered run of every round: J per generated token, and tokens per second.
        per = [(r["joules"] / (m["queries"] * m["units_per_query"]), m["queries"] * m["units_per_query"] / r["seconds"]) for m in ms for r in m["runs"]]
        js = [p[0] for p in per]
        j = statistics.mean(js)
        half = T95[min(len(js) - 2, 9)] * statistics.stdev(js) / math.sqrt(len(js)) if len(js) > 1 else float("nan")
        lo, hi = j - half, j + half
        how = "measured" if all(m["energy"]["sources"] and all(s["provenance"]["kind"] == "measured" for s in m["energy"]["sources"]) for m in ms) else "estimated"
        tps = statistics.mean(p[1] for p in per)
    else:
        j = lo = hi = tps = float("nan"); how = "-"
    try:
        b = json.load(open(f"{E}/bench-{n}.json"))
        lb = b[0]["avg_ts"]
    except Exception:
        lb = float("nan")
    rows.append(dict(name=n, mib=os.path.getsize(f) / 2**20, kld=float(k), j=j, ci=(hi - lo) / 2, how=how, tps=tps, lb=lb))
print(f"Same workload for every file: frugal measure --queries 4 --repeats 2 --warmup 1 --tokens 16 (KV cache, weights as stored), {len(glob.glob(f'{E}/measure-f32-*.json'))} interleaved rounds")
print(f"{'file':22} {'MiB':>8} {'KLD':>8} {'J/token':>8} {'±95%':>6} {'tok/s':>6} {'llama-bench tg32 t/s':>21}")
for r in sorted(rows, key=lambda r: r["j"]):
    print(f"{r['name']:22} {r['mib']:8.2f} {r['kld']:8.5f} {r['j']:8.3f} {r['ci']:6.3f} {r['tps']:6.2f} {r['lb']:21.1f}")
print(f"(energy {rows[0]['how']}; provenance in measure-*.json)")
print()
print(f"{'limit':>6} {'objective':9} {'MiB':>8} {'KLD':>8} {'J/token':>8}   {'lowest-energy llama.cpp file':28} {'J/token':>8} {'energy ratio':>12}   {'smallest llama.cpp':20} {'MiB':>8} {'size ratio':>10} {'tune s':>7}")
for L in limits:
    llama = [r for r in rows if r["name"].startswith("llama-") and r["kld"] <= L]
    le = min(llama, key=lambda r: r["j"]) if llama else None
    ls = min(llama, key=lambda r: r["mib"]) if llama else None
    for o in ("size", "energy"):
        t = next((r for r in rows if r["name"] == f"tune-{o}-{L:g}"), None)
        if t is None:
            print(f"{L:6g} {o:9} (tune failed)"); continue
        secs = float(open(f"{E}/time-{o}-{L:g}").read().split()[0])
        print(f"{L:6g} {o:9} {t['mib']:8.2f} {t['kld']:8.5f} {t['j']:8.3f}   {le['name']:28} {le['j']:8.3f} {t['j'] / le['j']:12.3f}   {ls['name']:20} {ls['mib']:8.2f} {t['mib'] / ls['mib']:10.3f} {secs:7.1f}")
PYEOF
