//! AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression"):
//! before rounding, every input channel j of a group of linear layers that share an input is
//! scaled, W[:, j] ← W[:, j]·s_j, and the input divided by s_j — folded exactly into whatever
//! produced it (an RMSNorm's gain, or the rows of the linear layer before). Channels that carry
//! large activations get finer effective quantization steps. The scales are
//! s = m^α / √(max(m^α)·min(m^α)) with m the channel's mean |x|, and α chosen on a grid of
//! [`GRID`] points (α = 0 is plain rounding, so the search never does worse than rounding).
//!
//! Where the reference implementation runs the block forward for every candidate α, Frugal
//! measures the candidate by the exact squared output error of the group's layers on the
//! calibration inputs, tr(ΔW·H·ΔWᵀ) with H = XᵀX the Gram matrix GPTQ uses anyway, and ΔW the
//! rounding error mapped back to the original input space.
//!
//! Grouped-query attention: the output projection's input channel (head h, dimension j) comes
//! from value row (h / rep, j), so its scales are tied across the `rep` query heads that share
//! a key/value head (the reference implementation skips this pair when the shapes differ).

use super::calibration::{dense, layer_names, linear_named};
use super::{decode, quantize_matrix};
use crate::Result;
use candle_core::{Device, Tensor};
use frugal_formats::gguf::GgmlType;
use frugal_models::llama::Llama;

/// The α grid is 0, 1/GRID, …, (GRID−1)/GRID, as in the reference implementation. It is
/// searched coarse to fine: every other point first, then the two neighbours of the best one
/// (12 evaluations instead of 20; the same choice wherever the loss is unimodal on the grid).
pub const GRID: usize = 20;

/// The search measures each layer on at most this many of its rows, evenly spaced (the choice
/// of one α per group needs far fewer rows than the rounding itself).
pub const SEARCH_ROWS: usize = 256;

/// One weight of a group: row-major `[rows, n]` values and the type it will be rounded to.
pub struct Member<'a> {
    pub w: &'a [f32],
    pub ty: GgmlType,
}

/// The scales chosen for one group.
#[derive(Debug, Clone)]
pub struct Scales {
    /// One per input channel (already expanded when channels are tied).
    pub s: Vec<f32>,
    pub alpha: f64,
    /// The group's output error without scaling (α = 0) and with the chosen scales.
    pub loss_plain: f64,
    pub loss: f64,
}

/// Output error tr(ΔW·H·ΔWᵀ) of rounding `w` (`[rows, n]`) to `ty` after scaling its columns by
/// `s`, with the rounding importance-weighted by the scaled inputs' mean square (`ms / s²`).
pub fn scaled_rounding_loss(
    w: &[f32],
    n: usize,
    ty: GgmlType,
    s: &[f32],
    h: &Tensor,
    ms: &[f32],
) -> Result<f64> {
    let rows = w.len() / n;
    let scaled: Vec<f32> = w
        .chunks(n)
        .flat_map(|r| r.iter().zip(s).map(|(a, b)| a * b))
        .collect();
    let qw: Vec<f32> = ms.iter().zip(s).map(|(m, s)| m / (s * s)).collect();
    let back = decode(
        &quantize_matrix(&scaled, n, ty, Some(&qw)),
        ty,
        scaled.len(),
    )?;
    let delta: Vec<f32> = back
        .chunks(n)
        .zip(w.chunks(n))
        .flat_map(|(b, r)| b.iter().zip(r).zip(s).map(|((b, r), s)| b / s - r))
        .collect();
    let d = Tensor::from_vec(delta, (rows, n), &Device::Cpu)?;
    Ok(f64::from(
        d.matmul(h)?.mul(&d)?.sum_all()?.to_scalar::<f32>()?,
    ))
}

/// Searches the scales for a group of layers reading the same `n` inputs. `gram` is Σxxᵀ over
/// `n_tokens` tokens (f64, `[n, n]`), `mean_abs` the channels' mean |x|, and `tie[j]` the scale
/// index of channel j (identity unless channels share a scale; indices `0..n_scales`).
pub fn search(
    members: &[Member],
    n: usize,
    gram: &[f64],
    n_tokens: usize,
    mean_abs: &[f32],
    tie: &[usize],
) -> Result<Scales> {
    let n_scales = tie.iter().max().map_or(0, |m| m + 1);
    // The statistic per scale: the mean of its channels' mean |x|.
    let mut m = vec![0f64; n_scales];
    let mut count = vec![0usize; n_scales];
    for (j, &t) in tie.iter().enumerate() {
        m[t] += f64::from(mean_abs[j]);
        count[t] += 1;
    }
    m.iter_mut()
        .zip(&count)
        .for_each(|(v, &c)| *v /= c.max(1) as f64);
    let scale = 1.0 / n_tokens.max(1) as f64;
    let h = Tensor::from_vec(
        gram.iter()
            .map(|&g| (g * scale) as f32)
            .collect::<Vec<f32>>(),
        (n, n),
        &Device::Cpu,
    )?;
    let ms: Vec<f32> = (0..n).map(|j| (gram[j * n + j] * scale) as f32).collect();
    let samples: Vec<(Vec<f32>, GgmlType)> = members
        .iter()
        .map(|mb| (sample_rows(mb.w, n, SEARCH_ROWS), mb.ty))
        .collect();
    let loss_of = |k: usize| -> Result<(f64, Vec<f32>)> {
        let s = if k == 0 {
            vec![1f32; n]
        } else {
            let s = scales_for(&m, k as f64 / GRID as f64);
            tie.iter().map(|&t| s[t]).collect()
        };
        let loss = samples
            .iter()
            .map(|(w, ty)| scaled_rounding_loss(w, n, *ty, &s, &h, &ms))
            .sum::<Result<f64>>()?;
        Ok((loss, s))
    };
    let mut tried: Vec<Option<(f64, Vec<f32>)>> = vec![None; GRID];
    let argmin = |tried: &[Option<(f64, Vec<f32>)>]| -> usize {
        (0..GRID)
            .filter(|&k| tried[k].is_some())
            .min_by(|&a, &b| {
                let l = |k: usize| tried[k].as_ref().map_or(f64::INFINITY, |t| t.0);
                l(a).total_cmp(&l(b)).then(a.cmp(&b))
            })
            .expect("α = 0 is always tried")
    };
    for k in (0..GRID).step_by(2) {
        tried[k] = Some(loss_of(k)?);
    }
    let coarse = argmin(&tried);
    for k in [coarse.wrapping_sub(1), coarse + 1] {
        if k < GRID && tried[k].is_none() {
            tried[k] = Some(loss_of(k)?);
        }
    }
    let k = argmin(&tried);
    let loss_plain = tried[0].as_ref().expect("α = 0 is always tried").0;
    let (loss, s) = tried[k].take().expect("tried");
    Ok(Scales {
        s,
        alpha: k as f64 / GRID as f64,
        loss_plain,
        loss,
    })
}

/// At most `max` rows of `w` (`[rows, n]`), evenly spaced.
fn sample_rows(w: &[f32], n: usize, max: usize) -> Vec<f32> {
    let rows = w.len() / n;
    if rows <= max {
        return w.to_vec();
    }
    (0..max)
        .flat_map(|k| {
            let r = k * rows / max;
            w[r * n..(r + 1) * n].iter().copied()
        })
        .collect()
}

/// s = m^α normalised by √(max·min), each m clamped below at 1e-4 (as the reference does).
fn scales_for(m: &[f64], alpha: f64) -> Vec<f32> {
    let s: Vec<f64> = m.iter().map(|&v| v.max(1e-4).powf(alpha)).collect();
    let (lo, hi) = s
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter().map(|&v| (v / norm) as f32).collect()
}

/// Channel → scale index for the attention output projection under grouped-query attention:
/// channel (head h, dim j) shares the scale of value row (h / (n_head / n_head_kv), j).
pub fn tie_gqa(n_head: usize, n_head_kv: usize, head_dim: usize) -> Vec<usize> {
    let rep = n_head / n_head_kv.max(1);
    (0..n_head * head_dim)
        .map(|c| (c / head_dim / rep) * head_dim + c % head_dim)
        .collect()
}

/// One AWQ group's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct AwqChoice {
    pub group: String,
    pub alpha: f64,
    pub loss_ratio: f64,
}

/// Scales the input channels of block `i`'s input group `g` (the order of
/// [`Llama::block_forward`]'s trace) by `s` — every layer reading that input gets its columns
/// multiplied by `s` — and divides whatever produces the input by `s`, so the block computes the
/// same function: the RMSNorm gain for the attention and FFN inputs, the value projection's rows
/// for the attention output (whose channels share their value row's scale under grouped-query
/// attention; `s` must be tied accordingly), the up projection's rows for FFN down's input
/// (silu(gate)·up is linear in up).
pub fn fold_scales(model: &mut Llama, i: usize, g: usize, s: &[f32]) -> Result<()> {
    let names = layer_names(model, i);
    for name in &names[g] {
        let lin = linear_named(model, name);
        let mut w: Vec<f32> = lin.weight_f32()?.flatten_all()?.to_vec1()?;
        scale_cols(&mut w, s);
        dense(lin, w)?;
    }
    let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
    let rows = |model: &mut Llama, producer: &str, k: &[f32]| -> Result<()> {
        let lin = linear_named(model, producer);
        // A bias (Qwen2's value projection) is scaled with its rows: (Wx + b)·k. The block-wise
        // pass writes it back.
        if let Some(b) = lin.bias() {
            let kt = Tensor::from_slice(k, k.len(), b.device())?;
            let scaled = b.mul(&kt)?;
            lin.set_bias(scaled)?;
        }
        let cols = lin.n_in();
        let mut w: Vec<f32> = lin.weight_f32()?.flatten_all()?.to_vec1()?;
        w.chunks_mut(cols)
            .zip(k)
            .for_each(|(r, k)| r.iter_mut().for_each(|v| *v *= k));
        dense(lin, w)
    };
    match g {
        0 | 2 => {
            let b = &mut model.blocks[i];
            let norm = if g == 0 {
                &mut b.attn_norm
            } else {
                &mut b.ffn_norm
            };
            let inv_t = Tensor::from_slice(&inv, inv.len(), norm.device())?;
            *norm = norm.mul(&inv_t)?;
        }
        1 => {
            let c = &model.config;
            let tie = tie_gqa(c.n_head, c.n_head_kv, c.head_dim());
            let mut k = vec![1f32; c.n_head_kv * c.head_dim()];
            tie.iter().zip(&inv).for_each(|(&t, &v)| k[t] = v);
            rows(model, &names[0][2], &k)?;
        }
        _ => rows(model, &names[2][1], &inv)?,
    }
    Ok(())
}

fn scale_cols(w: &mut [f32], s: &[f32]) {
    w.chunks_mut(s.len())
        .for_each(|r| r.iter_mut().zip(s).for_each(|(v, k)| *v *= k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::gram;
    use frugal_formats::rng::SplitMix64;

    /// Inputs where a few channels are large (as in LLMs' outlier channels).
    fn outlier_inputs(t: usize, n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        (0..t * n)
            .map(|k| {
                let j = k % n;
                let g = r.next_gaussian() as f32;
                if j.is_multiple_of(37) {
                    20.0 * g
                } else {
                    g
                }
            })
            .collect()
    }

    /// The loss is the squared error of the outputs on the calibration inputs, computed
    /// directly; AWQ never does worse than rounding and does better with outlier channels.
    #[test]
    fn loss_is_the_output_error_and_scaling_helps_outlier_channels() {
        let (t, n, rows) = (256, 64, 16);
        let x = outlier_inputs(t, n, 7);
        let mut r = SplitMix64(3);
        let w: Vec<f32> = (0..rows * n).map(|_| r.next_gaussian() as f32).collect();
        let g = gram(&x, n);
        let mean_abs: Vec<f32> = (0..n)
            .map(|j| (x.iter().skip(j).step_by(n).map(|v| v.abs()).sum::<f32>()) / t as f32)
            .collect();
        let ty = GgmlType::Q4_0;
        let ident: Vec<usize> = (0..n).collect();
        let best = search(&[Member { w: &w, ty }], n, &g, t, &mean_abs, &ident).unwrap();

        // Direct: Σ_t ‖(Ŵ − W) x_t‖² / T with Ŵ the rounding of W·diag(s), mapped back.
        let ms: Vec<f32> = (0..n).map(|j| (g[j * n + j] / t as f64) as f32).collect();
        let direct = |s: &[f32]| -> f64 {
            let scaled: Vec<f32> = w
                .chunks(n)
                .flat_map(|r| r.iter().zip(s).map(|(a, b)| a * b))
                .collect();
            let qw: Vec<f32> = ms.iter().zip(s).map(|(m, s)| m / (s * s)).collect();
            let back = decode(
                &quantize_matrix(&scaled, n, ty, Some(&qw)),
                ty,
                scaled.len(),
            )
            .unwrap();
            let mut e = 0f64;
            for xt in x.chunks(n) {
                for (br, wr) in back.chunks(n).zip(w.chunks(n)) {
                    let y: f64 = (0..n)
                        .map(|j| f64::from(br[j] / s[j] - wr[j]) * f64::from(xt[j]))
                        .sum();
                    e += y * y;
                }
            }
            e / t as f64
        };
        let plain = direct(&vec![1.0; n]);
        assert!(
            (best.loss_plain - plain).abs() <= 1e-3 * plain,
            "{} vs {plain}",
            best.loss_plain
        );
        assert!((best.loss - direct(&best.s)).abs() <= 1e-3 * best.loss);
        assert!(best.alpha > 0.0, "outlier channels should be protected");
        assert!(
            best.loss < 0.8 * best.loss_plain,
            "{} vs {}",
            best.loss,
            best.loss_plain
        );
        // Outlier channels get the larger scales.
        assert!(best.s[0] > best.s[1] && best.s[37] > best.s[38]);
    }

    #[test]
    fn gqa_ties_each_output_channel_to_its_value_row() {
        let tie = tie_gqa(4, 2, 3);
        // heads 0,1 → kv head 0 (rows 0..3); heads 2,3 → kv head 1 (rows 3..6).
        assert_eq!(tie, vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]);
        let m = [1.0, 4.0, 16.0];
        let s = scales_for(&m, 0.5);
        // m^0.5 = 1, 2, 4; normalised by √(1·4) = 2.
        assert_eq!(s, vec![0.5, 1.0, 2.0]);
    }
}
