#!/usr/bin/env bash
# `frugal convert` against llama.cpp's convert_hf_to_gguf.py (pinned sdist, in the venv of
# bench/make-minilm-golden.sh) on a 7B-shaped sharded checkpoint (issue #27): Llama shape,
# 4096 wide, 32 blocks, 11008 feed-forward, 32 heads / 8 key-value heads, SmolLM2's 49,152-token
# vocabulary, untied output, seeded random BF16 weights in 3 shards (bench/make_hf_checkpoint.py,
# 12.1 GB, generated here and deleted after; never committed). Both write --outtype bf16 (BF16
# kept, 12.1 GB) one after the other on the same folder; wall time and peak resident memory from
# /usr/bin/time, and whether the two files are byte-identical. Frugal runs twice (before and
# after llama.cpp's converter) to show the page-cache effect. Needs about 25 GB of free disk.
#   bench/convert-7b.sh [SHAPE=7b] [OUTTYPE=bf16]
source "$(dirname "$0")/common.sh"
SHAPE="${1:-7b}"; OUTTYPE="${2:-bf16}"
PY="$CACHE/venv-st/bin/python"
[ -x "$PY" ] || { echo "no venv at $CACHE/venv-st: run bench/make-minilm-golden.sh first" >&2; exit 1; }
SRC="$CACHE/llama.cpp-0.3.36/src"
W="${WORK:-$CACHE/bench-convert}"; rm -rf "$W"; mkdir -p "$W"; trap 'rm -rf "$W"' EXIT
"$FRUGAL" export "$Q41" "$W/smollm2" >/dev/null
CK="$W/llama-$SHAPE-bf16"
t0=$(date +%s)
"$PY" bench/make_hf_checkpoint.py "$SHAPE" "$CK" "$W/smollm2"
echo "checkpoint: $(du -sb "$CK" | cut -f1) bytes in $(ls "$CK"/*.safetensors | wc -l) shards, written in $(( $(date +%s) - t0 )) s" >&2
run() { # label, output, command...
  local label="$1" out="$2"; shift 2
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >"$W/$label.log" 2>&1 || { tail -5 "$W/$label.log" >&2; exit 1; }
  read -r wall rss < "$W/time"
  sha=$(sha256sum "$out" | cut -d' ' -f1); rm -f "$out"
  printf '%s %s %s %s\n' "$label" "$wall" "$rss" "$sha" >> "$W/results"
}
run frugal-1 "$W/f.gguf" "$FRUGAL" convert "$CK" "$W/f.gguf" --outtype "$OUTTYPE"
run llama.cpp "$W/p.gguf" "$PY" "$SRC/convert_hf_to_gguf.py" "$CK" --outfile "$W/p.gguf" --outtype "$OUTTYPE"
run frugal-2 "$W/f.gguf" "$FRUGAL" convert "$CK" "$W/f.gguf" --outtype "$OUTTYPE"
echo
printf '%-12s %10s %16s  %s\n' converter "wall (s)" "peak RSS (MiB)" sha256
while read -r l w r s; do printf '%-12s %10.1f %16.0f  %s\n' "$l" "$w" "$(echo "$r/1024" | bc -l)" "$s"; done < "$W/results"
awk 'NR==FNR{a[$1]=$2; m[$1]=$3; s[$1]=$4; next} END{
  printf "time ratio frugal/llama.cpp: %.2f (first run), %.2f (second)\n", a["frugal-1"]/a["llama.cpp"], a["frugal-2"]/a["llama.cpp"];
  printf "peak memory ratio frugal/llama.cpp: %.2f\n", m["frugal-1"]/m["llama.cpp"];
  printf "byte-identical: %s\n", (s["frugal-1"]==s["llama.cpp"] && s["frugal-2"]==s["llama.cpp"]) ? "yes" : "NO"}' "$W/results" /dev/null
