"""PyTorch's side of bench/encoder-int.sh: all-MiniLM-L6-v2 in F32 and with PyTorch's dynamic
int8 quantization (nn.Linear → qint8), on exactly the items Frugal evaluated (token ids written by
`frugal eval --dump-items`), with the same pooling (mean over tokens, L2-normalised), the same
batching (32 items sorted by length), the same 1-NN protocol (same-document neighbours excluded)
and the same thread count. Prints one row per variant in bench/encoder-int.sh's format.

Usage: python encoder_torch.py MODEL_DIR ITEMS.json THREADS
"""
import json, sys, time
import torch
from transformers import BertModel

model_dir, items_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
items = json.load(open(items_path))
order = sorted(range(len(items)), key=lambda i: len(items[i]["ids"]))

def embed(model):
    out = [None] * len(items)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(order), 32):
            group = order[k:k + 32]
            t = max(len(items[i]["ids"]) for i in group)
            ids = torch.zeros((len(group), t), dtype=torch.long)
            mask = torch.zeros((len(group), t), dtype=torch.long)
            for r, i in enumerate(group):
                n = len(items[i]["ids"])
                ids[r, :n] = torch.tensor(items[i]["ids"])
                mask[r, :n] = 1
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            e = torch.nn.functional.normalize(e, dim=1)
            for r, i in enumerate(group):
                out[i] = e[r]
    secs = time.perf_counter() - t0
    return torch.stack(out), secs

def knn(e):
    sims = e @ e.T
    docs = [it["doc"] for it in items]
    genres = [it["genre"] for it in items]
    hits = 0
    for i in range(len(items)):
        s = sims[i].clone()
        for j in range(len(items)):
            if docs[j] == docs[i]:
                s[j] = -float("inf")
        j = int(torch.argmax(s))
        hits += genres[j] == genres[i]
    return 100.0 * hits / len(items)

f32 = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
ref, secs = embed(f32)
ref_knn = knn(ref)
rows = [("torch-F32", ref, secs)]
q8 = torch.ao.quantization.quantize_dynamic(f32, {torch.nn.Linear}, dtype=torch.qint8)
e8, secs8 = embed(q8)
rows.append(("torch-int8-dyn", e8, secs8))
for name, e, s in rows:
    cos = (e * ref).sum(1)
    print(f"{name:16} {'-':>8} {float(cos.mean()):10.6f} {float(cos.min()):10.6f} {knn(e):7.2f} {ref_knn:7.2f} {len(items) / s:8.1f}")
print(f"(torch {torch.__version__}; cosine and F32 1-NN against torch's own F32)", file=sys.stderr)
