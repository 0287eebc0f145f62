#!/usr/bin/env bash
# The oracle for `frugal convert`'s RoPE scaling (issue #27), written to
# tests/golden/convert_rope.json: SmolLM2 exported by `frugal export` (folder smol-rope/), its
# config.json given each `rope_scaling` below (and rope_theta 500000), converted by llama.cpp's
# convert_hf_to_gguf.py (pinned sdist, transformers 4.46.3 venv of bench/make-minilm-golden.sh)
# at q8_0: the sha256 and size `frugal convert` must reproduce
# (crates/frugal-eval/tests/hf_export.rs). Llama 3's factors become a rope_freqs tensor that
# the converter computes in torch; linear and YaRN become metadata keys.
#   bench/make-golden-rope.sh   (about 30 s)
export ASSETS="smollm2"
source "$(dirname "$0")/common.sh"
PY="$CACHE/venv-st/bin/python"
[ -x "$PY" ] || { echo "no venv at $CACHE/venv-st: run bench/make-minilm-golden.sh first" >&2; exit 1; }
SRC="$CACHE/llama.cpp-0.3.36/src"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
"$FRUGAL" export "$Q41" "$T/base" >/dev/null
rows=()
for v in llama3-8k llama3-32x yarn linear; do
  rm -rf "$T/smol-rope"; cp -r "$T/base" "$T/smol-rope"
  "$PY" - "$T/smol-rope/config.json" "$v" <<'PYEOF'
import json, sys
path, v = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["rope_theta"] = 500000.0
c["rope_scaling"] = {
    "llama3-8k": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "llama3-32x": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048, "beta_fast": 32.0, "beta_slow": 1.0},
    "linear": {"rope_type": "linear", "factor": 2.0},
}[v]
json.dump(c, open(path, "w"), indent=2)
PYEOF
  "$PY" "$SRC/convert_hf_to_gguf.py" "$T/smol-rope" --outfile "$T/o.gguf" --outtype q8_0 >"$T/log" 2>&1 \
    || { tail -20 "$T/log" >&2; exit 1; }
  rows+=("\"$v\": {\"sha256\": \"$(sha256sum "$T/o.gguf" | cut -d' ' -f1)\", \"bytes\": $(stat -c %s "$T/o.gguf")}")
done
{
  printf '{"made_by": "bench/make-golden-rope.sh: frugal export of SmolLM2-135M-Instruct Q4_1 (folder smol-rope/), config.json given rope_theta 500000 and each rope_scaling, converted at q8_0 by convert_hf_to_gguf.py of llama-cpp-python 0.3.36 (transformers 4.46.3, torch 2.5.1)",\n'
  printf ' "convert": {%s}\n}\n' "$(IFS=,; echo "${rows[*]}")"
} > tests/golden/convert_rope.json
echo "wrote tests/golden/convert_rope.json" >&2
