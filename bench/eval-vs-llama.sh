#!/usr/bin/env bash
# Frugal's `frugal eval` against llama.cpp's `llama-perplexity`, side by side, in one run:
# same GGUF files (SmolLM2 F32 and Q8_0, and Q4_K_M vs F32 for KL divergence), same text
# (Brown cj01–cj12), same ctx and chunk count, same thread count. Prints a table with ratios.
#   bench/eval-vs-llama.sh [CHUNKS] [THREADS]     (default 20 chunks, 2 threads)
source "$(dirname "$0")/common.sh"
CHUNKS="${1:-20}"; THREADS="${2:-2}"; CTX=512
W="$CACHE/bench-eval"; mkdir -p "$W"
F32="$W/f32.gguf"; Q80="$W/q8_0.gguf"; Q4KM="$W/q4_k_m.gguf"; TEXT="$W/cj.txt"
[ -f "$F32" ] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$F32" F32 >/dev/null 2>&1
[ -f "$Q80" ] || "$BIN/llama-quantize" "$F32" "$Q80" Q8_0 >/dev/null 2>&1
[ -f "$Q4KM" ] || "$BIN/llama-quantize" "$F32" "$Q4KM" Q4_K_M >/dev/null 2>&1
"$FRUGAL" brown-text --files cj01-cj12 -o "$TEXT" 2>/dev/null
export RAYON_NUM_THREADS="$THREADS"

now() { date +%s.%N; }
llama_ppl() { # model -> "ppl se seconds"
  local t0 t1; t0=$(now)
  "$BIN/llama-perplexity" -m "$1" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX >"$W/llama.log" 2>&1
  t1=$(now)
  local l; l=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$W/llama.log")
  echo "$(awk '{print $5, $7}' <<<"$l") $(echo "$t1 - $t0" | bc)"
}
frugal_ppl() { # model [args] -> "ppl se seconds"
  local t0 t1 m="$1"; shift; t0=$(now)
  "$FRUGAL" eval "$m" --text "$TEXT" --ctx $CTX --chunks "$CHUNKS" --json "$@" >"$W/frugal.json"
  t1=$(now)
  python3 -c "import json,sys; r=json.load(open('$W/frugal.json')); print(r['ppl'], r['ppl_se'], $t1 - $t0)"
}
printf '%-34s %-22s %-22s %9s %9s %7s\n' "case ($CHUNKS×$CTX tokens, $THREADS threads)" "llama-perplexity PPL" "frugal eval PPL" "llama s" "frugal s" "speed×"
for case in "F32:$F32" "Q8_0:$Q80"; do
  name="${case%%:*}"; file="${case#*:}"
  read -r lp lse lt <<<"$(llama_ppl "$file")"
  read -r fp fse ft <<<"$(frugal_ppl "$file")"
  printf '%-34s %-22s %-22s %9.1f %9.1f %7.2f\n' "$name" "$lp ± $lse" "$(printf '%.4f ± %.5f' "$fp" "$fse")" "$lt" "$ft" "$(echo "$lt / $ft" | bc -l)"
done

# KL divergence of llama.cpp's Q4_K_M against F32, by both tools.
"$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" >/dev/null 2>&1
"$BIN/llama-perplexity" -m "$Q4KM" -f "$TEXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32.kld" --kl-divergence >"$W/kld.log" 2>&1
"$FRUGAL" eval "$Q4KM" --reference "$F32" --text "$TEXT" --ctx $CTX --chunks "$CHUNKS" --json >"$W/frugal-kld.json"
"$FRUGAL" eval "$Q4KM" --reference "$F32" --text "$TEXT" --ctx $CTX --chunks "$CHUNKS" --json --f32-activations >"$W/frugal-kld-f32act.json"
python3 - "$W/kld.log" "$W/frugal-kld.json" "$W/frugal-kld-f32act.json" <<'PYEOF'
import json, re, sys
log = open(sys.argv[1]).read()
def grab(pat):
    m = re.search(pat, log); return float(m.group(1)) if m else float("nan")
ll = {"mean": grab(r"Mean\s+KLD:\s+([0-9.]+)"), "p99": grab(r"99\.0%\s+KLD:\s+([0-9.]+)"),
      "max": grab(r"Maximum KLD:\s+([0-9.]+)"), "top": grab(r"Same top p:\s+([0-9.]+)"),
      "rms": grab(r"RMS Δp\s*:\s+([0-9.]+)")}
rs = [json.load(open(p))["kld"] for p in sys.argv[2:4]]
print(f"\n{'Q4_K_M vs F32':28} {'llama-perplexity':>16} {'frugal eval':>12} {'ratio':>7} {'frugal --f32-activations':>25}")
for label, key, fk in [("mean KLD", "mean", "mean"), ("99% KLD", "p99", "p99"), ("max KLD", "max", "max"),
                       ("same top-1 %", "top", "same_top1_pct"), ("RMS Δp %", "rms", "rms_dp_pct")]:
    print(f"{label:28} {ll[key]:16.6f} {rs[0][fk]:12.6f} {rs[0][fk]/ll[key]:7.4f} {rs[1][fk]:25.6f}")
ratio = rs[0]["mean"] / ll["mean"]
print(f"\nmean KLD agrees within 5 %: {'yes' if abs(ratio - 1) < 0.05 else 'NO'} (ratio {ratio:.4f})")
sys.exit(0 if abs(ratio - 1) < 0.05 else 1)
PYEOF
