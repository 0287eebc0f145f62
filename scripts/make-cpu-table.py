#!/usr/bin/env python3
"""Writes data/cpu-tdp.csv, Frugal's shipped CPU model -> TDP (W) table, from CodeCarbon's
cpu_power.csv (MIT licence) in the pinned wheel PyPI codecarbon==3.2.9 (sha256 below), rows
as they are but for the few whose TDP is not a number (`27.29.5`), which are left out.
Usage: scripts/make-cpu-table.py WHEEL > data/cpu-tdp.csv
"""
import csv, hashlib, io, sys, zipfile

WHEEL_SHA256 = "677c7f4c59d7506f8d6305be8fac357da29c62fb6d03c1a59ec454aefb704ae9"
path = sys.argv[1]
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != WHEEL_SHA256:
    sys.exit(f"{path}: sha256 {digest}, expected {WHEEL_SHA256} (codecarbon-3.2.9-py3-none-any.whl)")
text = zipfile.ZipFile(path).read("codecarbon/data/hardware/cpu_power.csv").decode()
rows = list(csv.reader(io.StringIO(text)))
assert rows[0] == ["Name", "TDP"], rows[0]
w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["Name", "TDP"])
skipped = []
for name, tdp in rows[1:]:
    try:
        watts = float(tdp)
    except ValueError:
        skipped.append(name)
        continue
    if watts > 0:
        w.writerow([name.strip(), tdp.strip()])
print(f"left out (TDP not a number): {skipped}", file=sys.stderr)
