#!/usr/bin/env bash
# Frugal's quantized products with 8-bit activations (crates/frugal-models/src/qmatmul/)
# against candle 0.11's quantized matmul and against the F32 GEMM on the decoded weight (what
# evaluation runs for a prompt), at the shapes of SmolLM2, the 1.5B and the 7B models, for one
# decoded token (1 row) and a prompt (512 rows), in one run:
#   bench/qmatmul-kernels.sh [ROUNDS] [SHAPE-FILTER] [TYPES] [ROWS] [THREADS]
#   (default 3, all shapes, every type (all), "1,512", 2 threads; TYPES like Q4_K,Q6_K)
# Prints G multiply-adds/s (best of ROUNDS) and the others' time over Frugal's; on a CPU with
# AVX-512 VNNI also Frugal's AVX2 kernel and its time over the VNNI one's.
# FRUGAL_ISA=avx2 (or scalar) makes Frugal's kernel the AVX2 one (or the plain reference).
set -euo pipefail
cd "$(dirname "$0")/.."
RAYON_NUM_THREADS="${5:-2}" cargo run --release -q -p frugal-models --example qmatmul -- \
  "${1:-3}" "${2:-}" "${3:-all}" "${4:-1,512}"
