#!/usr/bin/env python3
"""Writes a seeded, Llama-shaped Hugging Face checkpoint folder in BF16, sharded, for the
conversion benchmark (bench/convert-7b.sh): config.json (LlamaForCausalLM), N shards
model-0000i-of-0000N.safetensors with model.safetensors.index.json, and the tokenizer files of
a folder given (SmolLM2's, from `frugal export`). Written tensor by tensor (never the whole
model in memory). Weights are random (normal, std 0.02; norms 1): the shape, bytes and
arithmetic of a model, not a language model.

    make_hf_checkpoint.py SHAPE OUT_DIR TOKENIZER_DIR [--shards 3] [--seed S]   # SHAPE: 7b | tiny
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

SHAPES = {
    # name: (n_embd, n_layer, n_ff, n_head, n_head_kv)
    "tiny": (256, 4, 688, 8, 2),
    "7b": (4096, 32, 11008, 32, 8),
}


def bf16_bytes(x):
    """float32 -> bf16 bytes, rounded to nearest even (x is finite)."""
    u = x.view(np.uint32)
    r = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    return r.tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=SHAPES)
    ap.add_argument("out")
    ap.add_argument("tokenizer_dir")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    d, n_layer, n_ff, n_head, n_kv = SHAPES[a.shape]
    tok = json.load(open(os.path.join(a.tokenizer_dir, "tokenizer.json"), encoding="utf-8"))
    vocab = len(tok["model"]["vocab"])
    hd = d // n_head
    tensors = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        tensors += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (n_head * hd, d)),
            (p + "self_attn.k_proj.weight", (n_kv * hd, d)),
            (p + "self_attn.v_proj.weight", (n_kv * hd, d)),
            (p + "self_attn.o_proj.weight", (d, n_head * hd)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (n_ff, d)),
            (p + "mlp.up_proj.weight", (n_ff, d)),
            (p + "mlp.down_proj.weight", (d, n_ff)),
        ]
    tensors += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    total = sum(2 * int(np.prod(s)) for _, s in tensors)
    # Split into shards of about equal size, in order.
    shards, cur, acc = [[]], 0, 0
    for t in tensors:
        if acc >= total * (len(shards)) / a.shards and len(shards) < a.shards:
            shards.append([])
        shards[-1].append(t)
        acc += 2 * int(np.prod(t[1]))
    os.makedirs(a.out)
    rng = np.random.default_rng(a.seed)
    weight_map = {}
    n = len(shards)
    for si, group in enumerate(shards):
        name = f"model-{si + 1:05d}-of-{n:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for tn, shape in group:
            size = 2 * int(np.prod(shape))
            header[tn] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + size]}
            off += size
            weight_map[tn] = name
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * ((8 - len(hj) % 8) % 8)
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(struct.pack("<Q", len(hj)))
            f.write(hj)
            for tn, shape in group:
                if len(shape) == 1:
                    x = np.ones(shape, dtype=np.float32)
                else:
                    x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
                f.write(bf16_bytes(x))
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": d, "intermediate_size": n_ff, "num_attention_heads": n_head,
        "num_key_value_heads": n_kv, "num_hidden_layers": n_layer, "vocab_size": vocab,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }
    json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.tokenizer_dir, fn), os.path.join(a.out, fn))


if __name__ == "__main__":
    main()
