#!/usr/bin/env bash
# Runs a command and prints its wall time and peak memory, split as the kernel counts it:
# anonymous pages (what the process allocated) and file pages (the memory-mapped model, which
# the kernel may drop and re-read) — the figures issue #25's targets are stated in.
#
#   bench/peak-mem.sh CMD [ARGS...]     # the command's output goes to stderr
#
# Samples /proc/PID/status every 50 ms (VmHWM, the kernel's own peak of RSS, is exact; the
# anonymous and file peaks are sampled maxima).
set -euo pipefail
t0=$(date +%s.%N)
"$@" >&2 &
pid=$!
anon=0; file=0; hwm=0
while kill -0 "$pid" 2>/dev/null; do
  if s=$(cat "/proc/$pid/status" 2>/dev/null); then
    a=$(awk '/^RssAnon:/ {print $2}' <<<"$s"); f=$(awk '/^RssFile:/ {print $2}' <<<"$s")
    h=$(awk '/^VmHWM:/ {print $2}' <<<"$s")
    [[ -n $a && $a -gt $anon ]] && anon=$a
    [[ -n $f && $f -gt $file ]] && file=$f
    [[ -n $h && $h -gt $hwm ]] && hwm=$h
  fi
  sleep 0.05
done
wait "$pid"; rc=$?
t1=$(date +%s.%N)
printf 'wall %.1f s  peak RSS %.2f GB  peak anonymous %.2f GB  peak file-backed %.2f GB  (exit %d)\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$hwm / 1048576" | bc -l)" "$(echo "$anon / 1048576" | bc -l)" \
  "$(echo "$file / 1048576" | bc -l)" "$rc"
