//! A hand-written BERT forward pass on flat `f32` buffers, for encoding many passages fast.
//!
//! [`Bert::hidden_states`](crate::bert::Bert::hidden_states) runs on candle tensors, pads every
//! batch to its longest sequence and goes through the [`Linear`](crate::linear::Linear) seam
//! (so calibration can record inputs). Here the sequences of a batch are packed one after
//! another as rows of one `[tokens, hidden]` matrix with no padding: the four linear layers of a
//! block are single matrix products over every token of the batch (query, key and value fused
//! into one), attention runs per sequence and head on strided views of that matrix, and the
//! element-wise work (bias, residual, LayerNorm, GELU, softmax) is fused into passes over rows
//! spread over the cores. Results match the candle path to float rounding (tested).

use crate::int8_kernels::{
    matmul_i8, matmul_i8_gelu_quantize, quantize_acts, quantize_gelu_acts, PackedI8, QuantizedActs,
};
use crate::kernels::{exp, gelu_erf, matmul, matmul_strided, max, sum_by};
use rayon::prelude::*;

/// A linear layer's weight, `[out, in]` row-major as in the checkpoint.
#[derive(Debug, Clone)]
pub enum Product {
    F32(Vec<f32>),
    /// Int8 as stored in the file: its products round their inputs to int8 in groups
    /// ([`crate::int8_kernels`]).
    Int8(PackedI8),
}

/// A linear layer `y = x · Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Dense {
    pub weight: Product,
    pub bias: Vec<f32>,
}

impl Dense {
    fn n_in(&self) -> usize {
        match &self.weight {
            Product::F32(w) => w.len() / self.bias.len(),
            Product::Int8(q) => q.k,
        }
    }
    fn int8(&self) -> Option<&PackedI8> {
        match &self.weight {
            Product::Int8(q) => Some(q),
            Product::F32(_) => None,
        }
    }
}

/// One encoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Query, key and value stacked: `[3·hidden, hidden]`.
    pub qkv: Dense,
    pub attn_out: Dense,
    pub attn_ln: (Vec<f32>, Vec<f32>),
    pub inter: Dense,
    pub out: Dense,
    pub out_ln: (Vec<f32>, Vec<f32>),
}

/// Every weight of the encoder, and its shape.
#[derive(Debug, Clone)]
pub struct BertWeights {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f32,
    /// `[vocab, hidden]`, `[positions, hidden]`, and token type 0's row `[hidden]`.
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type0: Vec<f32>,
    pub emb_ln: (Vec<f32>, Vec<f32>),
    pub layers: Vec<LayerWeights>,
}

crate::avx512_dispatch! {
    /// In-place LayerNorm of each row of `rows` (rows of `w.len()` values).
    fn layer_norm_rows(rows: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let n = w.len() as f32;
        for row in rows.chunks_mut(w.len()) {
            let mean = sum_by(row, |v| v) / n;
            let var = sum_by(row, |v| (v - mean) * (v - mean)) / n;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

/// [`layer_norm_rows`] over the cores.
fn layer_norm(x: &mut [f32], (w, b): &(Vec<f32>, Vec<f32>), eps: f32) {
    x.par_chunks_mut(w.len() * 16)
        .for_each(|rows| layer_norm_rows(rows, w, b, eps));
}

crate::avx512_dispatch! {
    /// Row-wise softmax of `scores` (rows of `t`) after scaling by `scale`.
    fn softmax_rows(scores: &mut [f32], t: usize, scale: f32) {
        for row in scores.chunks_mut(t) {
            let max = max(row);
            for s in row.iter_mut() {
                *s = exp((*s - max) * scale);
            }
            let inv = 1.0 / sum_by(row, |s| s);
            for s in row.iter_mut() {
                *s *= inv;
            }
        }
    }
}

crate::avx512_dispatch! {
    /// GELU (erf) in place.
    fn gelu_in_place(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = gelu_erf(*x);
        }
    }
}

/// `dst ← bias` on every row, or `dst ← dst + bias` with `residual`.
fn init_rows(dst: &mut [f32], bias: &[f32], residual: bool) {
    dst.par_chunks_mut(bias.len()).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = if residual { *v + b } else { *b };
        }
    });
}

/// `dst[rows×out] = (dst if residual) + f(x) · Wᵀ + b`, where `f` is GELU if `gelu` and the
/// identity otherwise (fused into the rounding of int8 inputs; an f32 layer takes only
/// `gelu = false`); `acts` is scratch for int8 inputs.
fn linear(
    x: &[f32],
    layer: &Dense,
    dst: &mut [f32],
    residual: bool,
    gelu: bool,
    acts: &mut QuantizedActs,
) {
    let n_in = layer.n_in();
    init_rows(dst, &layer.bias, residual);
    match &layer.weight {
        Product::Int8(q) => {
            if gelu {
                quantize_gelu_acts(x, n_in, acts);
            } else {
                quantize_acts(x, n_in, acts);
            }
            matmul_i8(acts, q, dst);
        }
        Product::F32(w) => {
            assert!(!gelu, "GELU is fused only into int8 inputs");
            let shape = (x.len() / n_in, layer.bias.len(), n_in);
            matmul(shape, dst, true, x, (n_in, 1), w, (1, n_in));
        }
    }
}

/// Self-attention of one sequence (`t` rows of the fused `qkv` `[t, 3·hidden]`) into `ctx`
/// `[t, hidden]`, head by head; `scores` is scratch of at least `t·t`.
fn attention(qkv: &[f32], ctx: &mut [f32], w: &BertWeights, t: usize, scores: &mut Vec<f32>) {
    let h = w.hidden;
    let hd = h / w.heads;
    let scale = 1.0 / (hd as f32).sqrt();
    scores.resize(t * t, 0.0);
    for head in 0..w.heads {
        let q = &qkv[head * hd..];
        let k = &qkv[h + head * hd..];
        let v = &qkv[2 * h + head * hd..];
        // scores[i, j] = q_i · k_j
        matmul((t, t, hd), scores, false, q, (3 * h, 1), k, (1, 3 * h));
        softmax_rows(scores, t, scale);
        matmul_strided(
            (t, hd, t),
            &mut ctx[head * hd..],
            h,
            false,
            scores,
            (t, 1),
            v,
            (3 * h, 1),
        );
    }
}

/// Splits `buf` into consecutive pieces of `lens[i] · width` values.
fn split_rows<'a>(mut buf: &'a mut [f32], lens: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    for &l in lens {
        let (a, b) = buf.split_at_mut(l * width);
        out.push(a);
        buf = b;
    }
    out
}

/// Last hidden states of each sequence, packed: `[Σ len, hidden]`. Token ids must be below the
/// vocabulary size and each sequence no longer than the position table (the caller checks).
pub fn hidden_states(w: &BertWeights, seqs: &[&[u32]]) -> Vec<f32> {
    let h = w.hidden;
    let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    let n: usize = lens.iter().sum();
    let mut x = vec![0f32; n * h];
    {
        let mut rows = x.chunks_mut(h);
        for s in seqs {
            for (pos, &id) in s.iter().enumerate() {
                let row = rows.next().expect("n rows");
                let word = &w.word[id as usize * h..][..h];
                let p = &w.position[pos * h..][..h];
                for (((v, a), b), c) in row.iter_mut().zip(word).zip(p).zip(&w.token_type0) {
                    *v = a + b + c;
                }
            }
        }
    }
    layer_norm(&mut x, &w.emb_ln, w.eps);
    let mut qkv = vec![0f32; n * 3 * h];
    let mut ctx = vec![0f32; n * h];
    let mut inter = Vec::new(); // only for f32 MLPs
    let mut acts = QuantizedActs::default();
    let mut mlp_acts = QuantizedActs::default();
    for l in &w.layers {
        linear(&x, &l.qkv, &mut qkv, false, false, &mut acts);
        let qkv_seqs: Vec<&[f32]> = {
            let mut rest: &[f32] = &qkv;
            lens.iter()
                .map(|&t| {
                    let (a, b) = rest.split_at(t * 3 * h);
                    rest = b;
                    a
                })
                .collect()
        };
        split_rows(&mut ctx, &lens, h)
            .into_par_iter()
            .zip(qkv_seqs)
            .zip(&lens)
            .for_each_init(Vec::new, |scores, ((c, q), &t)| {
                attention(q, c, w, t, scores)
            });
        // x ← LN(x + ctx·Woᵀ + b)
        linear(&ctx, &l.attn_out, &mut x, true, false, &mut acts);
        layer_norm(&mut x, &l.attn_ln, w.eps);
        match (l.inter.int8(), l.out.int8()) {
            // Both MLP products in int8: the first one's GELU output goes straight to int8.
            (Some(wi), Some(wo)) => {
                quantize_acts(&x, h, &mut acts);
                matmul_i8_gelu_quantize(&acts, wi, &l.inter.bias, &mut mlp_acts);
                init_rows(&mut x, &l.out.bias, true);
                matmul_i8(&mlp_acts, wo, &mut x);
            }
            (_, wo) => {
                inter.resize(n * w.intermediate, 0.0);
                linear(&x, &l.inter, &mut inter, false, false, &mut acts);
                // GELU: fused into the rounding of the next product's input when that is int8.
                let fused_gelu = wo.is_some();
                if !fused_gelu {
                    inter
                        .par_chunks_mut(w.intermediate * 16)
                        .for_each(gelu_in_place);
                }
                linear(&inter, &l.out, &mut x, true, fused_gelu, &mut acts);
            }
        }
        layer_norm(&mut x, &l.out_ln, w.eps);
    }
    x
}

/// Mean-pooled, L2-normalised embedding of each sequence from packed hidden states.
pub fn mean_pool_normalize(x: &[f32], lens: &[usize], h: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &t in lens {
        let mut m = vec![0f32; h];
        for row in x[start * h..(start + t) * h].chunks(h) {
            for (a, v) in m.iter_mut().zip(row) {
                *a += v;
            }
        }
        start += t;
        let inv_t = 1.0 / (t.max(1) as f32);
        m.iter_mut().for_each(|v| *v *= inv_t);
        let norm = m.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        m.iter_mut().for_each(|v| *v /= norm);
        out.push(m);
    }
    out
}
