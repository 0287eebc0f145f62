#!/usr/bin/env bash
# A checkpoint folder where a GGUF model is expected, at 7B scale (issue #27, item 2): the
# 7B-shaped BF16 checkpoint of bench/convert-7b.sh quantized straight from the folder
# (`frugal quantize DIR out.gguf --type T --no-eval`, no intermediate file) against
# `frugal convert DIR --outtype bf16` then `frugal quantize` of that file: wall time, peak
# resident memory (/usr/bin/time) and whether the outputs are byte-identical. Needs about
# 40 GB of free disk; the checkpoint is generated here and deleted after.
#   bench/quantize-folder-7b.sh [SHAPE=7b] [TYPE=Q8_0]
source "$(dirname "$0")/common.sh"
SHAPE="${1:-7b}"; TYPE="${2:-Q8_0}"
PY="$(scripts/setup-python.sh)"
W="${WORK:-$CACHE/bench-quantize-folder}"; rm -rf "$W"; mkdir -p "$W"; trap 'rm -rf "$W"' EXIT
"$FRUGAL" export "$Q41" "$W/smollm2" >/dev/null
CK="$W/llama-$SHAPE-bf16"
"$PY" bench/make_hf_checkpoint.py "$SHAPE" "$CK" "$W/smollm2"
run() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >"$W/$label.log" 2>&1 || { tail -5 "$W/$label.log" >&2; exit 1; }
  read -r wall rss < "$W/time"; printf '%s %s %s\n' "$label" "$wall" "$rss" >> "$W/results"
}
run folder "$FRUGAL" quantize "$CK" "$W/a.gguf" --type "$TYPE" --no-eval
A=$(sha256sum "$W/a.gguf" | cut -d' ' -f1); rm -f "$W/a.gguf"
run convert "$FRUGAL" convert "$CK" "$W/c.gguf" --outtype bf16
run file "$FRUGAL" quantize "$W/c.gguf" "$W/b.gguf" --type "$TYPE" --no-eval
B=$(sha256sum "$W/b.gguf" | cut -d' ' -f1)
echo
printf '%-10s %10s %16s\n' step "wall (s)" "peak RSS (MiB)"
while read -r l w r; do printf '%-10s %10.1f %16.0f\n' "$l" "$w" "$(echo "$r/1024" | bc -l)"; done < "$W/results"
awk '{w[$1]=$2} END {printf "folder / (convert + quantize file) time: %.2f\n", w["folder"]/(w["convert"]+w["file"])}' "$W/results"
echo "outputs byte-identical: $([ "$A" = "$B" ] && echo yes || echo NO) ($A)"
