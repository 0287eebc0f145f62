#!/usr/bin/env bash
# Frugal's products with stored F32/F16/BF16 weights (crates/frugal-models/src/gemm.rs) against
# candle's F32 matmul on the same operands, at the shapes of SmolLM2, the 1.5B and the 7B
# models, for a prompt (512 rows) and one decoded token (1 row), in one run:
#   bench/gemm.sh [ROUNDS] [SHAPE-FILTER] [THREADS]   (default 5, all shapes, 2 threads)
# Prints GFLOP/s (best of ROUNDS) and candle's time over Frugal's (above 1: Frugal faster).
# FRUGAL_ISA=avx2 (or scalar) runs the narrower path on an AVX-512 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
RAYON_NUM_THREADS="${3:-2}" cargo run --release -q -p frugal-models --example gemm -- "${1:-5}" "${2:-}"
