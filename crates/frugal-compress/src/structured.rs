//! Structured pruning that physically shrinks a Llama-family model into an ordinary GGUF that
//! llama.cpp loads as it is: whole MLP neurons (row `j` of `ffn_gate` and `ffn_up`, column `j`
//! of `ffn_down`) removed from every block, the same number in each, with a smaller
//! `feed_forward_length`; query attention heads ([`prune_heads_gguf`]); or whole decoder blocks
//! ([`prune_layers_gguf`]).
//!
//! MLP neurons:
//!
//! Which neurons go, per block:
//! - `Magnitude` (no calibration): the product of the neuron's weight norms
//!   ‖gate_j‖·‖up_j‖·‖down_·j‖.
//! - `Wanda` (calibration): ‖a_j‖·‖down_·j‖, with a_j the neuron's activation over the
//!   calibration tokens — the size of its contribution to the block's output (the structured
//!   form of Wanda's |W|·‖X‖, as in FLAP and LLM-Pruner's first-order scores).
//! - `SparseGpt` (calibration): the same choice, then `ffn_down` is refitted by least squares
//!   so the kept neurons reproduce the full layer's output on the calibration activations:
//!   W' = (W·G[:,K] + λ·W_K)·(G[K,K] + λI)⁻¹ with G = AᵀA (the structured analogue of
//!   SparseGPT's compensation, with a ridge towards the unchanged weights). The weights of later blocks are chosen on the already shrunk model's
//!   activations ([`calibration::sequential`]).

use crate::prune::Score;
use crate::quant::calibration::Calibration;
use crate::quant::calibration::{self, BlockStats};
use crate::rewrite::{write_gguf_with_f32, Replacement};
use crate::{Error, Result};
use frugal_formats::gguf::{GgufFile, Value};
use frugal_models::linear::Linear;
use frugal_models::llama::{Llama, LlamaConfig};
use std::collections::HashMap;
use std::path::Path;

frugal_formats::name_table! {
    "kebab-case";
    /// `--structure` of `frugal prune`: what a structured prune removes, for a decoder (a
    /// [`Unit`]) or a CNN classifier (its conv channels).
    pub enum Structure {
        /// Whole MLP neurons (gate and up rows, down columns).
        MlpNeurons,
        /// Query attention heads, the same number from each key/value group.
        AttnHeads,
        /// Whole decoder blocks, those that change their input least (needs --calib).
        Layers,
        /// CNN only: whole conv channels (and the next layer's inputs that read them).
        Channels,
    }
}

impl Structure {
    /// The decoder unit it removes (`None`: a CNN's channels).
    pub fn unit(self) -> Option<Unit> {
        match self {
            Structure::MlpNeurons => Some(Unit::MlpNeurons),
            Structure::AttnHeads => Some(Unit::AttnHeads),
            Structure::Layers => Some(Unit::Layers),
            Structure::Channels => None,
        }
    }
}

/// What structured pruning removes from a decoder.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// MLP neurons of every block ([`prune_mlp_neurons_gguf`]).
    MlpNeurons,
    /// Query attention heads of every block ([`prune_heads_gguf`]).
    AttnHeads,
    /// Whole decoder blocks ([`prune_layers_gguf`]).
    Layers,
}

/// Settings.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct StructuredOptions {
    pub unit: Unit,
    pub score: Score,
    /// At least this fraction of the units (per block for neurons and heads) is removed.
    pub fraction: f64,
    /// The kept count is a multiple of this (32 keeps every ggml block type usable on
    /// `ffn_down`, whose rows then hold the kept neurons).
    pub multiple: usize,
    /// Dampening of G[K,K] for the refit, a fraction of its mean diagonal.
    pub damp: f64,
}

/// One block's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct NeuronLayer {
    pub block: usize,
    pub kept: usize,
    pub removed: usize,
    /// The removed neurons' share of the block's total score.
    pub removed_score_share: f64,
}

/// What [`prune_mlp_neurons_gguf`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct NeuronPruneReport {
    pub n_ff_before: usize,
    pub n_ff_after: usize,
    pub parameters_before: u64,
    pub parameters_after: u64,
    pub layers: Vec<NeuronLayer>,
}

/// The neurons to keep: the `keep` best scores, in their original order.
fn choose(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(keep);
    idx.sort_unstable();
    idx
}

fn norm(v: impl Iterator<Item = f32>) -> f64 {
    v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// Rows `keep` of `w` (`rows × cols`).
fn take_rows(w: &[f32], cols: usize, keep: &[usize]) -> Vec<f32> {
    keep.iter()
        .flat_map(|&j| w[j * cols..(j + 1) * cols].iter().copied())
        .collect()
}

/// Columns `keep` of `w` (`rows × cols`).
fn take_cols(w: &[f32], cols: usize, keep: &[usize]) -> Vec<f32> {
    w.chunks(cols)
        .flat_map(|r| keep.iter().map(move |&j| r[j]))
        .collect()
}

/// The least-squares `ffn_down` on the kept neurons: W' (`d × k`) minimising
/// Σ‖A_K·W'ᵀ − A·Wᵀ‖² + λ‖W' − W_K‖² (a ridge towards the kept columns as they were), i.e.
/// W' = (W·G[:,K] + λ·W_K)·(G[K,K] + λI)⁻¹, for `w` `d × n` and `g` = AᵀA (`n × n`), with λ
/// `damp` times the mean of G[K,K]'s diagonal.
pub fn refit_down(w: &[f32], n: usize, g: &[f64], keep: &[usize], damp: f64) -> Result<Vec<f32>> {
    use faer::linalg::solvers::Solve;
    let (d, k) = (w.len() / n, keep.len());
    let mean_diag = keep.iter().map(|&j| g[j * n + j]).sum::<f64>() / k.max(1) as f64;
    let lambda = damp * mean_diag.max(f64::MIN_POSITIVE);
    let gkk = faer::Mat::<f64>::from_fn(k, k, |a, b| {
        g[keep[a] * n + keep[b]] + if a == b { lambda } else { 0.0 }
    });
    // Pᵀ = G[K,:]·Wᵀ + λ·W_Kᵀ, k × d.
    let pt = faer::Mat::<f64>::from_fn(k, d, |a, r| {
        let grow = &g[keep[a] * n..(keep[a] + 1) * n];
        let wrow = &w[r * n..(r + 1) * n];
        grow.iter()
            .zip(wrow)
            .map(|(x, y)| x * f64::from(*y))
            .sum::<f64>()
            + lambda * f64::from(wrow[keep[a]])
    });
    let llt = gkk
        .llt(faer::Side::Lower)
        .map_err(|e| Error::Numerical(format!("Cholesky of G[K,K] failed: {e:?}")))?;
    let x = llt.solve(&pt); // k × d = W'ᵀ
    Ok((0..d)
        .flat_map(|r| (0..k).map(move |a| (r, a)))
        .map(|(r, a)| x[(a, r)] as f32)
        .collect())
}

fn weights(l: &Linear) -> Result<Vec<f32>> {
    Ok(l.weight_f32()?.flatten_all()?.to_vec1()?)
}

/// Removes at least `opts.fraction` of every block's MLP neurons from the model in `input` and
/// writes the smaller model to `output` (atomically; the shrunk MLP weights as F32, everything
/// else as it was), with `feed_forward_length` set to the kept count.
pub fn prune_mlp_neurons_gguf(
    input: &Path,
    output: &Path,
    opts: &StructuredOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(NeuronPruneReport, u64)> {
    let f = GgufFile::open(input)?;
    crate::refuse_fused(&f, "MLP neuron removal")?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let (n, d) = (cfg.n_ff, cfg.n_embd);
    if !(opts.fraction > 0.0 && opts.fraction < 1.0) || opts.multiple == 0 {
        return Err(Error::BadOptions(format!(
            "fraction of neurons {} must lie in (0, 1)",
            opts.fraction
        )));
    }
    let keep = ((n as f64 * (1.0 - opts.fraction)) / opts.multiple as f64).floor() as usize
        * opts.multiple;
    if keep == 0 || keep >= n {
        return Err(Error::BadOptions(format!(
            "removing {:.1} % of {n} neurons in multiples of {} leaves {keep}",
            100.0 * opts.fraction,
            opts.multiple
        )));
    }
    let names =
        |i: usize| ["ffn_gate", "ffn_up", "ffn_down"].map(|s| format!("blk.{i}.{s}.weight"));
    let mut produced: HashMap<String, Vec<f32>> = HashMap::new();
    let mut layers = Vec::new();
    // Shrinks block `i` given its neuron scores (and the activation Gram for the refit).
    let mut shrink = |i: usize,
                      gate: Vec<f32>,
                      up: Vec<f32>,
                      down: Vec<f32>,
                      scores: Vec<f64>,
                      gram: Option<&[f64]>|
     -> Result<[Vec<f32>; 3]> {
        let kept = choose(&scores, keep);
        let total: f64 = scores.iter().sum();
        let kept_sum: f64 = kept.iter().map(|&j| scores[j]).sum();
        let new_down = match gram {
            Some(g) => refit_down(&down, n, g, &kept, opts.damp)?,
            None => take_cols(&down, n, &kept),
        };
        let out = [
            take_rows(&gate, d, &kept),
            take_rows(&up, d, &kept),
            new_down,
        ];
        for (name, w) in names(i).iter().zip(&out) {
            produced.insert(name.clone(), w.clone());
        }
        layers.push(NeuronLayer {
            block: i,
            kept: keep,
            removed: n - keep,
            removed_score_share: if total > 0.0 {
                1.0 - kept_sum / total
            } else {
                0.0
            },
        });
        Ok(out)
    };
    match (opts.score, calib) {
        (Score::Magnitude, _) => {
            for i in 0..cfg.n_layer {
                let [g, u, dn] = names(i).map(|name| {
                    let t = f.tensor(&name).ok_or_else(|| {
                        Error::BadOptions(format!("{}: no tensor {name}", input.display()))
                    })?;
                    crate::quant::tensor_f32(&f, t)
                });
                let (g, u, dn) = (g?, u?, dn?);
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        norm(g[j * d..(j + 1) * d].iter().copied())
                            * norm(u[j * d..(j + 1) * d].iter().copied())
                            * norm(dn.chunks(n).map(|r| r[j]))
                    })
                    .collect();
                shrink(i, g, u, dn, scores, None)?;
                progress(i + 1, cfg.n_layer);
            }
        }
        (_, None) => {
            return Err(Error::BadOptions(format!(
                "{:?} neuron scores need calibration text (--calib FILE)",
                opts.score
            )))
        }
        (score, Some(calib)) => {
            let mut treat = |model: &mut Llama, i: usize, st: &mut BlockStats| -> Result<()> {
                let g = &st.grams[3];
                let b = &model.blocks[i];
                let (gate, up, down) = (weights(&b.gate)?, weights(&b.up)?, weights(&b.down)?);
                let scores: Vec<f64> = (0..n)
                    .map(|j| g[j * n + j].max(0.0).sqrt() * norm(down.chunks(n).map(|r| r[j])))
                    .collect();
                let refit = (score == Score::SparseGpt).then_some(g);
                let [g2, u2, d2] = shrink(i, gate, up, down, scores, refit)?;
                let dev = candle_core::Device::Cpu;
                let t = |w: Vec<f32>, shape: (usize, usize)| {
                    candle_core::Tensor::from_vec(w, shape, &dev)
                };
                let b = &mut model.blocks[i];
                let [gn, un, dn] = names(i);
                b.gate = Linear::dense(gn, t(g2, (keep, d))?, None)?;
                b.up = Linear::dense(un, t(u2, (keep, d))?, None)?;
                b.down = Linear::dense(dn, t(d2, (d, keep))?, None)?;
                Ok(())
            };
            calibration::sequential_plain(&f, calib, false, &mut treat, progress)?;
        }
    }
    // Write: the shrunk MLP weights as F32 with their new shapes, the new width in the
    // metadata, everything else as it is, in the input's order.
    let arch = f.header.architecture().unwrap_or("llama").to_string();
    let key = format!("{arch}.feed_forward_length");
    let metadata: Vec<(String, Value)> = f
        .header
        .metadata
        .iter()
        .map(|(k, v)| {
            if *k == key {
                let v = match v {
                    Value::U64(_) => Value::U64(keep as u64),
                    Value::I32(_) => Value::I32(keep as i32),
                    _ => Value::U32(keep as u32),
                };
                (k.clone(), v)
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let replaced: HashMap<String, Replacement> = produced
        .into_iter()
        .map(|(name, data)| {
            let dims = if name.ends_with("ffn_down.weight") {
                vec![keep as u64, d as u64]
            } else {
                vec![d as u64, keep as u64]
            };
            (name, Replacement { dims, data })
        })
        .collect();
    let bytes = write_gguf_with_f32(&f, output, &[input], &metadata, &replaced)?;
    let per_block = |k: usize| 3 * (k * d) as u64;
    let total: u64 = f.header.tensors.iter().map(|t| t.n_elements()).sum();
    let removed = cfg.n_layer as u64 * (per_block(n) - per_block(keep));
    Ok((
        NeuronPruneReport {
            n_ff_before: n,
            n_ff_after: keep,
            parameters_before: total,
            parameters_after: total - removed,
            layers,
        },
        bytes,
    ))
}

/// What structured pruning did, by unit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "unit", rename_all = "kebab-case")]
pub enum StructuredReport {
    MlpNeurons(NeuronPruneReport),
    AttnHeads(HeadPruneReport),
    Layers(LayerPruneReport),
}

impl StructuredReport {
    pub fn parameters(&self) -> (u64, u64) {
        match self {
            StructuredReport::MlpNeurons(r) => (r.parameters_before, r.parameters_after),
            StructuredReport::AttnHeads(r) => (r.parameters_before, r.parameters_after),
            StructuredReport::Layers(r) => (r.parameters_before, r.parameters_after),
        }
    }

    /// One line: what shrank, from what to what.
    pub fn summary(&self) -> String {
        match self {
            StructuredReport::MlpNeurons(r) => format!(
                "MLP width {} → {} in every block",
                r.n_ff_before, r.n_ff_after
            ),
            StructuredReport::AttnHeads(r) => format!(
                "query heads {} → {} in every block ({} key/value heads of {})",
                r.n_head_before, r.n_head_after, r.n_head_kv, r.head_dim
            ),
            StructuredReport::Layers(r) => format!(
                "blocks {} → {} (removed {:?})",
                r.n_layer_before, r.n_layer_after, r.removed
            ),
        }
    }
}

/// Structured pruning of `opts.unit` (see each function).
pub fn prune_structured_gguf(
    input: &Path,
    output: &Path,
    opts: &StructuredOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(StructuredReport, u64)> {
    Ok(match opts.unit {
        Unit::MlpNeurons => {
            let (r, b) = prune_mlp_neurons_gguf(input, output, opts, calib, progress)?;
            (StructuredReport::MlpNeurons(r), b)
        }
        Unit::AttnHeads => {
            let (r, b) = prune_heads_gguf(input, output, opts, calib, progress)?;
            (StructuredReport::AttnHeads(r), b)
        }
        Unit::Layers => {
            let (r, b) = prune_layers_gguf(input, output, opts, calib, progress)?;
            (StructuredReport::Layers(r), b)
        }
    })
}

/// The input's metadata with `updates` applied: an existing key keeps its integer type, a new
/// one is added as U32.
fn with_keys(f: &GgufFile, updates: &[(String, u64)]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = f
        .header
        .metadata
        .iter()
        .map(|(k, v)| match updates.iter().find(|(u, _)| u == k) {
            Some(&(_, n)) => (
                k.clone(),
                match v {
                    Value::U64(_) => Value::U64(n),
                    Value::I32(_) => Value::I32(n as i32),
                    _ => Value::U32(n as u32),
                },
            ),
            None => (k.clone(), v.clone()),
        })
        .collect();
    for (k, n) in updates {
        if !out.iter().any(|(o, _)| o == k) {
            out.push((k.clone(), Value::U32(*n as u32)));
        }
    }
    out
}

fn need_tensor(f: &GgufFile, name: &str) -> Result<Vec<f32>> {
    let t = f
        .tensor(name)
        .ok_or_else(|| Error::BadOptions(format!("{}: no tensor {name}", f.path().display())))?;
    crate::quant::tensor_f32(f, t)
}

/// One block's removed attention heads.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HeadLayer {
    pub block: usize,
    /// Query heads removed (indices in the input model).
    pub removed: Vec<usize>,
    /// The removed heads' share of the block's total head score.
    pub removed_score_share: f64,
}

/// What [`prune_heads_gguf`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HeadPruneReport {
    pub n_head_before: usize,
    pub n_head_after: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub parameters_before: u64,
    pub parameters_after: u64,
    pub layers: Vec<HeadLayer>,
}

/// Removes query attention heads from every block of the model in `input`, the same number
/// from each key/value group (so grouped-query attention stays regular: `opts.fraction` of each
/// group's query heads rounded to the nearest whole head, at least one, never all), and writes the smaller
/// model to `output`: `attn_q`'s rows and `attn_output`'s columns of those heads gone,
/// `attention.head_count` lowered and `attention.key_length`/`value_length` set (the head width
/// no longer follows from the model width), which llama.cpp reads.
///
/// Scores per head: `Magnitude` ‖W_q,h‖·‖W_o,h‖; `Wanda` the energy of the head's contribution
/// to the block output on the calibration tokens, tr(W_o,h·G_hh·W_o,hᵀ) with G the Gram matrix of
/// `attn_output`'s input; `SparseGpt` the same choice, then `attn_output` refitted by least
/// squares on the kept heads ([`refit_down`]). Scored on the unpruned model's activations.
/// Per-head tensors follow the kept heads: the query bias's rows (Qwen2) and the attention
/// sinks (`granite_swa`).
pub fn prune_heads_gguf(
    input: &Path,
    output: &Path,
    opts: &StructuredOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(HeadPruneReport, u64)> {
    let f = GgufFile::open(input)?;
    crate::refuse_fused(&f, "attention head removal")?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let arch = f.header.architecture().unwrap_or("?");
    if frugal_models::llama::ArchSpec::of(arch).is_some_and(|a| !a.heads_removable) {
        return Err(Error::NotForThisModel(format!(
            "`{}` (architecture `{arch}`): llama.cpp's `{arch}` loader fixes the queries at the model width, so a model with heads removed would not load",
            input.display()
        )));
    }
    let (nh, nkv, hd, d) = (cfg.n_head, cfg.n_head_kv, cfg.head_dim(), cfg.n_embd);
    let per_group = nh / nkv;
    if !(opts.fraction > 0.0 && opts.fraction < 1.0) {
        return Err(Error::BadOptions(format!(
            "fraction of heads {} must lie in (0, 1)",
            opts.fraction
        )));
    }
    if per_group < 2 {
        return Err(Error::BadOptions(format!(
            "each of the {nkv} key/value heads serves one query head: no query head can go without its group"
        )));
    }
    let drop = ((per_group as f64 * opts.fraction).round() as usize).clamp(1, per_group - 1);
    let nh2 = nkv * (per_group - drop);
    let names = |i: usize| ["attn_q", "attn_output"].map(|s| format!("blk.{i}.{s}.weight"));
    // Per block: the Gram matrix of attn_output's input (calibrated scores only).
    let grams: Option<Vec<Vec<f64>>> = match (opts.score, calib) {
        (Score::Magnitude, _) => None,
        (_, None) => {
            return Err(Error::BadOptions(format!(
                "{:?} head scores need calibration text (--calib FILE)",
                opts.score
            )))
        }
        (_, Some(calib)) => {
            let mut grams = Vec::with_capacity(cfg.n_layer);
            let mut keep = |_: &mut Llama, _: usize, st: &mut BlockStats| -> Result<()> {
                grams.push(st.grams[1].to_vec());
                Ok(())
            };
            calibration::sequential_plain(&f, calib, false, &mut keep, progress)?;
            Some(grams)
        }
    };
    let mut replaced = HashMap::new();
    let mut layers = Vec::with_capacity(cfg.n_layer);
    let n_in = nh * hd;
    for i in 0..cfg.n_layer {
        let [qn, on] = names(i);
        let (q, o) = (need_tensor(&f, &qn)?, need_tensor(&f, &on)?);
        if q.len() != n_in * d || o.len() != d * n_in {
            return Err(Error::BadOptions(format!(
                "{qn} / {on}: sizes {} / {} do not match {nh} heads of {hd}",
                q.len(),
                o.len()
            )));
        }
        let o_cols = |h: usize| {
            o.chunks(n_in)
                .flat_map(move |r| r[h * hd..(h + 1) * hd].iter().copied())
        };
        let scores: Vec<f64> = (0..nh)
            .map(|h| match &grams {
                None => norm(q[h * hd * d..(h + 1) * hd * d].iter().copied()) * norm(o_cols(h)),
                Some(g) => {
                    let g = &g[i];
                    let mut e = 0f64;
                    for r in o.chunks(n_in) {
                        let w = &r[h * hd..(h + 1) * hd];
                        for a in 0..hd {
                            let row = &g
                                [(h * hd + a) * n_in + h * hd..(h * hd + a) * n_in + (h + 1) * hd];
                            let dot: f64 = row.iter().zip(w).map(|(&x, &y)| x * f64::from(y)).sum();
                            e += f64::from(w[a]) * dot;
                        }
                    }
                    e.max(0.0)
                }
            })
            .collect();
        let mut kept_heads = Vec::with_capacity(nh2);
        for g in 0..nkv {
            let group: Vec<usize> = (g * per_group..(g + 1) * per_group).collect();
            let local: Vec<f64> = group.iter().map(|&h| scores[h]).collect();
            kept_heads.extend(
                choose(&local, per_group - drop)
                    .into_iter()
                    .map(|j| group[j]),
            );
        }
        let removed: Vec<usize> = (0..nh).filter(|h| !kept_heads.contains(h)).collect();
        let cols: Vec<usize> = kept_heads
            .iter()
            .flat_map(|&h| h * hd..(h + 1) * hd)
            .collect();
        let new_q: Vec<f32> = cols
            .iter()
            .flat_map(|&r| q[r * d..(r + 1) * d].iter().copied())
            .collect();
        let new_o = match (&grams, opts.score) {
            (Some(g), Score::SparseGpt) => refit_down(&o, n_in, &g[i], &cols, opts.damp)?,
            _ => take_cols(&o, n_in, &cols),
        };
        let total: f64 = scores.iter().sum();
        layers.push(HeadLayer {
            block: i,
            removed_score_share: if total > 0.0 {
                removed.iter().map(|&h| scores[h]).sum::<f64>() / total
            } else {
                0.0
            },
            removed,
        });
        let w = (nh2 * hd) as u64;
        replaced.insert(
            qn,
            Replacement {
                dims: vec![d as u64, w],
                data: new_q,
            },
        );
        replaced.insert(
            on,
            Replacement {
                dims: vec![w, d as u64],
                data: new_o,
            },
        );
        // Per-head vectors keep the kept heads' entries: the query bias's rows (one per query
        // dimension) and the attention sinks (one per head).
        let per_head = [
            (format!("blk.{i}.attn_q.bias"), &cols, n_in),
            (format!("blk.{i}.attn_sinks.weight"), &kept_heads, nh),
        ];
        for (name, keep, want) in per_head {
            if f.tensor(&name).is_none() {
                continue;
            }
            let v = need_tensor(&f, &name)?;
            if v.len() != want {
                return Err(Error::BadOptions(format!(
                    "{name}: {} values for {nh} heads of {hd}",
                    v.len()
                )));
            }
            let data: Vec<f32> = keep.iter().map(|&k| v[k]).collect();
            let dims = vec![data.len() as u64];
            replaced.insert(name, Replacement { dims, data });
        }
        if grams.is_none() {
            progress(i + 1, cfg.n_layer);
        }
    }
    let arch = f.header.architecture().unwrap_or("llama").to_string();
    let metadata = with_keys(
        &f,
        &[
            (format!("{arch}.attention.head_count"), nh2 as u64),
            (format!("{arch}.attention.key_length"), hd as u64),
            (format!("{arch}.attention.value_length"), hd as u64),
        ],
    );
    let bytes = write_gguf_with_f32(&f, output, &[input], &metadata, &replaced)?;
    let total: u64 = f.header.tensors.iter().map(|t| t.n_elements()).sum();
    let removed = (cfg.n_layer * 2 * (nh - nh2) * hd * d) as u64;
    Ok((
        HeadPruneReport {
            n_head_before: nh,
            n_head_after: nh2,
            n_head_kv: nkv,
            head_dim: hd,
            parameters_before: total,
            parameters_after: total - removed,
            layers,
        },
        bytes,
    ))
}

/// What [`prune_layers_gguf`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LayerPruneReport {
    pub n_layer_before: usize,
    pub n_layer_after: usize,
    /// Blocks removed (indices in the input model).
    pub removed: Vec<usize>,
    /// Every block's influence on the calibration tokens: the mean of 1 − cos(x, block(x)).
    pub block_influence: Vec<f64>,
    pub parameters_before: u64,
    pub parameters_after: u64,
}

/// Every block's influence (ShortGPT's "Block Influence", Men et al. 2024): the mean over the
/// calibration tokens of 1 − cos(h_in, h_out), the cosine between a block's input and output
/// hidden states on the full model.
pub fn block_influence(model: &Llama, calib: &Calibration) -> Result<Vec<f64>> {
    let mut bi = vec![0f64; model.blocks.len()];
    let mut n = 0usize;
    for chunk in &calib.chunks {
        let ctx = model.attn_ctx(chunk.len())?;
        let mut x = model.embed(chunk)?;
        for (i, b) in bi.iter_mut().enumerate() {
            let y = model.block_forward(i, &x, &ctx, false)?.0;
            let dot: Vec<f32> = (&x * &y)?.sum(1)?.to_vec1()?;
            let nx: Vec<f32> = x.sqr()?.sum(1)?.to_vec1()?;
            let ny: Vec<f32> = y.sqr()?.sum(1)?.to_vec1()?;
            for ((d, a), c) in dot.iter().zip(&nx).zip(&ny) {
                let den = (f64::from(*a) * f64::from(*c)).sqrt();
                *b += 1.0 - if den > 0.0 { f64::from(*d) / den } else { 1.0 };
            }
            x = y;
        }
        n += chunk.len();
    }
    Ok(bi.into_iter().map(|s| s / n.max(1) as f64).collect())
}

/// Removes whole decoder blocks — at least `opts.fraction` of them (one at least, never all),
/// those with the least [`block_influence`] on the calibration text — and writes the shallower
/// model to `output`: the blocks' tensors left out, the later ones renumbered, `block_count`
/// lowered. Needs calibration whatever the score.
pub fn prune_layers_gguf(
    input: &Path,
    output: &Path,
    opts: &StructuredOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(LayerPruneReport, u64)> {
    let f = GgufFile::open(input)?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let n = cfg.n_layer;
    if cfg.swa_layers.iter().any(|&w| w) {
        return Err(Error::NotForThisModel(format!(
            "`{}` has sliding-window layers (architecture `{}`): removing layers would move their per-layer pattern, which is not written back yet",
            input.display(),
            f.header.architecture().unwrap_or("?")
        )));
    }
    if !(opts.fraction > 0.0 && opts.fraction < 1.0) {
        return Err(Error::BadOptions(format!(
            "fraction of layers {} must lie in (0, 1)",
            opts.fraction
        )));
    }
    let calib = calib.ok_or_else(|| {
        Error::BadOptions(
            "layers are chosen by how much they change their input on calibration text (--calib FILE)".into(),
        )
    })?;
    if n < 2 {
        return Err(Error::BadOptions(
            "a one-block model has no block to remove".into(),
        ));
    }
    // (The epsilon keeps 25 × 0.28 = 7.000000000000001 from becoming 8.)
    let k = ((n as f64 * opts.fraction - 1e-9).ceil() as usize).clamp(1, n - 1);
    progress(0, 1);
    let bi = block_influence(&calibration::load_model(&f)?, calib)?;
    progress(1, 1);
    let mut removed: Vec<usize> = (0..n).collect();
    removed.sort_by(|&a, &b| bi[a].total_cmp(&bi[b]).then(a.cmp(&b)));
    removed.truncate(k);
    removed.sort_unstable();
    let new_index: Vec<Option<usize>> = {
        let mut next = 0;
        (0..n)
            .map(|i| {
                (!removed.contains(&i)).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let rename = |name: &str| -> Option<String> {
        let Some(rest) = name.strip_prefix("blk.") else {
            return Some(name.to_string());
        };
        let Some((i, tail)) = rest
            .split_once('.')
            .and_then(|(i, tail)| Some((i.parse::<usize>().ok()?, tail)))
        else {
            return Some(name.to_string());
        };
        new_index
            .get(i)
            .copied()
            .flatten()
            .map(|j| format!("blk.{j}.{tail}"))
    };
    let arch = f.header.architecture().unwrap_or("llama").to_string();
    let metadata = with_keys(&f, &[(format!("{arch}.block_count"), (n - k) as u64)]);
    let bytes = crate::rewrite::write_gguf_edited(
        &f,
        output,
        &[input],
        &metadata,
        &HashMap::new(),
        &rename,
    )?;
    let total: u64 = f.header.tensors.iter().map(|t| t.n_elements()).sum();
    let kept: u64 = f
        .header
        .tensors
        .iter()
        .filter(|t| rename(&t.name).is_some())
        .map(|t| t.n_elements())
        .sum();
    Ok((
        LayerPruneReport {
            n_layer_before: n,
            n_layer_after: n - k,
            removed,
            block_influence: bi,
            parameters_before: total,
            parameters_after: kept,
        },
        bytes,
    ))
}

/// One conv block's outcome in [`prune_cnn_channels`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelLayer {
    pub conv: usize,
    pub before: usize,
    pub kept: Vec<usize>,
    /// The removed channels' share of the layer's total score.
    pub removed_score_share: f64,
}

/// What [`prune_cnn_channels`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelPruneReport {
    pub conv_channels_before: Vec<usize>,
    pub conv_channels_after: Vec<usize>,
    pub parameters_before: usize,
    pub parameters_after: usize,
    pub layers: Vec<ChannelLayer>,
}

/// Removes at least `fraction` of every conv block's output channels from a CNN (at least one
/// kept), physically: the channel's filter and bias go, and so do the next layer's inputs that
/// read it (its 3×3 input slices in the next conv, its H·W columns in `fc1`, which reads the
/// features channel-major as PyTorch flattens them). A channel's score is the product of the
/// L2 norms of its filter and of the weights reading it (the structured form of magnitude
/// pruning, as for MLP neurons; Li et al. 2017 rank filters by their own norm alone). Returns
/// a smaller model with the same interface.
pub fn prune_cnn_channels(
    model: &frugal_models::cnn::Cnn,
    fraction: f64,
) -> Result<(frugal_models::cnn::Cnn, ChannelPruneReport)> {
    use frugal_models::cnn::{Cnn, CnnConfig};
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::BadOptions(format!(
            "fraction of channels {fraction} must lie in (0, 1)"
        )));
    }
    let cfg = &model.config;
    let params: HashMap<String, Vec<f32>> = model
        .parameters()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<_>>()?;
    let (oh, ow) = cfg.out_hw();
    let hw = oh * ow;
    let n_conv = cfg.conv_channels.len();
    // Channels kept per conv, chosen on the unpruned weights.
    let mut layers = Vec::with_capacity(n_conv);
    let mut c_in = cfg.in_channels;
    for (i, &c) in cfg.conv_channels.iter().enumerate() {
        let w = &params[&format!("conv{i}.weight")];
        let fan = c_in * 9;
        let scores: Vec<f64> = (0..c)
            .map(|o| {
                let next = if i + 1 < n_conv {
                    let nw = &params[&format!("conv{}.weight", i + 1)];
                    let nfan = c * 9;
                    norm(
                        nw.chunks(nfan)
                            .flat_map(|r| r[o * 9..o * 9 + 9].iter().copied()),
                    )
                } else {
                    let f = &params["fc1.weight"];
                    norm(
                        f.chunks(c * hw)
                            .flat_map(|r| r[o * hw..(o + 1) * hw].iter().copied()),
                    )
                };
                norm(w[o * fan..(o + 1) * fan].iter().copied()) * next
            })
            .collect();
        let keep = ((c as f64 * (1.0 - fraction) + 1e-9).floor() as usize).max(1);
        let kept = choose(&scores, keep);
        let total: f64 = scores.iter().sum();
        let kept_sum: f64 = kept.iter().map(|&j| scores[j]).sum();
        layers.push(ChannelLayer {
            conv: i,
            before: c,
            removed_score_share: if total > 0.0 {
                1.0 - kept_sum / total
            } else {
                0.0
            },
            kept,
        });
        c_in = c;
    }
    let new_cfg = CnnConfig {
        conv_channels: layers.iter().map(|l| l.kept.len()).collect(),
        ..cfg.clone()
    };
    let dev = candle_core::Device::Cpu;
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    let mut c_in_old = cfg.in_channels;
    let mut in_kept: Vec<usize> = (0..cfg.in_channels).collect();
    for (i, l) in layers.iter().enumerate() {
        let w = &params[&format!("conv{i}.weight")];
        let fan = c_in_old * 9;
        let nw: Vec<f32> = l
            .kept
            .iter()
            .flat_map(|&o| {
                let row = &w[o * fan..(o + 1) * fan];
                in_kept
                    .iter()
                    .flat_map(move |&c| row[c * 9..c * 9 + 9].iter().copied())
            })
            .collect();
        let b = &params[&format!("conv{i}.bias")];
        values.insert(format!("conv{i}.weight"), nw);
        values.insert(
            format!("conv{i}.bias"),
            l.kept.iter().map(|&o| b[o]).collect(),
        );
        c_in_old = l.before;
        in_kept = l.kept.clone();
    }
    let f = &params["fc1.weight"];
    let flat = cfg.flat_features();
    let fc1: Vec<f32> = f
        .chunks(flat)
        .flat_map(|r| {
            in_kept
                .iter()
                .flat_map(move |&c| r[c * hw..(c + 1) * hw].iter().copied())
        })
        .collect();
    values.insert("fc1.weight".into(), fc1);
    for n in ["fc1.bias", "fc2.weight", "fc2.bias"] {
        values.insert(n.into(), params[n].clone());
    }
    let pruned = Cnn::from_tensors(new_cfg.clone(), |name, shape| {
        let v = values
            .remove(name)
            .ok_or_else(|| frugal_models::Error::MissingTensor {
                path: "pruned model".into(),
                name: name.into(),
            })?;
        Ok(candle_core::Tensor::from_vec(v, shape, &dev)?)
    })?;
    let count = |c: &CnnConfig| -> usize {
        c.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    };
    Ok((
        pruned,
        ChannelPruneReport {
            conv_channels_before: cfg.conv_channels.clone(),
            conv_channels_after: new_cfg.conv_channels.clone(),
            parameters_before: count(cfg),
            parameters_after: count(&new_cfg),
            layers,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refit against a direct least-squares check: with every neuron kept it returns W,
    /// and with some dropped its output error on the activations is the least possible
    /// (no perturbation of the solution does better).
    #[test]
    fn refit_is_least_squares() {
        let (t, n, d) = (64usize, 8usize, 3usize);
        let mut rng = frugal_formats::rng::SplitMix64(5);
        let a: Vec<f32> = (0..t * n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let w: Vec<f32> = (0..d * n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let g = crate::testutil::gram(&a, n);
        let all: Vec<usize> = (0..n).collect();
        let same = refit_down(&w, n, &g, &all, 0.0).unwrap();
        for (x, y) in same.iter().zip(&w) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        let keep = [0usize, 2, 3, 6];
        let err = |wk: &[f32]| -> f64 {
            let mut e = 0.0;
            for row in a.chunks(n) {
                for r in 0..d {
                    let full: f64 = (0..n).map(|j| f64::from(row[j] * w[r * n + j])).sum();
                    let part: f64 = keep
                        .iter()
                        .enumerate()
                        .map(|(c, &j)| f64::from(row[j] * wk[r * keep.len() + c]))
                        .sum();
                    e += (full - part).powi(2);
                }
            }
            e
        };
        // A large ridge keeps the kept columns as they were.
        let stiff = refit_down(&w, n, &g, &keep, 1e6).unwrap();
        for (x, y) in stiff.iter().zip(take_cols(&w, n, &keep)) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
        let fit = refit_down(&w, n, &g, &keep, 0.0).unwrap();
        let plain = take_cols(&w, n, &keep);
        assert!(err(&fit) < err(&plain), "{} vs {}", err(&fit), err(&plain));
        for k in 0..fit.len() {
            for delta in [-1e-2f32, 1e-2] {
                let mut p = fit.clone();
                p[k] += delta;
                assert!(err(&p) >= err(&fit) - 1e-9);
            }
        }
    }

    /// Channels whose filters and biases are zero contribute nothing: removing exactly them
    /// leaves every logit unchanged, and the smaller model has the right shapes.
    #[test]
    fn removing_dead_channels_keeps_the_logits() {
        use frugal_models::cnn::{Cnn, CnnConfig};
        let dev = candle_core::Device::Cpu;
        let cfg = CnnConfig {
            conv_channels: vec![4, 6],
            hidden: 8,
            ..CnnConfig::classic(8, 8, 3)
        };
        let (m, _) = Cnn::init(cfg.clone(), 7, &dev).unwrap();
        // Kill channel 1 of conv0 and channels 0, 4 of conv1 (filter and bias zero).
        let mut params = m.parameters().unwrap();
        let mut set = |name: &str, f: &dyn Fn(usize, &mut f32)| {
            let (_, t) = params.iter_mut().find(|(n, _)| n == name).unwrap();
            let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
            *t = candle_core::Tensor::from_vec(v, t.dims(), &dev).unwrap();
        };
        set("conv0.weight", &|i, x| {
            if i / 9 == 1 {
                *x = 0.0
            }
        });
        set("conv0.bias", &|i, x| {
            if i == 1 {
                *x = 0.0
            }
        });
        set("conv1.weight", &|i, x| {
            if [0, 4].contains(&(i / 36)) {
                *x = 0.0
            }
        });
        set("conv1.bias", &|i, x| {
            if [0, 4].contains(&i) {
                *x = 0.0
            }
        });
        let mut it = params.into_iter();
        let dead = Cnn::from_tensors(cfg, |_, _| Ok(it.next().unwrap().1)).unwrap();
        let (small, r) = prune_cnn_channels(&dead, 0.25).unwrap();
        assert_eq!(r.conv_channels_after, vec![3, 4]);
        assert_eq!(r.layers[0].kept, vec![0, 2, 3]);
        assert_eq!(r.layers[1].kept, vec![1, 2, 3, 5]);
        assert_eq!(small.config.flat_features(), 4 * 2 * 2);
        let set = frugal_formats::digits::embedded_digits();
        let (x, _) = frugal_models::cnn::batch_pixels(&set, &[0, 1, 2, 3]);
        let x = candle_core::Tensor::from_vec(x, (4, 1, 8, 8), &dev).unwrap();
        let a: Vec<Vec<f32>> = dead.forward(&x).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = small.forward(&x).unwrap().to_vec2().unwrap();
        for (ra, rb) in a.iter().zip(&b) {
            for (p, q) in ra.iter().zip(rb) {
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
        assert!(prune_cnn_channels(&dead, 1.0).is_err());
    }

    #[test]
    fn choose_keeps_the_best_in_order() {
        assert_eq!(choose(&[0.5, 3.0, 1.0, 2.0, 0.1], 3), vec![1, 2, 3]);
    }
}
