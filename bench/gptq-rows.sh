#!/usr/bin/env bash
# Activation-order GPTQ's pass over a weight's rows, one row at a time against tiles of 8 and
# 16 rows (crates/frugal-compress/examples/gptq_rows.rs), at SmolLM2's, the 1.5B's and the 7B's
# widest input (1,536, 8,960, 11,008 columns), in one run; the bytes are checked equal.
#   bench/gptq-rows.sh [ROUNDS] [ROWS] [THREADS]   (default 3 rounds, 64 rows, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
RAYON_NUM_THREADS="${3:-2}" cargo run --release -q -p frugal-compress --example gptq_rows -- "${1:-3}" "${2:-64}"
