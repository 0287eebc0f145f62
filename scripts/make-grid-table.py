#!/usr/bin/env python3
"""Writes data/grid-intensity.csv, Frugal's shipped grid carbon-intensity table, from
CodeCarbon's global_energy_mix.json (Our World in Data / Ember figures) in the pinned wheel
PyPI codecarbon==3.2.9 (sha256 below). Usage: scripts/make-grid-table.py WHEEL > data/grid-intensity.csv
"""
import csv, hashlib, json, sys, zipfile

WHEEL_SHA256 = "677c7f4c59d7506f8d6305be8fac357da29c62fb6d03c1a59ec454aefb704ae9"
path = sys.argv[1]
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != WHEEL_SHA256:
    sys.exit(f"{path}: sha256 {digest}, expected {WHEEL_SHA256} (codecarbon-3.2.9-py3-none-any.whl)")
mix = json.loads(zipfile.ZipFile(path).read("codecarbon/data/private_infra/global_energy_mix.json"))
w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["iso3", "country", "gco2e_per_kwh", "year", "source"])
for iso, v in sorted(mix.items()):
    w.writerow([iso, v["country_name"], f"{float(v['carbon_intensity']):.3f}", v["year"],
                "Our World in Data / Ember via CodeCarbon 3.2.9 global_energy_mix.json"])
