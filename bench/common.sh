# Sourced by the bench scripts: go to the repository root, build llama.cpp's tools (cached) and
# Frugal, fetch the assets named in $ASSETS, and set BIN (llama.cpp tools), FRUGAL (absolute path
# of the binary), CACHE and Q41 (the SmolLM2 GGUF).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="$(bench/build-llama-cpp.sh)"
scripts/fetch-assets.sh ${ASSETS:-smollm2 brown} >&2
cargo build --release -q -p frugal-cli
FRUGAL="$PWD/target/release/frugal"
CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
Q41="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# timed LABEL LOGFILE CMD...: runs CMD (output to LOGFILE), appending its wall seconds and peak
# RSS (KB) to $W/times.tsv; on failure shows the log's tail and returns 1.
timed() {
  local label="$1" log="$2"; shift 2
  /usr/bin/time -f "%e %M" -o "$W/time.tmp" "$@" >"$log" 2>&1 || { echo "FAILED: $label (see $log)" >&2; tail -5 "$log" >&2; return 1; }
  echo "$label $(cat "$W/time.tmp")" >>"$W/times.tsv"
}

# judge_kld TEXTVAR...: every llama-*/frugal-* GGUF in $W judged by `llama-perplexity
# --kl-divergence` against $F32's logits on the text each named variable holds (ctx $CTX,
# $CHUNKS chunks, $THREADS threads): logs $W/kld-NAME-FILE.log. A file whose log is there and
# complete, and logits already computed, are not judged again (the caller removes what must be).
judge_kld() {
  local TEXTN TXT f n
  for TEXTN in "$@"; do
    TXT="${!TEXTN}"
    [ -s "$W/f32-$TEXTN.kld" ] || "$BIN/llama-perplexity" -m "$F32" -f "$TXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32-$TEXTN.kld" >"$W/ppl-f32-$TEXTN.log" 2>&1
    for f in "$W"/llama-*.gguf "$W"/frugal-*.gguf; do
      n="$(basename "$f" .gguf)"
      grep -qE "^Mean +KLD" "$W/kld-$TEXTN-$n.log" 2>/dev/null && continue
      "$BIN/llama-perplexity" -m "$f" -f "$TXT" -c $CTX --chunks "$CHUNKS" -t "$THREADS" -b $CTX --kl-divergence-base "$W/f32-$TEXTN.kld" --kl-divergence >"$W/kld-$TEXTN-$n.log" 2>&1
    done
  done
}
