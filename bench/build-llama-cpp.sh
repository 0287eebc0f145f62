#!/usr/bin/env bash
# Builds llama.cpp's tools (llama-quantize, llama-perplexity, llama-imatrix, llama-bench,
# llama-simple, llama-tokenize) from the llama.cpp source vendored in the PyPI sdist llama-cpp-python==0.3.36,
# cached in ${FRUGAL_CACHE:-~/.cache/frugal}/llama.cpp-0.3.36 (never in the repository).
# Prints the folder holding the binaries. About 15 minutes on 2 cores the first time; instant after.
# Needs cmake (Debian package `cmake`; installed with apt-get, which needs root, if missing).
set -euo pipefail
VERSION=0.3.36
CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
DIR="$CACHE/llama.cpp-$VERSION"
BIN="$DIR/build/bin"
TOOLS=(llama-quantize llama-perplexity llama-imatrix llama-bench llama-simple llama-tokenize)

have_all() { for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || return 1; done; }
if have_all; then echo "$BIN"; exit 0; fi

if ! command -v cmake >/dev/null; then
  echo "build-llama-cpp: cmake missing; running apt-get install cmake (needs root)" >&2
  apt-get install -y cmake >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y cmake >/dev/null; } ||
    { echo "build-llama-cpp: cannot install cmake: install Debian's cmake package" >&2; exit 1; }
fi
mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.llama-build.XXXX")"
trap 'rm -rf "$tmp"' EXIT
if [ ! -d "$DIR/src" ]; then
  echo "build-llama-cpp: downloading llama-cpp-python==$VERSION sdist" >&2
  pip download --no-deps --no-binary=:all: -d "$tmp" "llama-cpp-python==$VERSION" >&2 ||
    { echo "build-llama-cpp: pip download failed: is PyPI reachable?" >&2; exit 1; }
  tar -xzf "$tmp"/llama_cpp_python-$VERSION.tar.gz -C "$tmp"
  rm -rf "$DIR"; mkdir -p "$DIR"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
fi
echo "build-llama-cpp: building (about 15 minutes on 2 cores)" >&2
cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$DIR/cmake.log" 2>&1 ||
  { tail -20 "$DIR/cmake.log" >&2; exit 1; }
cmake --build "$DIR/build" -j"$(nproc)" --target "${TOOLS[@]}" >"$DIR/build.log" 2>&1 ||
  { tail -30 "$DIR/build.log" >&2; exit 1; }
have_all || { echo "build-llama-cpp: build finished but tools are missing in $BIN" >&2; exit 1; }
echo "$BIN"
