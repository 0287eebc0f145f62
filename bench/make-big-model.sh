#!/usr/bin/env bash
# A seeded, Llama-shaped F16 GGUF with SmolLM2's tokenizer for the scale benchmarks
# (bench/scale.sh, bench/memory-plan.sh): the venv of scripts/setup-python.sh runs
# bench/make_big_model.py, which streams tensor by tensor. Never commit its output.
#
#   bench/make-big-model.sh 1.5b|7b|tiny OUT.gguf [--seed S]    # 1.5B: about 40 s, 7B: 2.5 min (11.3 GiB)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -ge 2 ]] || { sed -n 2,6p "$0" >&2; exit 2; }
scripts/fetch-assets.sh smollm2 >&2
PY="$(scripts/setup-python.sh)"
"$PY" bench/make_big_model.py "$@"
