#!/usr/bin/env python3
"""Writes small valid seed inputs for the fuzz targets into fuzz/corpus/<target>/.

Run with the python that scripts/setup-python.sh prints (it has the `gguf` package, whose
writer makes the GGUF seed, so the seeds do not come from the parser under test).
"""
import gzip, json, pathlib, struct, sys

import numpy as np
import gguf

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")
cache = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None

def out(target, name, data):
    d = root / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)

# GGUF: metadata of several types and a few tensor types.
path = root / "tmp.gguf"
root.mkdir(parents=True, exist_ok=True)
w = gguf.GGUFWriter(str(path), "llama")
w.add_block_count(2)
w.add_uint32("t.u32", 7)
w.add_float32("t.f32", 0.5)
w.add_bool("t.bool", True)
w.add_string("t.s", "héllo")
w.add_array("t.arr", [1, 2, 3])
w.add_array("t.strs", ["a", "bc"])
w.add_tensor("a", np.arange(8, dtype=np.float32))
w.add_tensor("b", np.ones((2, 4), dtype=np.float16))
w.add_tensor("q", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
out("gguf_header", "small.gguf", path.read_bytes())
path.unlink()

# safetensors
header = {"__metadata__": {"format": "pt"},
          "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "I64", "shape": [1, 1], "data_offsets": [8, 16]}}
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
out("safetensors_header", "small.safetensors", struct.pack("<Q", len(h)) + h + bytes(16))

# IDX
out("idx", "small.idx", bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 2, 2) + bytes(range(8)))
if cache and (cache / "fashion-mnist/t10k-labels-idx1-ubyte.gz").exists():
    out("idx", "t10k-labels.idx", gzip.decompress((cache / "fashion-mnist/t10k-labels-idx1-ubyte.gz").read_bytes()))

# Brown / digits text
out("brown_tagged", "tagged.txt", b"\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n")
if cache and (cache / "brown/ca01").exists():
    out("brown_tagged", "ca01", (cache / "brown/ca01").read_bytes()[:4000])
out("brown_tagged", "digits.csv", (",".join(["0"] * 64) + ",3\n").encode())

# Recipes, policies and reports: the shipped ones, and a report of each kind Frugal writes.
repo = pathlib.Path(__file__).resolve().parent.parent
for p in sorted((repo / "recipes").glob("*.toml")):
    out("recipe", p.name, p.read_bytes())
out("recipe", "steps.toml", b'name = "x"\nmodel = "m.gguf"\n[eval]\ntext = { brown = "cj01" }\n'
    b'[[step]]\nkind = "prune"\nmethod = "wanda"\nsparsity = 0.2\npattern = "2:4"\n'
    b'calib = { file = "c.txt", tokens = 64, ctx = 32 }\n[[step]]\nkind = "quantize"\n'
    b'type = "Q4_K_M"\ntensor_types = ["ffn_down=Q6_K"]\ntarget_bpw = 4.5\n'
    b'[[step]]\nkind = "eval"\n[[step]]\nkind = "measure"\nregion = "FRA"\npue = 1.2\n')
for p in sorted((repo / "policies").glob("*.toml")):
    out("policy", p.name, p.read_bytes())
out("policy", "units.toml", b'max_wh_per_1k_queries = "0.5 kWh"\nregion = "FRA"\npue = 1.3\n'
    b'label_wh_per_1k_queries = [0.001, "18 J", 1, "0.02 kWh"]\nrequire_measured_energy = true\n')
out("report", "lm.json", json.dumps({"quantize": {"input_bytes": 400, "output_bytes": 100},
    "quality": {"ppl": 11.0, "kld": {"mean": 0.02, "reference_ppl": 10.0}}}).encode())
out("report", "recipe.json", json.dumps({"steps": [{"result": {"kld": {"mean": 0.1}}},
    {"result": {"per_1k_queries": {"wh": 2.5, "gco2e": None}, "break_even": {"queries": None}}}]}).encode())
out("report", "measure.json", json.dumps({"energy": {"sources": [{"provenance": {"kind": "measured"}}]},
    "per_1k_queries": {"wh": 1.0, "sci_gco2e": 0.3}, "eu_ai_act": {"energy_mwh": 1e-6},
    "accuracy_drop_pt": -0.2}).encode())
