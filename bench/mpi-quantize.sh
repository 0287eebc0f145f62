#!/usr/bin/env bash
# Issue #7: calibration + GPTQ on SmolLM2 (Q4_K_M, Brown ca01–ca10 as calibration text) as one
# process with one thread, as `mpirun -np 2` with one thread per rank, and (for context) as one
# process with two threads; wall time (median of REPS), and the two-rank file checked byte for
# byte against the one-process file, in the same run.
#   bench/mpi-quantize.sh [REPS] [CALIB_TOKENS] [METHOD]     (default 1 8192 gptq)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-1}"; TOKENS="${2:-8192}"; METHOD="${3:-gptq}"
scripts/fetch-assets.sh smollm2 brown >&2
command -v mpirun >/dev/null || { echo "mpirun missing (apt-get install libopenmpi-dev openmpi-bin libclang-dev clang)" >&2; exit 1; }
cargo build --release -q -p frugal-cli --features mpi
F="$PWD/target/release/frugal"
M="${FRUGAL_CACHE:-$HOME/.cache/frugal}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
"$F" brown-text --files ca01-ca10 -o "$W/calib.txt" 2>/dev/null
ARGS=(quantize "$M" OUT --type Q4_K_M --calib "$W/calib.txt" --calib-ctx 512 --calib-tokens "$TOKENS" --method "$METHOD" --no-eval)
wall() { # wall seconds of "$@"
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }; t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
for ((r = 0; r < REPS; r++)); do
  RAYON_NUM_THREADS=1 wall "$F" "${ARGS[@]/OUT/$W/one.gguf}" >>"$W/t1"
  wall mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 "$F" "${ARGS[@]/OUT/$W/two.gguf}" >>"$W/t2"
  RAYON_NUM_THREADS=2 wall "$F" "${ARGS[@]/OUT/$W/thr.gguf}" >>"$W/tt"
done
cmp "$W/one.gguf" "$W/two.gguf" && same=yes || same=NO
python3 - "$W" "$same" "$TOKENS" "$METHOD" <<'PYEOF'
import statistics, sys
w, same, tokens, method = sys.argv[1:]
med = lambda f: statistics.median(float(x) for x in open(f"{w}/{f}"))
t1, t2, tt = med("t1"), med("t2"), med("tt")
print(f"SmolLM2 Q4_K_M, {method}, {tokens} calibration tokens (ctx 512), --no-eval; median wall s")
print(f"{'run':44} {'wall s':>8} {'speed-up':>9}")
print(f"{'1 process, 1 thread':44} {t1:8.1f} {1.0:8.2f}x")
print(f"{'mpirun -np 2, 1 thread per rank':44} {t2:8.1f} {t1 / t2:8.2f}x")
print(f"{'1 process, 2 threads (for context)':44} {tt:8.1f} {t1 / tt:8.2f}x")
print(f"two-rank file byte-identical to the one-process file: {same}")
PYEOF
