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
# Reports of schema version 3 as Frugal writes them (taken from real runs: a measured command,
# a classifier distillation, prune and int8 quantization, and a check report), and one of an
# older shape (refused by the strict reader).
out("report", "measure-command.json", b'{"schema_version":3,"report":"measure","command":["true"],"exit_status":0,"energy":{"seconds":0.001822415,"sources":[{"source":"cpu-estimate","joules":0.06804249999999992,"provenance":{"kind":"estimated","model":"process CPU time \\u00d7 TDP / package threads (AMD EPYC, TDP default (CPU not in a TDP table))","constants":{"cpu_seconds":0.0016009999999999983,"logical_cpus":2.0,"package_threads":2.0,"tdp_watts":85.0}},"uncertainty":0.3},{"source":"ram-estimate","joules":8.79237967104e-06,"provenance":{"kind":"estimated","model":"peak resident GB \\u00d7 W/GB \\u00d7 wall seconds","constants":{"peak_rss_gb":0.012865536,"wall_seconds":0.001822415,"watts_per_gb":0.375}},"uncertainty":0.5}],"meter_cpu_seconds":0.0005010320000000054,"workload_cpu_seconds":0.001299},"carbon":null,"per_1k_queries":{"queries":10,"wh":0.0018903136772130823,"gco2e":null},"eu_ai_act":{"regulation":"Regulation (EU) 2024/1689, Annex XI, section 1, point 2(d)-(e)","training_compute_flops":null,"training_time_hours":5.062263888888889e-07,"energy_mwh":1.9e-11,"energy_method":"estimated from computational resources: process CPU time \\u00d7 TDP / package threads (AMD EPYC, TDP default (CPU not in a TDP table)); peak resident GB \\u00d7 W/GB \\u00d7 wall seconds"}}')
out("report", "distill.json", b'{"schema_version":3,"report":"distill","data":"digits","arch":"student","config":{"in_channels":1,"height":8,"width":8,"conv_channels":[8,16],"hidden":32,"n_classes":10},"teachers":[],"teacher_eval":null,"out":"s.safetensors","opts":{"epochs":1,"batch":128,"lr":0.024,"weight_decay":0.0001,"warmup":0.05,"seed":0,"temperature":4.0,"alpha":0.7,"mixup":false,"shift":0,"flip":false},"epochs":[{"epoch":1,"loss":2.234700239989203,"seconds":0.019577827,"samples_per_second":73450.43962233399}],"eval":{"n_images":359,"n_correct":93,"accuracy_pct":25.905292479108635,"ci95_pct":[21.64524171493992,30.67553205708604],"per_class_accuracy_pct":[0.0,91.66666666666667,0.0,0.0,0.0,11.11111111111111,94.44444444444444,58.333333333333336,0.0,2.7777777777777777],"images_per_second":100921.19404109544},"seconds":0.048742559,"energy":{"seconds":0.048898573,"sources":[{"source":"cpu-estimate","joules":2.2795725,"provenance":{"kind":"estimated","model":"process CPU time \\u00d7 TDP / package threads (AMD EPYC, TDP default (CPU not in a TDP table))","constants":{"cpu_seconds":0.053637,"logical_cpus":2.0,"package_threads":2.0,"tdp_watts":85.0}},"uncertainty":0.3},{"source":"ram-estimate","joules":0.00040445770076928,"provenance":{"kind":"estimated","model":"peak resident GB \\u00d7 W/GB \\u00d7 wall seconds","constants":{"peak_rss_gb":0.02205696,"wall_seconds":0.048898573,"watts_per_gb":0.375}},"uncertainty":0.5}],"meter_cpu_seconds":9.408099999999933e-05,"workload_cpu_seconds":0.053638223}}')
out("report", "prune.json", b'{"schema_version":3,"report":"prune","input":"s.safetensors","output":"p.safetensors","data":"digits","prune":{"options":{"score":"magnitude","sparsity":0.5,"pattern":"Unstructured","scope":"global"},"layers":[{"name":"conv0","n_weights":72,"n_zero":13},{"name":"conv1","n_weights":1152,"n_zero":597},{"name":"fc1","n_weights":2048,"n_zero":1058},{"name":"fc2","n_weights":320,"n_zero":128}],"sparsity":0.5},"channels":null,"recover":{"epochs":1,"batch":128,"lr":0.001,"weight_decay":0.0001,"warmup":0.0,"seed":0,"temperature":4.0,"alpha":0.7,"mixup":false,"shift":0,"flip":false},"epochs":[{"epoch":1,"loss":0.6430900554121105,"seconds":0.022968842,"samples_per_second":62606.55195416469}],"input_eval":{"n_images":359,"n_correct":93,"accuracy_pct":25.905292479108635,"ci95_pct":[21.64524171493992,30.67553205708604],"per_class_accuracy_pct":[0.0,91.66666666666667,0.0,0.0,0.0,11.11111111111111,94.44444444444444,58.333333333333336,0.0,2.7777777777777777],"images_per_second":85618.3577206533},"eval":{"n_images":359,"n_correct":100,"accuracy_pct":27.855153203342617,"ci95_pct":[23.47105725897343,32.708151005489746],"per_class_accuracy_pct":[0.0,91.66666666666667,0.0,0.0,19.444444444444443,5.555555555555555,86.11111111111111,75.0,0.0,0.0],"images_per_second":107813.63557189278},"accuracy_drop_pt":-1.9498607242339823,"storage":"bitmask","input_bytes":15344,"output_bytes":9209,"seconds":0.046022139,"energy":{"seconds":0.046309481,"sources":[{"source":"cpu-estimate","joules":2.28463,"provenance":{"kind":"estimated","model":"process CPU time \\u00d7 TDP / package threads (AMD EPYC, TDP default (CPU not in a TDP table))","constants":{"cpu_seconds":0.053756,"logical_cpus":2.0,"package_threads":2.0,"tdp_watts":85.0}},"uncertainty":0.3},{"source":"ram-estimate","joules":0.00043333226227507197,"provenance":{"kind":"estimated","model":"peak resident GB \\u00d7 W/GB \\u00d7 wall seconds","constants":{"peak_rss_gb":0.024952832,"wall_seconds":0.046309481,"watts_per_gb":0.375}},"uncertainty":0.5}],"meter_cpu_seconds":5.076599999999723e-05,"workload_cpu_seconds":0.053755894}}')
out("report", "quantize.json", b'{"schema_version":3,"report":"quantize","quantize":{"input":"s.safetensors","output":"q.safetensors","scheme":"int8","input_bytes":15344,"output_bytes":5240,"n_quantized":4,"quantized_parameters":3592,"seconds":0.001521104,"method":"rtn","worst_rel_rmse":[0.004858472511253789,"fc1.weight"]},"energy":{"seconds":0.001865331,"sources":[{"source":"cpu-estimate","joules":0.07352499999999995,"provenance":{"kind":"estimated","model":"process CPU time \\u00d7 TDP / package threads (AMD EPYC, TDP default (CPU not in a TDP table))","constants":{"cpu_seconds":0.001729999999999999,"logical_cpus":2.0,"package_threads":2.0,"tdp_watts":85.0}},"uncertainty":0.3},{"source":"ram-estimate","joules":1.0205658657791998e-05,"provenance":{"kind":"estimated","model":"peak resident GB \\u00d7 W/GB \\u00d7 wall seconds","constants":{"peak_rss_gb":0.014589952,"wall_seconds":0.001865331,"watts_per_gb":0.375}},"uncertainty":0.5}],"meter_cpu_seconds":5.57939999999979e-05,"workload_cpu_seconds":0.001732413999999998}}')
out("report", "check.json", b'{"schema_version":3,"report":"check","policy":"pol.toml","report_file":"m.json","report_kind":"measure","pass":true,"models":[{"model":"true","kind":null,"pass":true,"clauses":[{"key":"max_wh_per_1k_queries","scope":null,"line":1,"limit":{"Number":1000.0},"unit":"Wh","value":0.0018903136772130823,"from":"per_1k_queries.wh","pass":true,"note":""}]}]}')
out("report", "v1-shape.json", json.dumps({"quantize": {"input_bytes": 400, "output_bytes": 100},
    "quality": {"ppl": 11.0, "kld": {"mean": 0.02, "reference_ppl": 10.0}}}).encode())
