//! Unstructured and N:M pruning of linear layers (convolutions included, as im2col linears):
//!
//! - **magnitude**: score |W_ij|, compared within each layer or across all layers (global);
//! - **Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
//!   Models"): score |W_ij|·‖X_j‖₂ with ‖X_j‖₂ the norm of input column j on calibration data,
//!   compared within each output row, as the paper does.
//!
//! - **SparseGPT** (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
//!   Accurately Pruned in One-Shot"): columns are visited in order; at the start of each block of
//!   [`SPARSEGPT_BLOCK`] columns (or of each N:M group) the weights with the smallest
//!   w²/[U]_jj² (U the upper Cholesky factor of H⁻¹, H = XᵀX) are chosen on the *current*
//!   weights, and each pruned weight's error is spread over the columns not yet visited, as in
//!   GPTQ. Frugal selects per output row (each row reaches the target sparsity), which keeps rows
//!   independent and parallel; the reference thresholds a block over all rows at once.
//!
//! With an N:M pattern, every group of M consecutive inputs of a row keeps its N best scores
//! (2:4 is what sparse tensor cores accelerate). The result is a 0/1 mask per layer, applied to
//! the weights and returned so that fine-tuning can keep pruned weights at zero.
//! [`prune_gguf`] prunes a Llama GGUF model's decoder weights block by block on calibration
//! text (Wanda, SparseGPT) or by magnitude alone, and writes them as F32.

use crate::quant::calibration::{self, inverse_cholesky_upper, BlockStats, Calibration};
use crate::rewrite::{write_gguf_with_f32, Replacement};
use crate::{Error, Result};
use candle_core::Tensor;
use frugal_formats::gguf::GgufFile;
use frugal_models::linear::{Linear, Weight};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// SparseGPT's lazy block: masks are chosen afresh every this many columns.
pub const SPARSEGPT_BLOCK: usize = 128;

frugal_formats::name_table! {
    "lowercase";
    /// What a weight's importance is: `--method` of `frugal prune` and a recipe's prune
    /// `method`, one name table (clap and serde spell it alike).
    pub enum Score {
        /// Weight magnitudes.
        Magnitude,
        /// Activation norm × weight magnitude (needs calibration).
        Wanda,
        /// Chosen and compensated by SparseGPT (GGUF models, with calibration).
        SparseGpt,
    }
}

/// Which weights compete with each other (unstructured pattern only).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Within each layer (Wanda: within each output row).
    PerLayer,
    /// Across every pruned layer (magnitude only).
    Global,
}

/// The sparsity pattern.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum Pattern {
    Unstructured,
    /// Keep `n` of every `m` consecutive inputs.
    NM {
        n: usize,
        m: usize,
    },
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "unstructured" {
            return Ok(Pattern::Unstructured);
        }
        let bad = || format!("pattern `{s}`: expected `unstructured` or N:M such as 2:4");
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m): (usize, usize) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if n == 0 || n >= m || m > 64 {
            return Err(format!("pattern {n}:{m}: need 0 < N < M ≤ 64"));
        }
        Ok(Pattern::NM { n, m })
    }
}

/// Pruning settings.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PruneOptions {
    pub score: Score,
    /// Fraction of weights set to zero (unstructured; N:M implies 1 − N/M).
    pub sparsity: f64,
    pub pattern: Pattern,
    pub scope: Scope,
}

/// One layer's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LayerSparsity {
    pub name: String,
    pub n_weights: usize,
    pub n_zero: usize,
}

/// What [`prune_linears`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PruneReport {
    pub options: PruneOptions,
    pub layers: Vec<LayerSparsity>,
    /// Zeros over all pruned weights.
    pub sparsity: f64,
}

/// Prunes `layers` in place and returns their masks (1 = kept), shaped like the weights.
/// `input_norms[k]` is layer k's per-input-column ‖X_j‖₂ (needed by Wanda).
pub fn prune_linears(
    layers: &mut [&mut Linear],
    input_norms: Option<&[Vec<f32>]>,
    opts: &PruneOptions,
) -> Result<(Vec<Tensor>, PruneReport)> {
    if !(0.0..1.0).contains(&opts.sparsity) && opts.pattern == Pattern::Unstructured {
        return Err(Error::BadOptions(format!(
            "sparsity {} must lie in [0, 1)",
            opts.sparsity
        )));
    }
    if opts.score == Score::Wanda && opts.scope == Scope::Global {
        return Err(Error::BadOptions(
            "Wanda compares weights within each output row; global scope is for magnitude".into(),
        ));
    }
    let weights: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| Ok(l.weight_f32()?.flatten_all()?.to_vec1()?))
        .collect::<Result<_>>()?;
    let scores: Vec<Vec<f32>> = weights
        .iter()
        .enumerate()
        .map(|(k, w)| -> Result<Vec<f32>> {
            let n_in = layers[k].n_in();
            match opts.score {
                Score::Magnitude => Ok(w.iter().map(|v| v.abs()).collect()),
                Score::SparseGpt => Err(Error::BadOptions(
                    "SparseGPT updates the weights it keeps; use prune_gguf".into(),
                )),
                Score::Wanda => {
                    let norms = input_norms
                        .and_then(|n| n.get(k))
                        .filter(|n| n.len() == n_in)
                        .ok_or_else(|| {
                            Error::BadOptions(format!(
                                "Wanda needs calibration input norms for {}",
                                layers[k].name
                            ))
                        })?;
                    Ok(w.iter()
                        .enumerate()
                        .map(|(i, v)| v.abs() * norms[i % n_in])
                        .collect())
                }
            }
        })
        .collect::<Result<_>>()?;
    let masks: Vec<Vec<bool>> = match (opts.pattern, opts.scope, opts.score) {
        (Pattern::NM { n, m }, _, _) => scores
            .iter()
            .zip(layers.iter())
            .map(|(s, l)| {
                if l.n_in() % m != 0 {
                    return Err(Error::BadOptions(format!(
                        "{}: {} inputs are not a multiple of {m}",
                        l.name,
                        l.n_in()
                    )));
                }
                Ok(keep_best_in_groups(s, m, n))
            })
            .collect::<Result<_>>()?,
        (Pattern::Unstructured, Scope::Global, _) => {
            let mut all: Vec<f32> = scores.iter().flatten().copied().collect();
            let k = (all.len() as f64 * opts.sparsity).round() as usize;
            global_masks(&scores, &mut all, k)
        }
        (Pattern::Unstructured, Scope::PerLayer, Score::Magnitude | Score::SparseGpt) => scores
            .iter()
            .map(|s| keep_best_in_groups(s, s.len(), keep_count(s.len(), opts.sparsity)))
            .collect(),
        (Pattern::Unstructured, Scope::PerLayer, Score::Wanda) => scores
            .iter()
            .zip(layers.iter())
            .map(|(s, l)| {
                let n_in = l.n_in();
                keep_best_in_groups(s, n_in, keep_count(n_in, opts.sparsity))
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(layers.len());
    let mut report = Vec::with_capacity(layers.len());
    for ((l, w), m) in layers.iter_mut().zip(weights).zip(&masks) {
        let pruned: Vec<f32> = w
            .iter()
            .zip(m)
            .map(|(&v, &k)| if k { v } else { 0.0 })
            .collect();
        let shape = (l.n_out(), l.n_in());
        let dev = candle_core::Device::Cpu;
        l.set_weight(Weight::Dense(Tensor::from_vec(pruned, shape, &dev)?))?;
        let mask: Vec<f32> = m.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        out.push(Tensor::from_vec(mask, shape, &dev)?);
        report.push(LayerSparsity {
            name: l.name.clone(),
            n_weights: m.len(),
            n_zero: m.iter().filter(|&&k| !k).count(),
        });
    }
    let total: usize = report.iter().map(|r| r.n_weights).sum();
    let zeros: usize = report.iter().map(|r| r.n_zero).sum();
    Ok((
        out,
        PruneReport {
            options: *opts,
            layers: report,
            sparsity: zeros as f64 / total.max(1) as f64,
        },
    ))
}

fn keep_count(group: usize, sparsity: f64) -> usize {
    group - ((group as f64 * sparsity).round() as usize).min(group)
}

/// Within each group of `g` consecutive scores, keeps the `keep` largest (ties: lower index).
/// The order (score, then index) is total, so selecting the `keep` first ones (linear time)
/// keeps exactly the set a sort would.
fn keep_best_in_groups(s: &[f32], g: usize, keep: usize) -> Vec<bool> {
    let mut mask = vec![false; s.len()];
    let mut idx: Vec<usize> = Vec::with_capacity(g);
    for (c, chunk) in s.chunks(g).enumerate() {
        idx.clear();
        idx.extend(0..chunk.len());
        let keep = keep.min(idx.len());
        if keep == 0 {
            continue;
        }
        if keep < idx.len() {
            idx.select_nth_unstable_by(keep - 1, |&a, &b| {
                chunk[b].total_cmp(&chunk[a]).then(a.cmp(&b))
            });
        }
        for &i in &idx[..keep] {
            mask[c * g + i] = true;
        }
    }
    mask
}

/// Masks that prune exactly the `k` smallest scores over all layers (ties at the threshold in
/// layer and index order). `all` is every score, reordered here.
fn global_masks(scores: &[Vec<f32>], all: &mut [f32], k: usize) -> Vec<Vec<bool>> {
    if k == 0 || all.is_empty() {
        return scores.iter().map(|s| vec![true; s.len()]).collect();
    }
    let k = k.min(all.len());
    let threshold = *all.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b)).1;
    let below = all.iter().filter(|&&v| v < threshold).count();
    let mut ties = k - below; // how many scores equal to the threshold go
    scores
        .iter()
        .map(|s| {
            s.iter()
                .map(|&v| {
                    if v < threshold {
                        false
                    } else if v == threshold && ties > 0 {
                        ties -= 1;
                        false
                    } else {
                        true
                    }
                })
                .collect()
        })
        .collect()
}

/// Rows [`sparsegpt_matrix`] takes through the factor together: each row of U is read once
/// for the tile instead of once per row.
const ROW_TILE: usize = 8;

/// SparseGPT on one matrix `w` (`rows × cols`), given the upper Cholesky factor `u` of H⁻¹:
/// the pruned and compensated weights (exact zeros where pruned). Rows go [`ROW_TILE`] at a
/// time, each with the operations, in the order, of one row alone (tested against
/// `sparsegpt_matrix_reference`).
pub fn sparsegpt_matrix(
    w: &[f32],
    cols: usize,
    u: &[f32],
    sparsity: f64,
    pattern: Pattern,
) -> Vec<f32> {
    let mut out = w.to_vec();
    out.par_chunks_mut(cols * ROW_TILE).for_each(|tile| {
        let mut rows: Vec<(&mut [f32], Vec<bool>)> = tile
            .chunks_mut(cols)
            .map(|x| (x, vec![false; cols]))
            .collect();
        let mut idx: Vec<usize> = Vec::with_capacity(SPARSEGPT_BLOCK);
        let mut e = [0f32; ROW_TILE];
        for j in 0..cols {
            let block = match pattern {
                Pattern::Unstructured if j % SPARSEGPT_BLOCK == 0 => {
                    let to = (j + SPARSEGPT_BLOCK).min(cols);
                    Some((to, ((to - j) as f64 * sparsity).round() as usize))
                }
                Pattern::NM { n, m } if j % m == 0 => {
                    let to = (j + m).min(cols);
                    Some((to, (to - j).saturating_sub(n)))
                }
                _ => None,
            };
            for ((x, pruned), e) in rows.iter_mut().zip(&mut e) {
                if let Some((to, k)) = block {
                    sparsegpt_choose(x, u, cols, pruned, &mut idx, j, to, k);
                }
                *e = if pruned[j] {
                    let v = x[j] / u[j * cols + j];
                    x[j] = 0.0;
                    v
                } else {
                    0.0
                };
            }
            let uj = &u[j * cols + j + 1..(j + 1) * cols];
            for ((x, pruned), &e) in rows.iter_mut().zip(&e) {
                if pruned[j] {
                    for (xv, &uv) in x[j + 1..].iter_mut().zip(uj) {
                        *xv -= e * uv;
                    }
                }
            }
        }
        // Exact zeros where pruned (later updates never touch an earlier column).
        for (x, pruned) in rows {
            for (v, &p) in x.iter_mut().zip(&pruned) {
                if p {
                    *v = 0.0;
                }
            }
        }
    });
    out
}

/// Marks the `k` smallest w²/U_jj² among columns `from..to` of row `x` as pruned (ties: lower
/// index).
#[allow(clippy::too_many_arguments)]
fn sparsegpt_choose(
    x: &[f32],
    u: &[f32],
    cols: usize,
    pruned: &mut [bool],
    idx: &mut Vec<usize>,
    from: usize,
    to: usize,
    k: usize,
) {
    idx.clear();
    idx.extend(from..to);
    let score = |j: usize| {
        let d = u[j * cols + j];
        x[j] * x[j] / (d * d)
    };
    idx.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
    for &j in idx.iter().take(k) {
        pruned[j] = true;
    }
}

/// Pruning a GGUF model.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GgufPruneOptions {
    pub score: Score,
    pub sparsity: f64,
    pub pattern: Pattern,
    /// SparseGPT's dampening of H, a fraction of its mean diagonal.
    pub damp: f64,
}

/// What [`prune_gguf`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GgufPruneReport {
    pub input: String,
    pub output: String,
    pub options: GgufPruneOptions,
    pub calibration_tokens: Option<usize>,
    pub layers: Vec<LayerSparsity>,
    /// Zeros over all pruned weights.
    pub sparsity: f64,
    pub output_bytes: u64,
    pub seconds: f64,
}

/// The peak memory of [`prune_gguf`] (and of the structured removals, which keep the same kind
/// of state) on `f`, estimated from the shapes before it starts: the calibration pass of the
/// score (`calib`: chunks and their tokens; SparseGPT factorizes each input's H), or the
/// decoding of the largest weight, plus every pruned weight, which is held in F32 until the
/// output is written (at 7B scale 24 GB: such a run is refused on a small machine).
pub fn memory_plan(
    f: &GgufFile,
    calib: Option<(usize, usize)>,
    score: Score,
) -> Result<frugal_models::memory::MemoryPlan> {
    use calibration::CalibWork;
    let blocks = || {
        f.header
            .tensors
            .iter()
            .filter(|t| calibration::is_block_weight(&t.name))
    };
    let kept: u64 = blocks().map(|t| 4 * t.n_elements()).sum();
    let mut plan = match (score, calib) {
        (Score::Magnitude, _) | (_, None) => {
            let mut p = frugal_models::memory::MemoryPlan::new();
            let largest = blocks().map(|t| t.n_elements()).max().unwrap_or(0);
            p.add("the largest weight decoded and pruned", 8 * largest);
            p
        }
        (score, Some((chunks, ctx))) => calibration::memory_plan(
            f,
            chunks,
            ctx,
            CalibWork::Sequential {
                abs: false,
                factor: score == Score::SparseGpt,
                weight_copies: 3,
            },
            &frugal_models::scratch::Placement::Memory,
        )?,
    };
    plan.add("the pruned weights, held in F32 until written", kept);
    Ok(plan)
}

/// Prunes every decoder weight of a Llama GGUF model (attention and FFN projections; embeddings,
/// norms and the output layer are kept) and writes the model with those weights as F32 (so the
/// zeros are exact), atomically. Wanda and SparseGPT run block by block on calibration text, each
/// block's inputs taken on the already pruned blocks' activations; magnitude needs no text.
pub fn prune_gguf(
    input: &Path,
    output: &Path,
    opts: &GgufPruneOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<GgufPruneReport> {
    let t0 = std::time::Instant::now();
    if !(0.0..1.0).contains(&opts.sparsity) {
        return Err(Error::BadOptions(format!(
            "sparsity {} must lie in [0, 1)",
            opts.sparsity
        )));
    }
    let f = GgufFile::open(input)?;
    // Phi-3's fused weights: their parts (q, k, v; gate, up) are pruned as the layers they are,
    // and their rows re-joined in the file's order.
    let fused_cfg = match frugal_models::llama::fused_tensor(&f) {
        Some(_) => Some(frugal_models::llama::LlamaConfig::from_gguf(&f)?),
        None => None,
    };
    let fused_parts = |name: &str| -> Option<frugal_models::llama::FusedWeight> {
        let (cfg, i) = (fused_cfg.as_ref()?, crate::quant::mix::layer_of(name)?);
        frugal_models::llama::fused_parts(cfg, i)
            .into_iter()
            .find(|w| w.name == name)
    };
    if let Pattern::NM { m, .. } = opts.pattern {
        if let Some(t) = f
            .header
            .tensors
            .iter()
            .find(|t| calibration::is_block_weight(&t.name) && t.dims[0] % m as u64 != 0)
        {
            return Err(Error::BadOptions(format!(
                "{}: {} inputs are not a multiple of {m}",
                t.name, t.dims[0]
            )));
        }
    }
    let layer_opts = PruneOptions {
        score: opts.score,
        sparsity: opts.sparsity,
        pattern: opts.pattern,
        scope: Scope::PerLayer,
    };
    let mut produced: HashMap<String, Vec<f32>> = HashMap::new();
    let mut layers = Vec::new();
    let mut record = |name: &str, w: &[f32]| {
        layers.push(LayerSparsity {
            name: name.to_string(),
            n_weights: w.len(),
            n_zero: w.iter().filter(|&&v| v == 0.0).count(),
        });
    };
    match (opts.score, calib) {
        (Score::Magnitude, _) => {
            let names: Vec<String> = f
                .header
                .tensors
                .iter()
                .filter(|t| calibration::is_block_weight(&t.name))
                .map(|t| t.name.clone())
                .collect();
            for (k, name) in names.iter().enumerate() {
                let t = f.tensor(name).expect("listed");
                let cols = t.dims[0] as usize;
                let w = crate::quant::tensor_f32(&f, t)?;
                let rows = t.n_elements() as usize / cols;
                let parts = match fused_parts(name) {
                    Some(fw) => fw.parts.iter().map(|p| (p.first_row, p.rows)).collect(),
                    None => vec![(0, rows)],
                };
                let dev = candle_core::Device::Cpu;
                let mut v: Vec<f32> = Vec::with_capacity(w.len());
                for (first, n) in parts {
                    let part = w[first * cols..(first + n) * cols].to_vec();
                    let mut lin = Linear::dense(
                        name.clone(),
                        Tensor::from_vec(part, (n, cols), &dev)?,
                        None,
                    )?;
                    prune_linears(&mut [&mut lin], None, &layer_opts)?;
                    v.extend(lin.weight_f32()?.flatten_all()?.to_vec1::<f32>()?);
                }
                record(name, &v);
                produced.insert(name.clone(), v);
                progress(k + 1, names.len());
            }
        }
        (_, None) => {
            return Err(Error::BadOptions(format!(
                "{:?} pruning needs calibration text (--calib FILE)",
                opts.score
            )))
        }
        (score, Some(calib)) => {
            let mut treat = |model: &mut frugal_models::llama::Llama,
                             i: usize,
                             st: &mut BlockStats|
             -> Result<()> {
                let layers = calibration::layer_names(model, i);
                for (g, names) in layers.iter().enumerate() {
                    let n = st.dims[g];
                    let gram = &st.grams[g];
                    let norms: Vec<f32> = (0..n)
                        .map(|j| gram[j * n + j].max(0.0).sqrt() as f32)
                        .collect();
                    let u = match score {
                        Score::SparseGpt => Some(inverse_cholesky_upper(gram, n, opts.damp)?.0),
                        _ => None,
                    };
                    for name in names {
                        let lin = calibration::linear_named(model, name);
                        let v: Vec<f32> = match &u {
                            Some(u) => {
                                let w: Vec<f32> = lin.weight_f32()?.flatten_all()?.to_vec1()?;
                                let v = sparsegpt_matrix(&w, n, u, opts.sparsity, opts.pattern);
                                calibration::dense(lin, v.clone())?;
                                v
                            }
                            None => {
                                prune_linears(
                                    &mut [&mut *lin],
                                    Some(std::slice::from_ref(&norms)),
                                    &layer_opts,
                                )?;
                                lin.weight_f32()?.flatten_all()?.to_vec1()?
                            }
                        };
                        // A fused weight's parts come in row order: joined under its name.
                        let stored = calibration::stored_name(name);
                        match produced.get_mut(stored) {
                            Some(joined) if stored != name.as_str() => joined.extend(v),
                            _ => {
                                produced.insert(stored.to_string(), v);
                            }
                        }
                    }
                }
                // One record per file tensor (a fused weight's parts are adjacent).
                let mut stored: Vec<&str> = layers
                    .iter()
                    .flatten()
                    .map(|n| calibration::stored_name(n))
                    .collect();
                stored.dedup();
                for s in stored {
                    record(s, &produced[s]);
                }
                Ok(())
            };
            calibration::sequential_plain(&f, calib, false, &mut treat, progress)?;
        }
    }
    // Write: pruned weights as F32, everything else as it is, in the input's order.
    let replaced: HashMap<String, Replacement> = produced
        .into_iter()
        .map(|(name, data)| {
            let r = Replacement::same_shape(&f, &name, data);
            (name, r)
        })
        .collect();
    let output_bytes = write_gguf_with_f32(&f, output, &[input], &f.header.metadata, &replaced)?;
    let total: usize = layers.iter().map(|l| l.n_weights).sum();
    let zeros: usize = layers.iter().map(|l| l.n_zero).sum();
    Ok(GgufPruneReport {
        input: input.display().to_string(),
        output: output.display().to_string(),
        options: *opts,
        calibration_tokens: calib.map(|c| c.n_tokens()),
        layers,
        sparsity: zeros as f64 / total.max(1) as f64,
        output_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// [`sparsegpt_matrix`] one row at a time (its choice of columns shared, the update loop the
/// old one): the reference the tiled pass is tested against.
#[cfg(test)]
fn sparsegpt_matrix_reference(
    w: &[f32],
    cols: usize,
    u: &[f32],
    sparsity: f64,
    pattern: Pattern,
) -> Vec<f32> {
    let mut out = w.to_vec();
    out.par_chunks_mut(cols).for_each(|x| {
        let mut pruned = vec![false; cols];
        let mut idx: Vec<usize> = Vec::with_capacity(SPARSEGPT_BLOCK);
        for j in 0..cols {
            match pattern {
                Pattern::Unstructured if j % SPARSEGPT_BLOCK == 0 => {
                    let to = (j + SPARSEGPT_BLOCK).min(cols);
                    let k = ((to - j) as f64 * sparsity).round() as usize;
                    sparsegpt_choose(x, u, cols, &mut pruned, &mut idx, j, to, k);
                }
                Pattern::NM { n, m } if j % m == 0 => {
                    let to = (j + m).min(cols);
                    sparsegpt_choose(
                        x,
                        u,
                        cols,
                        &mut pruned,
                        &mut idx,
                        j,
                        to,
                        (to - j).saturating_sub(n),
                    );
                }
                _ => {}
            }
            if !pruned[j] {
                continue;
            }
            let e = x[j] / u[j * cols + j];
            x[j] = 0.0;
            for (xv, &uv) in x[j + 1..]
                .iter_mut()
                .zip(&u[j * cols + j + 1..(j + 1) * cols])
            {
                *xv -= e * uv;
            }
        }
        // Exact zeros where pruned (later updates never touch an earlier column).
        for (v, &p) in x.iter_mut().zip(&pruned) {
            if p {
                *v = 0.0;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{gram, output_err};

    fn layer(name: &str, w: Vec<f32>, rows: usize, cols: usize) -> Linear {
        let t = Tensor::from_vec(w, (rows, cols), &candle_core::Device::Cpu).unwrap();
        Linear::dense(name, t, None).unwrap()
    }

    fn weights(l: &Linear) -> Vec<f32> {
        l.weight_f32()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Selecting keeps the set a full sort (score descending, then index) keeps, ties and
    /// partial last groups included.
    #[test]
    fn keeping_the_best_by_selection_is_the_sorts_choice() {
        let mut r = frugal_formats::rng::SplitMix64(5);
        // Scores on a coarse grid: many ties.
        let s: Vec<f32> = (0..1000)
            .map(|_| (r.next_f64() * 8.0).floor() as f32)
            .collect();
        for (g, keep) in [(1000, 500), (64, 13), (7, 0), (7, 7), (9, 4), (333, 332)] {
            let mut want = vec![false; s.len()];
            for (c, chunk) in s.chunks(g).enumerate() {
                let mut idx: Vec<usize> = (0..chunk.len()).collect();
                idx.sort_by(|&a, &b| chunk[b].total_cmp(&chunk[a]).then(a.cmp(&b)));
                for &i in idx.iter().take(keep) {
                    want[c * g + i] = true;
                }
            }
            assert_eq!(
                keep_best_in_groups(&s, g, keep),
                want,
                "groups of {g}, keep {keep}"
            );
        }
    }

    /// The tiled SparseGPT pass gives the one-row-at-a-time reference's weights, bit for bit.
    #[test]
    fn sparsegpt_in_tiles_is_the_reference_bit_for_bit() {
        let cols = 256;
        let mut r = frugal_formats::rng::SplitMix64(17);
        let x: Vec<f32> = (0..400 * cols).map(|_| r.next_f64() as f32 - 0.5).collect();
        let h = gram(&x, cols);
        let (u, _) =
            calibration::inverse_cholesky_upper(&h, cols, 0.01).expect("positive definite");
        for rows in [ROW_TILE, 2 * ROW_TILE + 3, 5] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| r.next_f64() as f32 - 0.5)
                .collect();
            for pattern in [Pattern::Unstructured, Pattern::NM { n: 2, m: 4 }] {
                let tiled = sparsegpt_matrix(&w, cols, &u, 0.5, pattern);
                let one = sparsegpt_matrix_reference(&w, cols, &u, 0.5, pattern);
                assert!(
                    tiled
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(one.iter().map(|v| v.to_bits())),
                    "{rows} rows, {pattern:?}"
                );
            }
        }
    }

    #[test]
    fn magnitude_per_layer_and_global() {
        let w1: Vec<f32> = (1..=8).map(|v| v as f32).collect(); // 1..8
        let w2: Vec<f32> = (1..=8).map(|v| -(v as f32) * 10.0).collect(); // −10..−80
        let opts = |scope| PruneOptions {
            score: Score::Magnitude,
            sparsity: 0.5,
            pattern: Pattern::Unstructured,
            scope,
        };
        let (mut a, mut b) = (layer("a", w1.clone(), 2, 4), layer("b", w2.clone(), 2, 4));
        let (_, r) = prune_linears(&mut [&mut a, &mut b], None, &opts(Scope::PerLayer)).unwrap();
        assert_eq!(weights(&a), vec![0., 0., 0., 0., 5., 6., 7., 8.]);
        assert_eq!(r.sparsity, 0.5);
        // Global: the small layer goes entirely.
        let (mut a, mut b) = (layer("a", w1, 2, 4), layer("b", w2.clone(), 2, 4));
        let (masks, r) = prune_linears(&mut [&mut a, &mut b], None, &opts(Scope::Global)).unwrap();
        assert_eq!(weights(&a), vec![0.0; 8]);
        assert_eq!(weights(&b), w2);
        assert_eq!(r.layers[0].n_zero, 8);
        let m: Vec<f32> = masks[1].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m, vec![1.0; 8]);
    }

    #[test]
    fn wanda_weighs_by_input_norm_per_row_and_n_m_keeps_n_per_group() {
        // Row [1, 2, 3, 4] with input norms [10, 1, 1, 1]: Wanda keeps 1 (score 10) and 4.
        let mut a = layer("a", vec![1., 2., 3., 4., 4., 3., 2., 1.], 2, 4);
        let opts = PruneOptions {
            score: Score::Wanda,
            sparsity: 0.5,
            pattern: Pattern::Unstructured,
            scope: Scope::PerLayer,
        };
        let norms = vec![vec![10.0, 1.0, 1.0, 1.0]];
        prune_linears(&mut [&mut a], Some(&norms), &opts).unwrap();
        assert_eq!(weights(&a), vec![1., 0., 0., 4., 4., 3., 0., 0.]);
        // Magnitude 2:4.
        let mut b = layer("b", vec![1., -5., 3., 2., 0.5, 0.1, -0.2, 0.3], 1, 8);
        let opts = PruneOptions {
            score: Score::Magnitude,
            sparsity: 0.5,
            pattern: "2:4".parse().unwrap(),
            scope: Scope::PerLayer,
        };
        prune_linears(&mut [&mut b], None, &opts).unwrap();
        assert_eq!(weights(&b), vec![0., -5., 3., 0., 0.5, 0., 0., 0.3]);
    }

    /// Correlated inputs (a shared factor), as real activations have.
    fn inputs(t: usize, n: usize, seed: u64) -> Vec<f32> {
        let mut r = frugal_formats::rng::SplitMix64(seed);
        let mut out = Vec::with_capacity(t * n);
        for _ in 0..t {
            let common = r.next_gaussian();
            for j in 0..n {
                let scale = 1.0 + (j % 7) as f64;
                out.push((scale * (0.8 * common + 0.6 * r.next_gaussian())) as f32);
            }
        }
        out
    }

    /// SparseGPT reaches the sparsity exactly, with exact zeros, and its output error on the
    /// calibration inputs is well below Wanda's and magnitude's at the same sparsity; with
    /// uncorrelated unit inputs (H = I) it is magnitude pruning per row and block.
    #[test]
    fn sparsegpt_beats_wanda_and_reduces_to_magnitude_without_correlation() {
        let (t, n, rows) = (512, 256, 8);
        let x = inputs(t, n, 5);
        let mut r = frugal_formats::rng::SplitMix64(9);
        let w: Vec<f32> = (0..rows * n).map(|_| r.next_gaussian() as f32).collect();
        let h = gram(&x, n);
        let (u, _) = inverse_cholesky_upper(&h, n, 0.01).unwrap();
        for pattern in [Pattern::Unstructured, Pattern::NM { n: 2, m: 4 }] {
            let v = sparsegpt_matrix(&w, n, &u, 0.5, pattern);
            let zeros = v.iter().filter(|&&a| a == 0.0).count();
            assert_eq!(zeros, rows * n / 2, "{pattern:?}");
            let norms: Vec<f32> = (0..n).map(|j| h[j * n + j].sqrt() as f32).collect();
            let err = |score| {
                let mut l = layer("l", w.clone(), rows, n);
                let o = PruneOptions {
                    score,
                    sparsity: 0.5,
                    pattern,
                    scope: Scope::PerLayer,
                };
                prune_linears(&mut [&mut l], Some(std::slice::from_ref(&norms)), &o).unwrap();
                output_err(&x, &w, &weights(&l), n)
            };
            let (wanda, magnitude) = (err(Score::Wanda), err(Score::Magnitude));
            let sgpt = output_err(&x, &w, &v, n);
            assert!(
                sgpt < 0.7 * wanda,
                "{pattern:?}: SparseGPT {sgpt} vs Wanda {wanda}"
            );
            assert!(
                wanda <= magnitude * 1.01,
                "{pattern:?}: Wanda {wanda} vs magnitude {magnitude}"
            );
        }
        // H = I: U = I/√(1+damp), no compensation; per row and 128-column block, the half with
        // the smallest |w| goes.
        let mut ident = vec![0f64; n * n];
        (0..n).for_each(|j| ident[j * n + j] = 1.0);
        let (u, _) = inverse_cholesky_upper(&ident, n, 0.0).unwrap();
        let v = sparsegpt_matrix(&w, n, &u, 0.5, Pattern::Unstructured);
        for (row_w, row_v) in w.chunks(n).zip(v.chunks(n)) {
            for (bw, bv) in row_w
                .chunks(SPARSEGPT_BLOCK)
                .zip(row_v.chunks(SPARSEGPT_BLOCK))
            {
                let mut m = layer("b", bw.to_vec(), 1, bw.len());
                let o = PruneOptions {
                    score: Score::Magnitude,
                    sparsity: 0.5,
                    pattern: Pattern::Unstructured,
                    scope: Scope::PerLayer,
                };
                prune_linears(&mut [&mut m], None, &o).unwrap();
                assert_eq!(weights(&m), bv.to_vec());
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        assert!("3:2".parse::<Pattern>().is_err());
        assert!("2-4".parse::<Pattern>().is_err());
        let mut a = layer("a", vec![1.0; 6], 2, 3);
        let nm = PruneOptions {
            score: Score::Magnitude,
            sparsity: 0.5,
            pattern: Pattern::NM { n: 2, m: 4 },
            scope: Scope::PerLayer,
        };
        assert!(prune_linears(&mut [&mut a], None, &nm).is_err());
        let wanda = PruneOptions {
            score: Score::Wanda,
            pattern: Pattern::Unstructured,
            ..nm
        };
        assert!(prune_linears(&mut [&mut a], None, &wanda).is_err());
    }
}
