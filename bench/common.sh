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
