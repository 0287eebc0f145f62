//! Unstructured and N:M pruning of linear layers (convolutions included, as im2col linears):
//!
//! - **magnitude**: score |W_ij|, compared within each layer or across all layers (global);
//! - **Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
//!   Models"): score |W_ij|·‖X_j‖₂ with ‖X_j‖₂ the norm of input column j on calibration data,
//!   compared within each output row, as the paper does.
//!
//! With an N:M pattern, every group of M consecutive inputs of a row keeps its N best scores
//! (2:4 is what sparse tensor cores accelerate). The result is a 0/1 mask per layer, applied to
//! the weights and returned so that fine-tuning can keep pruned weights at zero.

use crate::{Error, Result};
use candle_core::Tensor;
use frugal_models::linear::{Linear, Weight};

/// What a weight's importance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    Magnitude,
    Wanda,
}

/// Which weights compete with each other (unstructured pattern only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Within each layer (Wanda: within each output row).
    PerLayer,
    /// Across every pruned layer (magnitude only).
    Global,
}

/// The sparsity pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PruneOptions {
    pub score: Score,
    /// Fraction of weights set to zero (unstructured; N:M implies 1 − N/M).
    pub sparsity: f64,
    pub pattern: Pattern,
    pub scope: Scope,
}

/// One layer's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerSparsity {
    pub name: String,
    pub n_weights: usize,
    pub n_zero: usize,
}

/// What [`prune_linears`] did.
#[derive(Debug, Clone, serde::Serialize)]
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
        (Pattern::Unstructured, Scope::PerLayer, Score::Magnitude) => scores
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
fn keep_best_in_groups(s: &[f32], g: usize, keep: usize) -> Vec<bool> {
    let mut mask = vec![false; s.len()];
    let mut idx: Vec<usize> = Vec::with_capacity(g);
    for (c, chunk) in s.chunks(g).enumerate() {
        idx.clear();
        idx.extend(0..chunk.len());
        idx.sort_by(|&a, &b| chunk[b].total_cmp(&chunk[a]).then(a.cmp(&b)));
        for &i in idx.iter().take(keep) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
