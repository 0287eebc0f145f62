#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each) and prints a summary.
# Not part of CI. Needs cargo-fuzz (installed here if missing) and uses RUSTC_BOOTSTRAP=1 so the
# stable toolchain accepts the sanitizer flags that cargo-fuzz passes.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_header safetensors_header idx brown_tagged recipe policy report)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
PY="$(scripts/setup-python.sh)"
"$PY" scripts/fuzz-seeds.py fuzz/corpus "${FRUGAL_CACHE:-$HOME/.cache/frugal}"
for t in "${targets[@]}"; do
  log="fuzz/$t.log"
  echo "== $t: ${secs}s"
  cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || {
      echo "FAILED: $t (see $log and fuzz/artifacts/$t)"; tail -30 "$log"; exit 1; }
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' "$log" | sed 's/^/   /'
  grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -1 | sed 's/^/   /'
done
