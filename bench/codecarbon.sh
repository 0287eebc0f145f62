#!/usr/bin/env bash
# Frugal's energy estimate against CodeCarbon 3.2.9's on the same execution, with the same power
# assumptions (issue #6): a CPU-bound command (training the Fashion-MNIST teacher for EPOCHS epochs,
# 2 threads) run as `frugal measure -- CMD` inside CodeCarbon's OfflineEmissionsTracker in
# process mode (CPU time of the Python process and all its descendants, sampled every second),
# `force_cpu_power` = Frugal's TDP (85 W), the same logical CPU count: both tools see one run. Both attribute
# TDP × CPU time / logical CPUs; the table compares the CPU energy (the part both model alike),
# and lists the RAM figures, which the two tools model differently (CodeCarbon: a constant
# power per guessed DIMM, here forced to 1 W; Frugal: peak RSS × 0.375 W/GB).
#   bench/codecarbon.sh [REPS] [THREADS] [EPOCHS]     (default 3 2 3; ~4 min)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-3}"; THREADS="${2:-2}"; EPOCHS="${3:-3}"; export RAYON_NUM_THREADS="$THREADS"
CACHE="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
scripts/fetch-assets.sh fashion-mnist >&2
cargo build --release -q -p frugal-cli
F="$PWD/target/release/frugal"
VENV="$CACHE/venv-cc"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import codecarbon' 2>/dev/null || "$VENV/bin/pip" install -q codecarbon==3.2.9
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
CMD=("$F" distill --data fashion-mnist --arch teacher --epochs "$EPOCHS" --out "$W/t.safetensors")
for ((r = 0; r < REPS; r++)); do
  "$VENV/bin/python" - "$W/cc-$r.json" "$W/frugal-$r.json" "$F" measure --json --region FRA -- "${CMD[@]}" <<'PYEOF'
import json, os, subprocess, sys, logging
from codecarbon import OfflineEmissionsTracker
out, frugal_out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t = OfflineEmissionsTracker(country_iso_code="FRA", tracking_mode="process", force_cpu_power=85,
                            force_ram_power=1.0, measure_power_secs=1, save_to_file=False,
                            log_level="error")
t.start()
with open(frugal_out, "w") as f:
    subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.DEVNULL)
t.stop()
d = t.final_emissions_data
json.dump({"cpu_kwh": d.cpu_energy, "ram_kwh": d.ram_energy, "seconds": d.duration,
           "kg": d.emissions, "cpu_count": d.cpu_count, "cpu_power_w": d.cpu_power}, open(out, "w"))
PYEOF
done
python3 - "$W" "$REPS" "$EPOCHS" <<'PYEOF'
import json, sys, statistics as st
w, reps, epochs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"Fashion-MNIST teacher, {epochs} epoch(s), {reps} runs, each seen by both tools; TDP 85 W over the same logical CPUs")
print(f"{'run':>3} {'Frugal CPU J':>13} {'CodeCarbon CPU J':>17} {'ratio':>6} {'Frugal RAM J':>13} {'CC RAM J (1 W forced)':>22} {'Frugal s':>9} {'CC s':>7}")
ratios = []
for r in range(reps):
    f = json.load(open(f"{w}/frugal-{r}.json"))["energy"]
    c = json.load(open(f"{w}/cc-{r}.json"))
    cpu = next(s["joules"] for s in f["sources"] if s["source"] == "cpu-estimate")
    ram = next(s["joules"] for s in f["sources"] if s["source"] == "ram-estimate")
    ccpu, cram = c["cpu_kwh"] * 3.6e6, c["ram_kwh"] * 3.6e6
    ratios.append(cpu / ccpu)
    print(f"{r:>3} {cpu:13.1f} {ccpu:17.1f} {cpu / ccpu:6.3f} {ram:13.2f} {cram:22.2f} {f['seconds']:9.1f} {c['seconds']:7.1f}")
print(f"Frugal / CodeCarbon CPU energy: mean {st.mean(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
PYEOF
