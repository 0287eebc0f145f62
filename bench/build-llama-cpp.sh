#!/usr/bin/env bash
# Builds llama.cpp's tools (llama-quantize, llama-perplexity, llama-imatrix, llama-bench,
# llama-simple, llama-tokenize) from the llama.cpp source vendored in the PyPI sdist llama-cpp-python==0.3.36,
# cached in ${FRUGAL_CACHE:-~/.cache/frugal}/llama.cpp-0.3.36 (never in the repository).
# Prints the folder holding the binaries. About 4–8 minutes on 2 cores the first time; instant after.
# Needs cmake (Debian package `cmake`; installed with apt-get, which needs root, if missing).
set -euo pipefail
VERSION=0.3.36
CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
DIR="$CACHE/llama.cpp-$VERSION"
# The instruction sets this CPU has, named explicitly (not GGML_NATIVE, whose -march=native
# also compiles ggml's AMX paths: on a virtual machine that lists AMX among its CPU flags
# without letting a process use it, llama-perplexity dies of an illegal instruction on Q4_K_M
# and a segmentation fault on Q8_0). AMX stays off.
has() { grep -qw "$1" /proc/cpuinfo; }
ISA=(-DGGML_NATIVE=OFF)
for f in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
         avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
  has "${f%%:*}" && ISA+=("-DGGML_${f#*:}=ON")
done
BUILD="$DIR/build-$(printf '%s ' "${ISA[@]}" | sha256sum | cut -c1-8)"
BIN="$BUILD/bin"
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
echo "build-llama-cpp: building (about 4–8 minutes on 2 cores)" >&2
cmake -S "$DIR/src" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF "${ISA[@]}" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$DIR/cmake.log" 2>&1 ||
  { tail -20 "$DIR/cmake.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target "${TOOLS[@]}" >"$DIR/build.log" 2>&1 ||
  { tail -30 "$DIR/build.log" >&2; exit 1; }
have_all || { echo "build-llama-cpp: build finished but tools are missing in $BIN" >&2; exit 1; }
echo "$BIN"
