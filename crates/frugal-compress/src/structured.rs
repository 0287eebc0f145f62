//! Structured pruning that physically shrinks a Llama-family model: whole MLP neurons (row `j`
//! of `ffn_gate` and `ffn_up`, column `j` of `ffn_down`) removed from every block, the same
//! number in each, so the result is an ordinary GGUF with a smaller `feed_forward_length` that
//! llama.cpp loads as it is.
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
//!   activations ([`gptq::sequential`]).

use crate::prune::Score;
use crate::quant::gptq::Calibration;
use crate::quant::gptq::{self, BlockStats};
use crate::rewrite::{write_gguf_with_f32, Replacement};
use crate::{Error, Result};
use frugal_formats::gguf::{GgufFile, Value};
use frugal_models::linear::Linear;
use frugal_models::llama::{Llama, LlamaConfig};
use std::collections::HashMap;
use std::path::Path;

/// Settings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct NeuronPruneOptions {
    pub score: Score,
    /// At least this fraction of each block's MLP neurons is removed.
    pub fraction: f64,
    /// The kept count is a multiple of this (32 keeps every ggml block type usable on
    /// `ffn_down`, whose rows then hold the kept neurons).
    pub multiple: usize,
    /// Dampening of G[K,K] for the refit, a fraction of its mean diagonal.
    pub damp: f64,
}

/// One block's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NeuronLayer {
    pub block: usize,
    pub kept: usize,
    pub removed: usize,
    /// The removed neurons' share of the block's total score.
    pub removed_score_share: f64,
}

/// What [`prune_mlp_neurons_gguf`] did.
#[derive(Debug, Clone, serde::Serialize)]
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
    opts: &NeuronPruneOptions,
    calib: Option<&Calibration>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(NeuronPruneReport, u64)> {
    let f = GgufFile::open(input)?;
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
                let refit = (score == Score::SparseGpt).then_some(&g[..]);
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
            gptq::sequential(&f, calib, false, &mut treat, progress)?;
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

    #[test]
    fn choose_keeps_the_best_in_order() {
        assert_eq!(choose(&[0.5, 3.0, 1.0, 2.0, 0.1], 3), vec![1, 2, 3]);
    }
}
