//! Calibration shared by every calibration-aware method: the calibration text as token
//! chunks ([`Calibration`]), llama-imatrix's statistic ([`collect_imatrix`]), the sequential
//! block driver ([`sequential`]: each decoder block's input statistics — Gram matrices Σxxᵀ
//! and summed |x| — on the activations of the blocks already treated), and the dampened
//! inverse Cholesky factor GPTQ and SparseGPT spread rounding errors with.

use super::Imatrix;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use frugal_formats::gguf::GgufFile;
use frugal_models::linear::Weight;
use frugal_models::llama::{Block, Llama, LoadOptions};
use frugal_models::scratch::{Placement, Scratch};
use frugal_models::tokenizer::GgufTokenizer;
use std::collections::HashMap;

/// Calibration text cut into chunks as llama-imatrix does: the whole text tokenized once,
/// consecutive `ctx`-token chunks, each starting with BOS when the model adds one.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub chunks: Vec<Vec<u32>>,
    pub source: String,
}

impl Calibration {
    /// At most `max_tokens` tokens (whole chunks) of `text`.
    pub fn from_text(
        f: &GgufFile,
        text: &str,
        source: &str,
        ctx: usize,
        max_tokens: usize,
    ) -> Result<Calibration> {
        let tok = GgufTokenizer::from_gguf(f)?;
        let ids = tok.encode(text, tok.add_bos)?;
        let ctx = ctx.max(8);
        let n_chunks = (ids.len() / ctx).min(max_tokens / ctx);
        if n_chunks == 0 {
            return Err(Error::BadCalibration(format!(
                "{source}: {} tokens, fewer than one chunk of {ctx} (or a token budget below it)",
                ids.len()
            )));
        }
        let chunks = (0..n_chunks)
            .map(|i| {
                let mut c = ids[i * ctx..(i + 1) * ctx].to_vec();
                if let (true, Some(b)) = (tok.add_bos, tok.bos) {
                    c[0] = b;
                }
                c
            })
            .collect();
        Ok(Calibration {
            chunks,
            source: source.to_string(),
        })
    }

    pub fn n_tokens(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

/// Loads the model with exact f32 weights (no activation rounding): calibration statistics are
/// properties of the model, not of a kernel.
pub(crate) fn load_model(f: &GgufFile) -> Result<Llama> {
    Ok(Llama::load(
        f,
        LoadOptions::EXACT,
        &candle_core::Device::Cpu,
    )?)
}

/// Names of block `i`'s weights, grouped by the input they read (the order of
/// [`Llama::block_forward`]'s trace).
pub(crate) fn block_names(i: usize) -> [Vec<String>; 4] {
    let n = |s: &str| format!("blk.{i}.{s}.weight");
    [
        vec![n("attn_q"), n("attn_k"), n("attn_v")],
        vec![n("attn_output")],
        vec![n("ffn_gate"), n("ffn_up")],
        vec![n("ffn_down")],
    ]
}

/// The names of block `i`'s linear layers in `model`, grouped by input as [`block_names`]: the
/// file's tensor names, or for a part of a fused weight the part's (`blk.0.attn_qkv.weight[q]`,
/// [`stored_name`] gives the file's).
pub(crate) fn layer_names(model: &Llama, i: usize) -> [Vec<String>; 4] {
    let b = &model.blocks[i];
    let n = |l: &frugal_models::linear::Linear| l.name.clone();
    [
        vec![n(&b.q), n(&b.k), n(&b.v)],
        vec![n(&b.o)],
        vec![n(&b.gate), n(&b.up)],
        vec![n(&b.down)],
    ]
}

/// The file's tensor that a layer of [`layer_names`] is stored in: its own name, or for a part
/// of a fused weight the fused tensor's (`blk.0.attn_qkv.weight[q]` → `blk.0.attn_qkv.weight`).
pub(crate) fn stored_name(layer: &str) -> &str {
    layer.split_once('[').map_or(layer, |(s, _)| s)
}

/// The widths of a block's four distinct linear inputs, in [`block_names`]' order.
pub(crate) fn input_dims(c: &frugal_models::llama::LlamaConfig) -> [usize; 4] {
    [c.n_embd, c.n_head * c.head_dim(), c.n_embd, c.n_ff]
}

/// Whether `name` is one of a decoder block's linear weights (`blk.N.attn_q.weight`, …, and
/// Phi-3's fused `blk.N.attn_qkv.weight`; its fused `ffn_up` has the plain one's name).
pub(crate) fn is_block_weight(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("blk.") else {
        return false;
    };
    let Some((i, _)) = rest.split_once('.') else {
        return false;
    };
    i.parse::<usize>().is_ok_and(|i| {
        block_names(i).iter().flatten().any(|n| n == name)
            || name == format!("blk.{i}.attn_qkv.weight")
    })
}

/// The name of the output layer's weight (the token embedding when they are tied).
/// Whether calibration measures tensor `name`'s input: every layer's, so all but a token
/// embedding (a lookup, not a product) that is not also the output layer.
pub(crate) fn measures(f: &GgufFile, name: &str) -> bool {
    !matches!(name, "token_embd.weight" | "per_layer_token_embd.weight") || name == output_name(f)
}

fn output_name(f: &GgufFile) -> &'static str {
    if f.tensor("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    }
}

fn sum_sq_cols(x: &Tensor) -> Result<Vec<f64>> {
    let v: Vec<f32> = x.sqr()?.sum(0)?.to_vec1()?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// Per column of `x` (`[rows, n]`), Σ of the squared error of rounding each row as ggml rounds
/// a layer's input, for each of [`super::InputRounding::FORMATS`] in turn (`3n` sums; the
/// 256-wide blocks' zero where 256 does not tile `n`). Rows in fixed groups, summed in order:
/// the same numbers however many threads.
fn rounding_cols(x: &Tensor) -> Result<Vec<f64>> {
    use rayon::prelude::*;
    let n = x.dim(1)?;
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let partial: Vec<Vec<f64>> = v
        .par_chunks(64 * n)
        .map(|rows| {
            let mut sums = vec![0f64; 3 * n];
            let mut r = vec![0f32; n];
            for row in rows.chunks_exact(n) {
                for (k, fmt) in super::InputRounding::FORMATS.iter().enumerate() {
                    if *fmt == frugal_models::linear::ActRounding::Q8K && n % 256 != 0 {
                        continue;
                    }
                    r.copy_from_slice(row);
                    fmt.round_row(&mut r);
                    for ((s, a), b) in sums[k * n..(k + 1) * n].iter_mut().zip(row).zip(&r) {
                        *s += f64::from(a - b).powi(2);
                    }
                }
            }
            sums
        })
        .collect();
    let mut out = vec![0f64; 3 * n];
    for p in partial {
        out.iter_mut().zip(p).for_each(|(o, p)| *o += p);
    }
    Ok(out)
}

/// Σx² per column then [`rounding_cols`]' sums: what one chunk adds for one input.
fn input_cols(x: &Tensor) -> Result<Vec<f64>> {
    let mut v = sum_sq_cols(x)?;
    v.extend(rounding_cols(x)?);
    Ok(v)
}

/// llama-imatrix's importance matrix (per input column mean x²) from the full-precision model,
/// streamed block by block: the embedding and final norm are loaded once, then each decoder
/// block is decoded, run on every chunk this rank owns, and dropped — at most one block is in
/// F32 at a time, with the chunks' hidden states (tokens × width) beside it, so peak memory
/// grows with a block, not with the model. Each chunk's sums are the same numbers, in the same
/// order, as a whole-model pass gives, and chunks are added in [`frugal_dist::tree_sum`]'s
/// order, so MPI ranks (each running its share of the chunks) get the single process's matrix
/// bit for bit.
pub fn collect_imatrix(
    f: &GgufFile,
    calib: &Calibration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Imatrix> {
    let comm = frugal_dist::world();
    let cpu = candle_core::Device::Cpu;
    let shell = Llama::load_bare_shell(f, &cpu)?;
    let c = shell.config.clone();
    let n_layer = c.n_layer;
    // Every chunk's Σx² per distinct input, laid out block by block, then the output layer's.
    let dims = input_dims(&c);
    let mut layout: Vec<(Vec<String>, usize)> = Vec::with_capacity(4 * n_layer + 1);
    for i in 0..n_layer {
        let mut names = block_names(i);
        // Phi-3's fused QKV reads the queries' input.
        names[0].push(format!("blk.{i}.attn_qkv.weight"));
        layout.extend(names.into_iter().zip(dims));
    }
    layout.push((vec![output_name(f).to_string()], c.n_embd));
    // Each input's Σx², then its three rounding errors.
    let len = 4 * layout.iter().map(|(_, n)| n).sum::<usize>();
    let mine = frugal_dist::tree_items(comm, calib.chunks.len());
    let chunks = &calib.chunks[mine.clone()];
    let (ctxs, mut xs) = first_inputs(&shell, f, chunks.iter())?;
    let mut sums: Vec<Vec<f64>> = (0..chunks.len()).map(|_| Vec::with_capacity(len)).collect();
    for i in 0..n_layer {
        let block = Llama::load_block(f, &c, i, LoadOptions::EXACT, &cpu)?;
        for ((x, ctx), v) in xs.iter_mut().zip(&ctxs).zip(&mut sums) {
            let (out, tr) = shell.block_forward_with(&block, x, ctx, true)?;
            for input in tr.expect("traced").iter() {
                v.extend(input_cols(input)?);
            }
            *x = out;
        }
        progress(i + 1, n_layer + 1);
    }
    for (x, v) in xs.iter().zip(&mut sums) {
        v.extend(input_cols(&shell.final_norm(x)?)?);
    }
    progress(n_layer + 1, n_layer + 1);
    let sums = frugal_dist::tree_sum(
        comm,
        calib.chunks.len(),
        len,
        &mut |k| -> Result<Vec<f64>> { Ok(std::mem::take(&mut sums[k - mine.start])) },
    )?;
    let n = calib.n_tokens() as f64;
    let mut entries = HashMap::new();
    let mut rounding = HashMap::new();
    let mut rest = &sums[..];
    for (names, width) in layout {
        let (v, tail) = rest.split_at(4 * width);
        rest = tail;
        let mean = |k: usize| -> Vec<f32> {
            v[k * width..(k + 1) * width]
                .iter()
                .map(|s| (s / n) as f32)
                .collect()
        };
        let r = super::InputRounding {
            q8_0: mean(1),
            q8k: if width % 256 == 0 {
                mean(2)
            } else {
                Vec::new()
            },
            f16: mean(3),
        };
        // The file's own tensors (Phi-3 has `attn_qkv` where the others have `attn_q`…).
        for name in names.into_iter().filter(|n| f.tensor(n).is_some()) {
            entries.insert(name.clone(), mean(0));
            rounding.insert(name, r.clone());
        }
    }
    Ok(Imatrix {
        entries,
        n_tokens: calib.n_tokens() as u64,
        source: calib.source.clone(),
        file: None,
        rounding,
        gains: HashMap::new(),
    })
}

/// Calibration chunks the gains are measured on (evenly spaced among the calibration's): every
/// block's input is kept for each, and each output unit's gain is a mean over their tokens.
pub const GAIN_CHUNKS: usize = 4;

/// Positions whose logits are formed at once in [`collect_gains`].
const GAIN_ROWS: usize = 32;

/// Seed of the tokens sampled from the model's own distribution ([`collect_gains`]).
const GAIN_SEED: u64 = 0x6a1e_5eed;

/// Per weight, what one unit of its importance-weighted squared error costs in KL divergence.
/// A candidate type's importance-weighted error is Σ_j m_j · Σ_rows δw² (m_j the input's mean
/// x², [`Imatrix::entries`]; and the rounded input's [`super::InputRounding`] term, in the same
/// units), and the mean KL divergence a weight error δW adds is, to second order, ½ · vec(δW)ᵀ
/// F vec(δW) per token, F the Fisher information of the weight: the expected square of the
/// gradient of the log-likelihood of tokens drawn from the model's own next-token
/// distribution. The gain is F's trace over the weight divided by rows · Σ_j m_j, so that
/// ½ · gain · error is exact in expectation for an error spread evenly over the weight —
/// including what the first blocks' errors cost by the time they reach the logits, and how an
/// error repeated at every position (the same δW on correlated inputs) adds up through
/// attention, which a per-layer error does not see. Every tensor's error in the same units.
///
/// Per chunk, one token drawn at every position; a weight's gradient is Gᵀ = Σ_t g_t x_tᵀ (g_t
/// the gradient at the layer's output, from a zero probe added to it:
/// [`Llama::block_forward_probed`]) and its squared norm sums F's diagonal over the chunk. The
/// output layer's is exact, without drawing: Σ_t Σ_i p_ti (1 − p_ti) · ‖x_t‖². An untied token
/// embedding's gain is per element of the table (its error is plain Σ δ², tokens taken as
/// equally frequent): the gradients of each token's rows gathered, times the embedding's factor.
/// A tied table's weight gain is the output layer's plus the lookup's, in the output layer's
/// units ([`Gain`]; the lookup adds about a third on Gemma 3, whose embedding is scaled by
/// √640).
///
/// Streamed as the importance matrix is: a forward pass keeps every block's input for
/// [`GAIN_CHUNKS`] chunks, the output layer gives the gradient at the last block's output, and
/// the blocks are loaded again from the last to the first, each run differentiably on its kept
/// inputs and given the gradient its output received. One block in F32 at a time, and the
/// output layer; every MPI rank measures the same chunks (the same gains everywhere).
pub fn collect_gains(
    f: &GgufFile,
    calib: &Calibration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<HashMap<String, Gain>> {
    use candle_core::Var;
    let cpu = candle_core::Device::Cpu;
    let mut shell = Llama::load_bare_shell(f, &cpu)?;
    shell.load_output(f, LoadOptions::EXACT)?;
    let c = shell.config.clone();
    let n_layer = c.n_layer;
    let total = 2 * n_layer + 1;
    let n = calib.chunks.len();
    let k = GAIN_CHUNKS.min(n);
    let chunks: Vec<&Vec<u32>> = (0..k).map(|j| &calib.chunks[j * n / k]).collect();
    let (ctxs, mut xs) = first_inputs(&shell, f, chunks.iter().copied())?;
    // Every block's input, kept for the backward pass.
    let mut inputs: Vec<Vec<Tensor>> = Vec::with_capacity(n_layer);
    for i in 0..n_layer {
        let block = Llama::load_block(f, &c, i, LoadOptions::EXACT, &cpu)?;
        let mut next = Vec::with_capacity(k);
        for (x, ctx) in xs.iter().zip(&ctxs) {
            next.push(shell.block_forward_with(&block, x, ctx, false)?.0);
        }
        inputs.push(std::mem::replace(&mut xs, next));
        progress(i + 1, total);
    }
    let sum = |t: &Tensor| -> Result<f64> { Ok(f64::from(t.sum_all()?.to_scalar::<f32>()?)) };
    // Per stored weight: F's trace, and rows · Σ_t ‖x_t‖² over the same tokens.
    let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
    // The output layer's F trace and rows · Σ_t ‖x_t‖².
    let mut output = (0f64, 0f64);
    let mut rng = frugal_formats::rng::SplitMix64(GAIN_SEED);
    let mut grads: Vec<Tensor> = Vec::with_capacity(k);
    let n_vocab = c.n_vocab;
    for x in &xs {
        let t = x.dim(0)?;
        // A few positions at a time (the norm and the output layer work per position), so that
        // a large vocabulary's logits and their gradients stay small.
        let mut parts = Vec::with_capacity(t.div_ceil(GAIN_ROWS));
        for from in (0..t).step_by(GAIN_ROWS) {
            let rows = GAIN_ROWS.min(t - from);
            let xv = Var::from_tensor(&x.narrow(0, from, rows)?)?;
            let logits = shell.logits_train(xv.as_tensor())?;
            // p − e_y at every position: the gradient of −log p_y at the logits, y drawn
            // from p.
            let mut g: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits.detach())?
                .flatten_all()?
                .to_vec1()?;
            let norms: Vec<f32> = shell.final_norm(xv.as_tensor())?.sqr()?.sum(1)?.to_vec1()?;
            for (row, &xx) in g.chunks_exact_mut(n_vocab).zip(&norms) {
                let fisher: f64 = row
                    .iter()
                    .map(|&p| f64::from(p) * (1.0 - f64::from(p)))
                    .sum();
                output.0 += fisher * f64::from(xx);
                output.1 += n_vocab as f64 * f64::from(xx);
                row[draw(row, rng.next_f64())] -= 1.0;
            }
            let g = Tensor::from_vec(g, (rows, n_vocab), &cpu)?;
            let back = (logits * g)?.sum_all()?.backward()?;
            parts.push(gradient(&back, xv.as_tensor())?);
        }
        grads.push(Tensor::cat(&parts, 0)?);
    }
    progress(n_layer + 1, total);
    let widths = shell.probe_widths();
    for i in (0..n_layer).rev() {
        let block = Llama::load_block(f, &c, i, LoadOptions::EXACT, &cpu)?;
        let kept = inputs.pop().expect("one input per block");
        for ((x, g), ctx) in kept.iter().zip(grads.iter_mut()).zip(&ctxs) {
            let t = x.dim(0)?;
            let xv = Var::from_tensor(x)?;
            let probes = widths
                .iter()
                .map(|&w| Var::zeros((t, w), DType::F32, &cpu))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let tensors: [Tensor; 7] = std::array::from_fn(|j| probes[j].as_tensor().clone());
            let (out, layers) =
                shell.block_forward_probed(&block, xv.as_tensor(), ctx, &tensors)?;
            let back = (out * &*g)?.sum_all()?.backward()?;
            for (probe, (layer, input)) in probes.iter().zip(layers) {
                let d = gradient(&back, probe.as_tensor())?;
                let input = input.detach();
                let weight_grad = d.t()?.matmul(&input)?;
                let e = sums
                    .entry(stored_name(&layer.name).to_string())
                    .or_default();
                e.0 += sum(&weight_grad.sqr()?)?;
                e.1 += layer.n_out() as f64 * sum(&input.sqr()?)?;
            }
            *g = gradient(&back, xv.as_tensor())?;
        }
        progress(total - i, total);
    }
    // The token embedding's table: each token's rows get the gradients of its positions.
    let mut rows: HashMap<u32, Vec<f32>> = HashMap::new();
    let mut positions = 0usize;
    for (tokens, g) in chunks.iter().zip(&grads) {
        let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
        for (&tok, gt) in tokens.iter().zip(g.chunks_exact(c.n_embd)) {
            let r = rows.entry(tok).or_insert_with(|| vec![0.0; c.n_embd]);
            r.iter_mut().zip(gt).for_each(|(r, &v)| *r += v);
            positions += 1;
        }
    }
    let lookup = c.embed_scale
        * c.embed_scale
        * rows
            .values()
            .flatten()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>();
    let per = |(trace, per): (f64, f64)| trace / per.max(f64::MIN_POSITIVE);
    let mut gains: HashMap<String, Gain> = sums
        .into_iter()
        .map(|(name, s)| (name, Gain::same(per(s))))
        .collect();
    let (trace, divisor) = output;
    if f.tensor("output.weight").is_some() {
        let table = per((lookup, (positions * n_vocab * c.n_embd) as f64));
        gains.insert("token_embd.weight".to_string(), Gain::same(table));
        gains.insert("output.weight".to_string(), Gain::same(per(output)));
    } else {
        // Tied: one table is both the lookup and the output layer, its error measured in the
        // output layer's units (Σ_j m_j δ², m_j its inputs' mean x_j²). An error spread evenly
        // over the table has Σ δ² = error · n_embd / Σ_j m_j, so the lookup's trace adds to the
        // output layer's over the same positions and under the same divisor; the rounding of
        // the output layer's input costs the output layer's gain alone.
        let gain = Gain {
            weight: per((trace + lookup, divisor)),
            input: per(output),
        };
        gains.insert("token_embd.weight".to_string(), gain);
    }
    Ok(gains)
}

/// What a unit of one tensor's importance-weighted error costs in KL divergence (twice it:
/// [`collect_gains`]): its weight's error, and the term of its rounded input. The two differ
/// only for a tied token embedding, whose weight is also the lookup table and whose input is
/// the output layer's alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gain {
    pub weight: f64,
    pub input: f64,
}

impl Gain {
    /// The same gain for the weight and its input (every tensor but a tied table).
    pub fn same(g: f64) -> Gain {
        Gain {
            weight: g,
            input: g,
        }
    }

    /// The larger of each.
    pub fn max(self, other: Gain) -> Gain {
        Gain {
            weight: self.weight.max(other.weight),
            input: self.input.max(other.input),
        }
    }
}

/// The index a uniform `u` in [0, 1) falls on in the distribution `p` (the last where rounding
/// leaves the sum short of `u`).
fn draw(p: &[f32], u: f64) -> usize {
    let mut acc = 0f64;
    p.iter()
        .position(|&q| {
            acc += f64::from(q);
            acc > u
        })
        .unwrap_or(p.len() - 1)
}

/// The gradient a backward pass gave `t`.
fn gradient(back: &candle_core::backprop::GradStore, t: &Tensor) -> Result<Tensor> {
    back.get(t)
        .cloned()
        .ok_or_else(|| Error::Numerical("a gain's gradient is missing".into()))
}

/// Memory of [`collect_gains`] on chunks of `ctx` tokens: every block's input for
/// [`GAIN_CHUNKS`] chunks, the output layer in F32 (and a transposed copy for the product's
/// gradient), the logits of a few positions six times over (logits, probabilities, the drawn
/// tokens' gradient, the product and the gradients), one block in F32 and its differentiable pass
/// (about four times the plain pass: the forward's values kept for the backward, and the
/// gradients).
pub fn gains_memory_plan(f: &GgufFile, ctx: usize) -> Result<frugal_models::memory::MemoryPlan> {
    use frugal_models::memory::{self, MemoryPlan};
    let c = frugal_models::llama::LlamaConfig::from_gguf(f)?;
    let state = (ctx * c.n_embd * 4) as u64;
    let chunks = GAIN_CHUNKS as u64;
    let mut plan = MemoryPlan::new();
    plan.add(
        format!("every block's input for {chunks} chunks (the gains)"),
        (c.n_layer as u64 + 2) * chunks * state,
    )
    .add(
        "the output layer in F32, and its transpose",
        2 * 4 * (c.n_vocab * c.n_embd) as u64,
    )
    .add(
        format!("{GAIN_ROWS} positions' logits and their gradients"),
        6 * 4 * (GAIN_ROWS.min(ctx) * c.n_vocab) as u64,
    )
    .add("one block in F32", memory::largest_block_f32_bytes(f, &c))
    .add(
        "one chunk's differentiable pass through it",
        4 * memory::block_pass_bytes(&c, ctx),
    );
    Ok(plan)
}

/// Each chunk's attention context and first block's input (embedded from `f`'s rows).
fn first_inputs<'a>(
    shell: &Llama,
    f: &GgufFile,
    chunks: impl Iterator<Item = &'a Vec<u32>> + Clone,
) -> Result<(Vec<frugal_models::llama::AttnCtx>, Vec<Tensor>)> {
    let ctxs = chunks
        .clone()
        .map(|t| shell.attn_ctx(t.len()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let xs = chunks
        .map(|t| shell.embed_from(f, t))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((ctxs, xs))
}

/// The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major f32, after dampening H; columns
/// with no signal (H_jj = 0) get H_jj = 1 and are reported in `dead`.
pub fn inverse_cholesky_upper(h: &[f64], n: usize, damp: f64) -> Result<(Scratch<f32>, Vec<bool>)> {
    inverse_cholesky_upper_of(n, damp, &|i, j| h[i * n + j], &Placement::Memory)
}

/// [`inverse_cholesky_upper`] of the matrix whose entry (i, j) is `h(i, j)` — H seen through
/// a permutation, say, without a permuted copy of it — with its working matrices and U where
/// `placement` says.
///
/// The arithmetic is faer's `Llt` then `inverse` then `Llt` again, called step by step on
/// buffers laid out as faer lays out its own matrices (same alignment, same column stride), so
/// the values are those of the high-level calls bit for bit (`tests::
/// the_factorization_in_place_is_faers_bit_for_bit`) with two n × n f64 matrices alive at
/// most instead of three: the factor L is overwritten by L⁻ᵀL⁻¹ = H⁻¹, then by H⁻¹'s factor.
pub fn inverse_cholesky_upper_of(
    n: usize,
    damp: f64,
    h: &(dyn Fn(usize, usize) -> f64 + Sync),
    placement: &Placement,
) -> Result<(Scratch<f32>, Vec<bool>)> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt::factor;
    use rayon::prelude::*;
    let dead: Vec<bool> = (0..n).map(|j| h(j, j) <= 0.0).collect();
    let mean_diag = (0..n).filter(|&j| !dead[j]).map(|j| h(j, j)).sum::<f64>() / n.max(1) as f64;
    let d = damp * mean_diag.max(f64::MIN_POSITIVE);
    let stride = faer_stride(n);
    let par = faer::get_global_parallelism();
    // The lower triangle of the dampened H, column-major; the upper stays zero (as faer's
    // `Llt::new` copies the lower triangle into a zeroed matrix).
    let mut a = Scratch::<f64>::zeroed(stride * n, placement)?;
    a.par_chunks_mut(stride.max(1))
        .enumerate()
        .for_each(|(j, col)| {
            for i in j..n {
                col[i] = if dead[i] || dead[j] {
                    if i == j {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    h(i, j) + if i == j { d } else { 0.0 }
                };
            }
        });
    let llt = |a: &mut [f64], what: &str| -> Result<()> {
        let mut mem = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
            n,
            par,
            Default::default(),
        ));
        factor::cholesky_in_place(
            faer::MatMut::from_column_major_slice_with_stride_mut(a, n, n, stride),
            Default::default(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|e| Error::Numerical(format!("Cholesky of {what} failed: {e:?}")))?;
        zero_strict_upper(a, n, stride);
        Ok(())
    };
    llt(&mut a, "H")?;
    // H⁻¹ = L⁻ᵀL⁻¹ (faer's `Llt::inverse`): L⁻¹ in a second matrix, the product's lower
    // triangle over L, mirrored to the upper.
    {
        let mut l_inv = Scratch::<f64>::zeroed(stride * n, placement)?;
        faer::linalg::triangular_inverse::invert_lower_triangular(
            faer::MatMut::from_column_major_slice_with_stride_mut(&mut l_inv, n, n, stride),
            faer::MatRef::from_column_major_slice_with_stride(&a, n, n, stride),
            par,
        );
        let l_inv = faer::MatRef::from_column_major_slice_with_stride(&l_inv, n, n, stride);
        faer::linalg::matmul::triangular::matmul(
            faer::MatMut::from_column_major_slice_with_stride_mut(&mut a, n, n, stride),
            faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
            faer::Accum::Replace,
            l_inv.transpose(),
            faer::linalg::matmul::triangular::BlockStructure::TriangularUpper,
            l_inv,
            faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
            1.0,
            par,
        );
    }
    // The second factorization reads H⁻¹'s lower triangle from a zeroed matrix: the mirror
    // `inverse` writes is dropped again.
    zero_strict_upper(&mut a, n, stride);
    llt(&mut a, "H⁻¹")?;
    // U = Lᵀ: row j of U is column j of L, from the diagonal down.
    let mut u = Scratch::<f32>::zeroed(n * n, placement)?;
    u.par_chunks_mut(n.max(1)).enumerate().for_each(|(j, row)| {
        let col = &a[j * stride..j * stride + n];
        for k in j..n {
            row[k] = col[k] as f32;
        }
    });
    Ok((u, dead))
}

/// The column stride faer gives an `n × n` f64 matrix of its own: rows rounded up to a cache
/// line.
fn faer_stride(n: usize) -> usize {
    n.next_multiple_of(frugal_models::scratch::ALIGN / std::mem::size_of::<f64>())
}

fn zero_strict_upper(a: &mut [f64], n: usize, stride: usize) {
    for j in 0..n {
        a[j * stride..j * stride + j].fill(0.0);
    }
}

/// XᵀX of `x` `[T, n]`, the product taken in f32 (per chunk; chunks are summed in f64),
/// written to `out` (`n²` values) in f64 straight from the product (no copy of it).
pub(crate) fn gram_into(x: &Tensor, out: &mut [f64]) -> Result<()> {
    let g = x.t()?.contiguous()?.matmul(x)?.to_dtype(DType::F32)?;
    if g.elem_count() != out.len() {
        return Err(Error::Numerical(format!(
            "a Gram product of {:?} for {} values",
            g.dims(),
            out.len()
        )));
    }
    let (storage, layout) = g.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Numerical("a Gram product off the CPU".into()));
    };
    let v = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    if !layout.is_contiguous() || v.len() < out.len() {
        return Err(Error::Numerical(
            "a Gram product not laid out in rows".into(),
        ));
    }
    out.iter_mut().zip(v).for_each(|(o, &x)| *o = f64::from(x));
    Ok(())
}

pub(crate) fn dense(lin: &mut frugal_models::linear::Linear, w: Vec<f32>) -> Result<()> {
    let shape = (lin.n_out(), lin.n_in());
    let t = Tensor::from_vec(w, shape, &candle_core::Device::Cpu)?;
    Ok(lin.set_weight(Weight::Dense(t))?)
}

pub(crate) fn linear_named<'a>(
    model: &'a mut Llama,
    name: &str,
) -> &'a mut frugal_models::linear::Linear {
    model
        .linears_mut()
        .into_iter()
        .find(|l| l.name == name)
        .expect("every block weight is a linear layer")
}

/// What one block's statistics are, for a [`sequential`] pass: the Gram matrix Σxxᵀ and the
/// summed |x| of each of the block's four distinct linear inputs, over `n_tokens` tokens.
pub(crate) struct BlockStats {
    pub grams: Grams,
    pub abs: Vec<Vec<f64>>,
    pub dims: [usize; 4],
    pub n_tokens: usize,
}

/// A block's four Gram matrices, `grams[g]` the `n × n` one of input `g` (row-major), kept in
/// the one buffer the chunks' sums arrived in: no copy (at 7B scale the four take 1.4 GB).
pub(crate) struct Grams {
    buf: Scratch<f64>,
    /// `starts[g]..starts[g + 1]` is matrix `g` in `buf`.
    starts: [usize; 5],
}

impl Grams {
    /// The four matrices of sizes `dims[g]²` at the front of `buf`.
    fn new(buf: Scratch<f64>, dims: [usize; 4]) -> Grams {
        let mut starts = [0; 5];
        for g in 0..4 {
            starts[g + 1] = starts[g] + dims[g] * dims[g];
        }
        assert!(
            buf.len() >= starts[4],
            "the sums hold the four Gram matrices"
        );
        Grams { buf, starts }
    }
}

impl std::ops::Index<usize> for Grams {
    type Output = [f64];
    fn index(&self, g: usize) -> &[f64] {
        &self.buf[self.starts[g]..self.starts[g + 1]]
    }
}

impl std::ops::IndexMut<usize> for Grams {
    fn index_mut(&mut self, g: usize) -> &mut [f64] {
        &mut self.buf[self.starts[g]..self.starts[g + 1]]
    }
}

/// The skeleton every block-wise method shares: the calibration chunks embedded (from the file's
/// rows), then for each decoder block in order: the block decoded at full precision, its input
/// statistics on the activations of the blocks already treated, `treat(model, block, stats)`
/// (which replaces the block's weights), the states moved through the treated block, and the
/// block released ([`Block::released`]): the model is streamed, never held whole — `treat`
/// sees blocks before `block` released and none after it. Returns the importance matrix of the
/// treated model's own activations (every block weight, and the output layer).
///
/// After each block, `after_block(blocks_done, states, imatrix)` sees what the next block starts
/// from (a checkpoint keeps it); with `resume`, the pass starts from such a record instead of
/// the embeddings. The Gram sums are held where `placement` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sequential(
    f: &GgufFile,
    calib: &Calibration,
    with_abs: bool,
    placement: &Placement,
    treat: &mut dyn FnMut(&mut Llama, usize, &mut BlockStats) -> Result<()>,
    resume: Option<Resume>,
    after_block: &mut AfterBlock,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Imatrix> {
    let comm = frugal_dist::world();
    let cpu = candle_core::Device::Cpu;
    let mut model = Llama::load_bare_shell(f, &cpu)?;
    let n_layer = model.config.n_layer;
    // This rank's chunks (all of them alone): their states move through the blocks here, and
    // their statistics are summed with the other ranks' in the single process's order.
    let n_chunks = calib.chunks.len();
    let mine = frugal_dist::tree_items(comm, n_chunks);
    let ctxs: Vec<_> = calib.chunks[mine.clone()]
        .iter()
        .map(|c| model.attn_ctx(c.len()))
        .collect::<std::result::Result<_, _>>()?;
    let (start, mut states, mut imatrix) = match resume {
        Some(r) => {
            let ctx = calib.chunks.get(mine.start).map_or(0, Vec::len);
            let want = [ctx, model.config.n_embd];
            if r.blocks_done > n_layer
                || r.states.len() != mine.len()
                || r.states.iter().any(|s| s.dims() != want)
            {
                return Err(Error::BadOptions(format!(
                    "a checkpoint after {} blocks with {} states does not fit {n_layer} blocks and {} chunks of {want:?}",
                    r.blocks_done,
                    r.states.len(),
                    mine.len()
                )));
            }
            for j in 0..r.blocks_done {
                model.blocks.push(Block::released(j, &cpu)?);
            }
            progress(r.blocks_done, n_layer + 1);
            (r.blocks_done, r.states, r.imatrix)
        }
        None => {
            let states = calib.chunks[mine.clone()]
                .iter()
                .map(|c| model.embed_from(f, c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            (0, states, HashMap::new())
        }
    };
    let n_tok = calib.n_tokens();
    for i in start..n_layer {
        let block = Llama::load_block(f, &model.config, i, LoadOptions::EXACT, &cpu)?;
        model.blocks.push(block);
        let dims = {
            let b = &model.blocks[i];
            [b.q.n_in(), b.o.n_in(), b.gate.n_in(), b.down.n_in()]
        };
        let n_gram: usize = dims.iter().map(|n| n * n).sum();
        let n_abs: usize = if with_abs { dims.iter().sum() } else { 0 };
        let sums = frugal_dist::tree_sum(comm, n_chunks, n_gram + n_abs, &mut |c| {
            let k = c - mine.start;
            let (_, tr) = model.block_forward(i, &states[k], &ctxs[k], true)?;
            let tr = tr.expect("traced");
            let mut v = Scratch::<f64>::zeroed(n_gram + n_abs, placement)?;
            let mut at = 0;
            for (input, n) in tr.iter().zip(dims) {
                gram_into(input, &mut v[at..at + n * n])?;
                at += n * n;
            }
            if with_abs {
                for (input, n) in tr.iter().zip(dims) {
                    v[at..at + n].copy_from_slice(&mean_abs_cols(input)?);
                    at += n;
                }
            }
            Ok::<_, Error>(v)
        })?;
        let mut abs = Vec::with_capacity(4);
        let mut a_rest = &sums[n_gram..];
        for &n in &dims {
            if with_abs {
                let (a, t) = a_rest.split_at(n);
                abs.push(a.to_vec());
                a_rest = t;
            } else {
                abs.push(vec![0.0; n]);
            }
        }
        let mut st = BlockStats {
            grams: Grams::new(sums, dims),
            abs,
            dims,
            n_tokens: n_tok,
        };
        for (g, names) in block_names(i).iter().enumerate() {
            let n = dims[g];
            let qw: Vec<f32> = (0..n)
                .map(|j| (st.grams[g][j * n + j] / n_tok as f64) as f32)
                .collect();
            for name in names {
                imatrix.insert(name.clone(), qw.clone());
            }
        }
        treat(&mut model, i, &mut st)?;
        for (x, ctx) in states.iter_mut().zip(&ctxs) {
            *x = model.block_forward(i, x, ctx, false)?.0;
        }
        model.blocks[i] = Block::released(i, &cpu)?;
        after_block(i + 1, &states, &imatrix)?;
        frugal_dist::fault_point(&format!("after-block-{i}"))?;
        progress(i + 1, n_layer + 1);
    }
    let head = frugal_dist::tree_sum(comm, n_chunks, model.config.n_embd, &mut |c| {
        sum_sq_cols(&model.final_norm(&states[c - mine.start])?)
    })?;
    imatrix.insert(
        output_name(f).to_string(),
        head.into_iter()
            .map(|s| (s / n_tok as f64) as f32)
            .collect(),
    );
    progress(n_layer + 1, n_layer + 1);
    Ok(Imatrix {
        entries: imatrix,
        n_tokens: n_tok as u64,
        source: calib.source.clone(),
        file: None,
        rounding: HashMap::new(),
        gains: HashMap::new(),
    })
}

/// [`sequential`] from the start, without a checkpoint.
pub(crate) fn sequential_plain(
    f: &GgufFile,
    calib: &Calibration,
    with_abs: bool,
    treat: &mut dyn FnMut(&mut Llama, usize, &mut BlockStats) -> Result<()>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Imatrix> {
    sequential(
        f,
        calib,
        with_abs,
        &Placement::Memory,
        treat,
        None,
        &mut |_, _, _| Ok(()),
        progress,
    )
}

/// What [`sequential`] calls after each block: blocks done, the states entering the next
/// block, the importance matrix so far.
pub(crate) type AfterBlock<'a> =
    dyn FnMut(usize, &[Tensor], &HashMap<String, Vec<f32>>) -> Result<()> + 'a;

/// Where a resumed [`sequential`] pass starts: after `blocks_done` blocks, with this rank's
/// chunks' states entering the next one and the importance matrix of the blocks done.
pub(crate) struct Resume {
    pub blocks_done: usize,
    pub states: Vec<Tensor>,
    pub imatrix: HashMap<String, Vec<f32>>,
}

/// Σ|x| over the rows of `x`, per column.
pub(crate) fn mean_abs_cols(x: &Tensor) -> Result<Vec<f64>> {
    let v: Vec<f32> = x.abs()?.sum(0)?.to_vec1()?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// What a calibration pass keeps per block, for its memory plan ([`memory_plan`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibWork {
    /// llama-imatrix's statistic ([`collect_imatrix`]): per-column sums only.
    Imatrix,
    /// A [`sequential`] pass: the four Gram matrices (and Σ|x| with `abs`), then the block's
    /// treatment — with `factor`, H's dampened inverse Cholesky factor per input (GPTQ,
    /// SparseGPT); `weight_copies` copies of the largest weight in F32 (the weight, its
    /// rounding and its decoding back).
    Sequential {
        abs: bool,
        factor: bool,
        weight_copies: u64,
    },
}

/// The peak memory of a calibration pass over `n_chunks` chunks of `ctx` tokens of `f` (this
/// rank's share of them), estimated from the shapes before it starts. The larger of two
/// phases: the statistics (the chunks' states, one decoded block, one chunk's pass through it,
/// and the Gram sums — the canonical tree keeps one partial sum per level, ⌈log₂ chunks⌉ + 1 of
/// them, plus a leaf's product in f32), and the treatment (the block's sums, the factorization
/// of the widest input: two n × n f64 matrices at once, the weight copies). The Gram sums and
/// the factorization are scratch buffers: in memory or in files as `placement` says.
pub fn memory_plan(
    f: &GgufFile,
    n_chunks: usize,
    ctx: usize,
    work: CalibWork,
    placement: &Placement,
) -> Result<frugal_models::memory::MemoryPlan> {
    use frugal_models::memory::{self, MemoryPlan};
    let c = frugal_models::llama::LlamaConfig::from_gguf(f)?;
    let comm = frugal_dist::world();
    let mine = frugal_dist::tree_items(comm, n_chunks).len().max(1) as u64;
    let state = (ctx * c.n_embd * 4) as u64;
    let block = memory::largest_block_f32_bytes(f, &c);
    let pass = memory::block_pass_bytes(&c, ctx);
    let mut base = MemoryPlan::placed(placement.clone());
    base.add(
        format!("the states of {mine} calibration chunks"),
        (mine + 1) * state,
    )
    .add("one block in F32", block)
    .add("one chunk's pass through it", pass);
    let CalibWork::Sequential {
        abs,
        factor,
        weight_copies,
    } = work
    else {
        // The importance matrix: every chunk's per-column sums (Σx² and the three rounding
        // errors) of every input, kept until the chunks are added in the tree's order.
        let widths = input_dims(&c).iter().sum::<usize>() * c.n_layer + c.n_embd;
        base.add(
            "the chunks' column sums (x² and input rounding)",
            mine * 4 * 8 * widths as u64,
        );
        return Ok(base);
    };
    let dims = input_dims(&c).map(|n| n as u64);
    let widest = dims.iter().copied().max().unwrap_or(0);
    let sums =
        8 * (dims.iter().map(|n| n * n).sum::<u64>() + if abs { dims.iter().sum() } else { 0 });
    let levels = u64::from(mine.next_power_of_two().trailing_zeros()) + 1;
    // Recursive doubling holds the sum, its bytes sent, the bytes received and their values.
    let exchange = if comm.size() > 1 { 3 * sums } else { 0 };
    let mut stats = base.clone();
    stats
        .add_scratch(
            format!("the Gram sums' tree ({levels} partial sums of a block's four inputs)"),
            levels * sums,
        )
        .add("the Gram sums' exchange between ranks", exchange)
        .add("a chunk's Gram product in f32", 4 * widest * widest);
    let mut treat = base;
    let largest_weight = 4 * c.n_ff as u64 * c.n_embd as u64;
    // The factorization in place: the factor and its inverse, n × n f64 each with faer's
    // column stride (activation order reads H through its permutation, no copy); then the
    // inverse's factor as f32, which the rounding keeps.
    let stride = faer_stride(widest as usize) as u64;
    treat
        .add_scratch("the block's Gram matrices", sums)
        .add_scratch(
            "the factorization of the widest input",
            if factor { 16 * stride * widest } else { 0 },
        )
        .add(
            "copies of the largest weight",
            weight_copies * largest_weight,
        );
    Ok(stats.max(treat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::gram;

    /// The factorization as faer's high-level calls compute it (what Frugal ran before the
    /// in-place one): the reference the in-place arithmetic must equal bit for bit.
    fn faer_reference(h: &[f64], n: usize, damp: f64) -> Vec<f32> {
        use faer::linalg::solvers::DenseSolveCore;
        let dead: Vec<bool> = (0..n).map(|j| h[j * n + j] <= 0.0).collect();
        let mean = (0..n)
            .filter(|&j| !dead[j])
            .map(|j| h[j * n + j])
            .sum::<f64>()
            / n.max(1) as f64;
        let d = damp * mean.max(f64::MIN_POSITIVE);
        let hm = faer::Mat::<f64>::from_fn(n, n, |i, j| {
            if dead[i] || dead[j] {
                f64::from(u8::from(i == j))
            } else {
                h[i * n + j] + if i == j { d } else { 0.0 }
            }
        });
        let inv = hm.llt(faer::Side::Lower).unwrap().inverse();
        let llt2 = inv.llt(faer::Side::Lower).unwrap();
        let l = llt2.L();
        let mut u = vec![0f32; n * n];
        for j in 0..n {
            for k in j..n {
                u[j * n + k] = l[(k, j)] as f32;
            }
        }
        u
    }

    /// A drawn token is where the running sum of the probabilities first passes `u`; a sum
    /// that rounding leaves short gives the last token.
    #[test]
    fn draws_follow_the_cumulative_distribution() {
        let p = [0.2f32, 0.3, 0.5];
        assert_eq!(draw(&p, 0.0), 0);
        assert_eq!(draw(&p, 0.19), 0);
        assert_eq!(draw(&p, 0.25), 1);
        assert_eq!(draw(&p, 0.51), 2);
        assert_eq!(draw(&[0.3f32, 0.3], 0.9), 1);
    }

    #[test]
    fn the_factorization_in_place_is_faers_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        // Sizes below and above faer's blocking thresholds, off and on its column stride.
        for n in [1usize, 2, 7, 64, 129, 333, 700, 1537] {
            let rows = n + 16;
            let mut x: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            // A column no token reaches, and a non-symmetric last bit as real Gram sums have.
            if n > 4 {
                x.iter_mut().skip(3).step_by(n).for_each(|v| *v = 0.0);
            }
            let mut h = gram(&x, n);
            if n > 1 {
                h[1] += 1e-9;
            }
            let want = faer_reference(&h, n, 0.01);
            for p in [
                Placement::Memory,
                Placement::Files(dir.path().to_path_buf()),
            ] {
                let (u, dead) =
                    inverse_cholesky_upper_of(n, 0.01, &|i, j| h[i * n + j], &p).unwrap();
                assert_eq!(u.is_file(), p != Placement::Memory);
                assert_eq!(
                    dead.iter().filter(|&&d| d).count(),
                    usize::from(n > 4),
                    "n = {n}"
                );
                let same = u.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "n = {n}, {p:?}: the factor differs from faer's");
            }
        }
    }
}
