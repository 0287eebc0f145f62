#!/usr/bin/env python3
"""Writes a seeded, Llama-shaped F16 GGUF of a given size with SmolLM2's tokenizer, streaming
tensor by tensor (never the whole model in memory), for scale benchmarks. Weights are random
(normal, std 0.02; norms 1), so the model is not a language model: it has the shape, bytes and
arithmetic of one.

    make_big_model.py SHAPE OUT.gguf [--seed S]      # SHAPE: 1.5b | 7b | tiny (CI-sized)

Needs: gguf==0.19.0 and numpy (scripts/setup-python.sh), SmolLM2's GGUF in the asset cache
(its tokenizer metadata is copied).
"""
import argparse
import os
import sys

import numpy as np
import gguf

from make_arch_model import field_value

SHAPES = {
    # name: (n_embd, n_layer, n_ff, n_head, n_head_kv)
    "tiny": (256, 4, 688, 8, 2),
    "1.5b": (1536, 28, 8960, 12, 2),
    "7b": (4096, 32, 11008, 32, 8),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=SHAPES)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cache = os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal"))
    src = gguf.GGUFReader(os.path.join(cache, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    d, n_layer, n_ff, n_head, n_kv = SHAPES[a.shape]
    head_dim = d // n_head
    vocab = len(src.fields["tokenizer.ggml.tokens"].data)
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"frugal-seeded-{a.shape}")
    w.add_context_length(8192)
    w.add_embedding_length(d)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # The tokenizer, as SmolLM2 has it.
    for key, field in src.fields.items():
        if not key.startswith("tokenizer."):
            continue
        val, t, sub = field_value(field)
        w.add_key_value(key, val, t, sub)
    tensors = [("token_embd.weight", (vocab, d))]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (d,)),
            (b + "attn_q.weight", (n_head * head_dim, d)),
            (b + "attn_k.weight", (n_kv * head_dim, d)),
            (b + "attn_v.weight", (n_kv * head_dim, d)),
            (b + "attn_output.weight", (d, n_head * head_dim)),
            (b + "ffn_norm.weight", (d,)),
            (b + "ffn_gate.weight", (n_ff, d)),
            (b + "ffn_up.weight", (n_ff, d)),
            (b + "ffn_down.weight", (d, n_ff)),
        ]
    tensors += [("output_norm.weight", (d,)), ("output.weight", (vocab, d))]

    def dtype(shape):
        return np.float32 if len(shape) == 1 else np.float16

    for name, shape in tensors:
        dt = np.dtype(dtype(shape))
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    total = 0
    for name, shape in tensors:
        if len(shape) == 1:
            t = np.ones(shape, dtype=np.float32)
        else:
            # Row blocks of at most 64 Mi values, so memory stays small.
            rows = max(1, (64 << 20) // shape[1])
            parts = [
                (rng.standard_normal((min(rows, shape[0] - r), shape[1]), dtype=np.float32) * 0.02).astype(np.float16)
                for r in range(0, shape[0], rows)
            ]
            t = np.concatenate(parts) if len(parts) > 1 else parts[0]
        w.write_tensor_data(t)
        total += t.size
    w.close()
    print(f"{a.out}: {a.shape}, {total / 1e9:.2f} B parameters, {os.path.getsize(a.out) / 2**30:.2f} GiB", file=sys.stderr)


if __name__ == "__main__":
    main()
