#!/usr/bin/env bash
# Serving a language model: Frugal against llama.cpp on the same GGUF files, the prompt
# (a 32-token prefill) and generation (one token per pass) timed by both, in interleaved rounds
# (a shared machine drifts by ~10 % over minutes). Prints a side-by-side table with the ratios.
#
#   bench/serve-vs-llama.sh [ROUNDS] FILE...        (default 2 rounds; THREADS=2, GEN=8)
#   BASE=/path/to/older/frugal bench/serve-vs-llama.sh 2 FILE...   (an older binary beside)
#
# Frugal: `frugal measure FILE --queries 2 --repeats 2 --warmup 1 --tokens T --json` with
# T = 1 (the query is the prompt's one batched pass, whose logits give the one token) and
# T = GEN (the prompt's pass and GEN − 1 decode passes): seconds per query from the metered
# runs; the prompt is the T = 1 query, a decode pass (T_GEN − T_1) / (GEN − 1) — a difference
# of two timings, noisy where the passes are short (small models: take GEN=33). llama.cpp:
# `llama-bench -p 32 -n GEN -r 3 -t THREADS -o json`, pp32 and tgGEN in tokens/s; its query
# is 32/pp + (GEN − 1)/tg (the same passes: the first generated token comes from the prompt's
# logits in both).
source "$(dirname "$0")/common.sh"
ROUNDS="${1:-2}"; shift || true
[ $# -gt 0 ] || { echo "usage: bench/serve-vs-llama.sh [ROUNDS] FILE..." >&2; exit 2; }
THREADS="${THREADS:-2}"; GEN="${GEN:-8}"; export RAYON_NUM_THREADS="$THREADS"
W="$CACHE/bench-serve"; rm -rf "$W"; mkdir -p "$W"
BINS=("frugal=$FRUGAL"); [ -n "${BASE:-}" ] && BINS+=("base=$BASE")
for r in $(seq "$ROUNDS"); do
  for f in "$@"; do
    n="$(basename "$f" .gguf)"
    for b in "${BINS[@]}"; do
      for t in 1 "$GEN"; do
        "${b#*=}" measure "$f" --queries 2 --repeats 2 --warmup 1 --tokens $t --json \
          >"$W/${b%%=*}-$n-t$t-$r.json" 2>"$W/${b%%=*}-$n.err" || echo "frugal ($b) $n failed" >&2
      done
    done
    "$BIN/llama-bench" -m "$f" -p 32 -n "$GEN" -r 3 -t "$THREADS" -o json >"$W/llama-$n-$r.json" 2>/dev/null \
      || echo "llama-bench $n failed" >&2
  done
done

python3 - "$W" "$ROUNDS" "$GEN" "${BASE:+base}" "$@" <<'PYEOF'
import glob, json, os, statistics, sys
W, rounds, gen, base, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
def per_query(who, n, t):
    s = []
    for p in sorted(glob.glob(f"{W}/{who}-{n}-t{t}-*.json")):
        if os.path.getsize(p):
            m = json.load(open(p))
            s += [r["seconds"] / m["queries"] for r in m["runs"]]
    return statistics.mean(s) if s else float("nan")
def llama(n):
    pp, tg = [], []
    for p in sorted(glob.glob(f"{W}/llama-{n}-*.json")):
        try:
            for t in json.load(open(p)):
                (pp if t["n_prompt"] > 0 else tg).append(t["avg_ts"])
        except Exception:
            pass
    return (statistics.mean(pp) if pp else float("nan"), statistics.mean(tg) if tg else float("nan"))
print(f"32-token prompt, {gen} generated tokens; {rounds} interleaved rounds; threads {os.environ.get('RAYON_NUM_THREADS')}")
who = ["frugal"] + ([base] if base else [])
print(f"{'file':24} {'binary':7} {'prompt t/s':>10} {'llama pp32':>10} {'ratio':>6} {'decode t/s':>10} {'llama tg' + str(gen):>9} {'ratio':>6} {'query s':>8} {'llama s':>8} {'ratio':>6}")
for f in files:
    n = os.path.basename(f)[:-5]
    pp, tg = llama(n)
    lq = 32 / pp + (gen - 1) / tg
    for w in who:
        t1, t8 = per_query(w, n, 1), per_query(w, n, gen)
        fp, fd = 32 / t1, (gen - 1) / (t8 - t1)
        print(f"{n:24} {w:7} {fp:10.2f} {pp:10.2f} {fp / pp:6.2f} {fd:10.2f} {tg:9.2f} {fd / tg:6.2f} {t8:8.3f} {lq:8.3f} {lq / t8:6.2f}")
print("(ratio: Frugal's speed over llama.cpp's, above 1 where Frugal is faster)")
PYEOF
