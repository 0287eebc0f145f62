#!/usr/bin/env python3
"""Writes SmolLM2-135M as another decoder architecture, for the tests and benchmarks that hold
Frugal against llama.cpp on architectures no checkpoint of which can be fetched here (issue #26).
SmolLM2's weights are decoded from its Q4_1 GGUF and written as F16 (norms and the new small
tensors F32) with its tokenizer; what the architecture adds is seeded:

    qwen2   Q and K rows un-permuted (RoPE on halves, as Qwen2 runs it: the same function as
            SmolLM2's), q/k/v biases ~ N(0, 0.02)
    qwen3   Q and K rows un-permuted, per-head QK RMSNorm weights 1.5 · (1 + N(0, 0.05)) (a
            change of function: SmolLM2 was not trained with QK-norm)
    llama3  general.architecture llama with Llama 3.1's RoPE frequency factors
            (rope_freqs.weight: factor 8, low 1, high 4, original context 8192)
    phi3    Q and K rows un-permuted, Q, K and V fused into attn_qkv (rows q, k, v) and the
            MLP's gate and up into ffn_up (rows gate, up), as Phi-3's checkpoints store them
            (nothing seeded: the same function as SmolLM2's)
    swa     a Mistral-style sliding window: every layer sees the last 128 positions only.
            llama.cpp runs no `llama`/`mistral` file with a window (its converter writes none,
            its loader reads none), so this is written as `granite_swa`, the Llama block that
            llama.cpp runs with a per-layer window: window 128 on all layers, per-head
            attention sinks ~ −2 + N(0, 0.5) (a change of function), and Granite's four
            multipliers set so that they cancel (embedding 1.6 and the tied embedding stored
            ×1.25 with logits divided by 1.25; residual branches ×2, which RMSNorm cancels;
            attention scale 1.25/√64 with Q stored ×0.8)

    make_arch_model.py ARCH OUT.gguf [--seed S]

Deterministic: the same arguments write the same bytes (the tests check a golden sha256).
Needs: gguf==0.19.0 and numpy (scripts/setup-python.sh), SmolLM2's GGUF in the asset cache.
"""
import argparse
import math
import os

import numpy as np
import gguf

ARCHS = ("qwen2", "qwen3", "llama3", "phi3", "swa")
SWA_WINDOW = 128


def field_value(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        sub = field.types[1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data], t, sub
        return [field.parts[i].tolist()[0] for i in field.data], t, sub
    if t == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8"), t, None
    return field.parts[field.data[0]].tolist()[0], t, None


def unpermute(w, n_head):
    """GGUF's Llama Q/K rows (pairs adjacent, for ggml's normal RoPE) back to Hugging Face's
    layout (halves, for NEOX RoPE): the inverse of convert_hf_to_gguf's permute."""
    rows, cols = w.shape
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def llama3_factors(base, dim, factor=8.0, low=1.0, high=4.0, old_ctx=8192):
    """convert_hf_to_gguf's rope_freqs for rope_type llama3."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=ARCHS)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=26)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    cache = os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal"))
    src = gguf.GGUFReader(os.path.join(cache, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    f = {k: field_value(v)[0] for k, v in src.fields.items() if not k.startswith("tokenizer.")}
    n_head, n_kv = f["llama.attention.head_count"], f["llama.attention.head_count_kv"]
    d = f["llama.embedding_length"]
    hd = d // n_head
    arch = {"llama3": "llama", "swa": "granite_swa"}.get(a.arch, a.arch)
    w = gguf.GGUFWriter(a.out, arch)
    # llama.cpp marks special pieces of Phi-3's own vocabulary when the name says phi3 (and
    # fails on SmolLM2's, which lacks `</s>`): this one's name does not say it.
    w.add_name("smollm2-with-fused-tensors" if a.arch == "phi3" else f"smollm2-as-{a.arch}")
    w.add_context_length(f["llama.context_length"])
    w.add_embedding_length(d)
    w.add_block_count(f["llama.block_count"])
    w.add_feed_forward_length(f["llama.feed_forward_length"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(f["llama.rope.freq_base"])
    w.add_layer_norm_rms_eps(f["llama.attention.layer_norm_rms_epsilon"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if a.arch == "swa":
        w.add_sliding_window(SWA_WINDOW)
        w.add_sliding_window_pattern([True] * f["llama.block_count"])
        w.add_embedding_scale(1.6)
        w.add_logit_scale(1.25)
        w.add_residual_scale(2.0)
        w.add_attention_scale(1.25 / math.sqrt(hd))
    for key, field in src.fields.items():
        if key.startswith("tokenizer."):
            val, t, sub = field_value(field)
            w.add_key_value(key, val, t, sub)
    tensors = []
    for t in src.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        x = x.reshape([int(v) for v in reversed(t.shape.tolist())]) if x.ndim > 1 or len(t.shape) > 1 else x.reshape(-1)
        name = t.name
        if a.arch in ("qwen2", "qwen3", "phi3") and name.endswith(("attn_q.weight", "attn_k.weight")):
            x = unpermute(x, n_head if "attn_q" in name else n_kv)
        if a.arch == "swa" and name == "token_embd.weight":
            x = x * 1.25
        if a.arch == "swa" and name.endswith("attn_q.weight"):
            x = x * 0.8
        tensors.append((name, x))
        if a.arch == "swa" and name.endswith("attn_norm.weight"):
            sinks = rng.normal(-2.0, 0.5, n_head).astype(np.float32)
            tensors.append((name.replace("attn_norm.weight", "attn_sinks.weight"), sinks))
        if a.arch == "qwen2" and name.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight")):
            tensors.append((name.replace(".weight", ".bias"), rng.normal(0, 0.02, x.shape[0]).astype(np.float32)))
        if a.arch == "qwen3" and name.endswith("attn_norm.weight"):
            blk = name[: -len("attn_norm.weight")]
            for n in ("attn_q_norm.weight", "attn_k_norm.weight"):
                tensors.append((blk + n, (1.5 * (1 + rng.normal(0, 0.05, hd))).astype(np.float32)))
    if a.arch == "llama3":
        tensors.append(("rope_freqs.weight", llama3_factors(f["llama.rope.freq_base"], hd)))
    if a.arch == "phi3":
        by = dict(tensors)
        fused = {}
        for i in range(f["llama.block_count"]):
            b = f"blk.{i}."
            fused[b + "attn_qkv.weight"] = np.concatenate(
                [by.pop(b + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight")])
            fused[b + "ffn_up.weight"] = np.concatenate(
                [by.pop(b + n) for n in ("ffn_gate.weight", "ffn_up.weight")])
        by.update(fused)
        tensors = list(by.items())
    tensors.sort(key=lambda nt: nt[0])
    for name, x in tensors:
        if x.ndim == 2:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, x.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
