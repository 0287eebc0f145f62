#!/usr/bin/env bash
# The oracle for `frugal convert` (issue #27): llama.cpp's own converter, convert_hf_to_gguf.py
# of the pinned sdist (llama-cpp-python 0.3.36, vendor/llama.cpp), run on all-MiniLM-L6-v2 — a
# real Hugging Face BERT folder — at every --outtype, in the torch/transformers venv of
# bench/make-minilm-golden.sh. Writes tests/golden/convert_minilm.json: per outtype the sha256
# and size of the file, and its metadata keys in order, which Frugal's conversion of the same
# folder must reproduce byte for byte (CI compares without needing torch).
# The folder is seen under the name `all-MiniLM-L6-v2` (a symbolic link in a temporary
# directory): the converter derives `general.name` and friends from the folder's name and its
# README's model card.
#   bench/make-golden-convert.sh      (after bench/make-minilm-golden.sh has built its venv)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
PY="$CACHE/venv-st/bin/python"
[ -x "$PY" ] || { echo "no venv at $CACHE/venv-st: run bench/make-minilm-golden.sh first" >&2; exit 1; }
bench/build-llama-cpp.sh >/dev/null
SRC="$CACHE/llama.cpp-0.3.36/src"
scripts/fetch-assets.sh minilm >&2
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
ln -s "$CACHE/minilm" "$T/all-MiniLM-L6-v2"
rows=()
for ty in f32 f16 bf16 q8_0; do
  out="$T/minilm-$ty.gguf"
  "$PY" "$SRC/convert_hf_to_gguf.py" "$T/all-MiniLM-L6-v2" --outfile "$out" --outtype "$ty" >"$T/$ty.log" 2>&1 \
    || { tail -20 "$T/$ty.log" >&2; exit 1; }
  sha=$(sha256sum "$out" | cut -d' ' -f1)
  keys=$(PYTHONPATH="$SRC/gguf-py" "$PY" -c '
import json, sys, gguf
r = gguf.GGUFReader(sys.argv[1])
print(json.dumps([k for k in r.fields]))' "$out")
  rows+=("\"$ty\": {\"sha256\": \"$sha\", \"bytes\": $(stat -c %s "$out"), \"metadata_keys\": $keys}")
  echo "$ty: $sha" >&2
done
{
  printf '{"made_by": "bench/make-golden-convert.sh: convert_hf_to_gguf.py of llama-cpp-python 0.3.36 (vendor/llama.cpp), venv-st (torch 2.5.1, transformers 4.46.3), on the all-MiniLM-L6-v2 asset folder seen as all-MiniLM-L6-v2/",\n'
  (IFS=$'\n'; printf ' %s' "$(printf '%s,\n' "${rows[@]}" | sed '$ s/,$//')")
  printf '\n}\n'
} > tests/golden/convert_minilm.json
echo "wrote tests/golden/convert_minilm.json" >&2
