//! Calibration-aware quantization of a Llama model through its linear layers:
//!
//! - [`collect_imatrix`]: llama-imatrix's statistic (per input column mean x²) for every weight,
//!   from the full-precision model on calibration text;
//! - [`blockwise_model`]: AWQ scales ([`super::awq`], optional), then GPTQ (Frantar et al.
//!   2022) or importance-weighted rounding. Blocks are processed in order on the
//!   *quantized* model's own activations: for each block, the Gram matrices H = Σ xxᵀ of its
//!   four distinct linear inputs are accumulated, each weight is quantized column by column in
//!   the target block format (the format's scales are fitted, importance-weighted, on the
//!   already-updated weights when a format block is entered), and each rounding error is spread
//!   over the columns not yet quantized through the upper Cholesky factor of H⁻¹. The quantized
//!   weights then replace the originals before the next block's statistics are taken.
//!
//! The output is ordinary block-format bytes, written by [`super::quantize_gguf_with`].

use super::awq::{fold_scales, AwqChoice};
use super::calibration::{
    dense, inverse_cholesky_upper_of, layer_names, linear_named, sequential, stored_name,
    BlockStats, Calibration,
};
use super::codec::{codec, Codec};
use super::{Choice, Imatrix};
use crate::{Error, Result};
use frugal_formats::gguf::{GgmlType, GgufFile};
use frugal_models::llama::Llama;
use frugal_models::scratch::{Placement, Scratch};
use rayon::prelude::*;
use std::collections::HashMap;

/// GPTQ settings.
#[derive(Debug, Clone, Copy)]
pub struct GptqOptions {
    /// Dampening added to H's diagonal, as a fraction of its mean.
    pub damp: f64,
    /// Quantize columns by decreasing activation (static scales).
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            act_order: true,
        }
    }
}

/// GPTQ of one weight matrix `w` (`rows × cols`, row-major) into `ty`, given the upper Cholesky
/// factor `u` of H⁻¹ and per-column importance `qw` (used to fit each format block's scales).
pub fn gptq_matrix(w: &[f32], cols: usize, u: &[f32], qw: &[f32], ty: GgmlType) -> Vec<u8> {
    let c: &Codec = codec(ty).expect("a type Frugal writes");
    let acc = c.levels.expect("a quantized format");
    let nb = cols / c.block;
    let row_bytes = nb * c.block_bytes;
    let rows = w.len() / cols;
    let mut out = vec![0u8; rows * row_bytes];
    const GROUP: usize = 8;
    out.par_chunks_mut(row_bytes * GROUP)
        .zip(w.par_chunks(cols * GROUP))
        .for_each(|(ob, wb)| {
            let g = wb.len() / cols;
            let mut w: Vec<f32> = wb.to_vec();
            let mut scales = vec![(0f32, 0f32); c.block / c.sub];
            let mut levels = vec![0u8; c.block];
            let mut err = vec![0f32; g];
            // Per row of the group, the current format block's scales and levels.
            let mut blk_scales = vec![vec![(0f32, 0f32); c.block / c.sub]; g];
            let mut blk_levels = vec![vec![0u8; c.block]; g];
            for b in 0..nb {
                let c0 = b * c.block;
                for r in 0..g {
                    let y = &mut ob[r * row_bytes + b * c.block_bytes..][..c.block_bytes];
                    (c.row)(
                        &w[r * cols + c0..r * cols + c0 + c.block],
                        Some(&qw[c0..c0 + c.block]),
                        y,
                    );
                    (acc.scales)(y, &mut scales);
                    (acc.get)(y, &mut levels);
                    blk_scales[r].copy_from_slice(&scales);
                    blk_levels[r].copy_from_slice(&levels);
                }
                for j in c0..c0 + c.block {
                    let ujj = u[j * cols + j];
                    for r in 0..g {
                        let x = w[r * cols + j];
                        let (d, bias) = blk_scales[r][(j - c0) / c.sub];
                        let q = if d != 0.0 {
                            let (l, q) = c.round_level(x, d, bias);
                            blk_levels[r][j - c0] = l;
                            q
                        } else {
                            bias
                        };
                        err[r] = (x - q) / ujj;
                    }
                    let urow = &u[j * cols + j + 1..(j + 1) * cols];
                    for r in 0..g {
                        let e = err[r];
                        if e != 0.0 {
                            let wr = &mut w[r * cols + j + 1..(r + 1) * cols];
                            for (wv, &uv) in wr.iter_mut().zip(urow) {
                                *wv -= e * uv;
                            }
                        }
                    }
                }
                for r in 0..g {
                    let y = &mut ob[r * row_bytes + b * c.block_bytes..][..c.block_bytes];
                    (acc.set)(y, &blk_levels[r]);
                }
            }
        });
    out
}

/// GPTQ for the lattice types, whose values come as points of eight (BlockLDLQ, as QuIP#
/// rounds to its E8 lattice): when a format block is entered, the type's own quantizer fits its
/// scales, importance-weighted, on the already-updated weights; when each sub-block is entered,
/// its scale is chosen again on the weights as the compensation has left them
/// ([`rescale_sub_block`]); then each group of eight columns is re-chosen on the lattice from
/// the updated weights (`Regroup::group`), and the group's rounding errors are spread column by
/// column over the columns after it through the upper Cholesky factor `u` of H⁻¹ (the exact
/// compensation for the chosen points). Columns in their original order: a lattice point's
/// eight values are neighbours.
pub fn gptq_lattice(w: &[f32], cols: usize, u: &[f32], qw: &[f32], ty: GgmlType) -> Vec<u8> {
    let c: &Codec = codec(ty).expect("a type Frugal writes");
    let lat = c.regroup.expect("a lattice type");
    let regroup = lat.group;
    let nb = cols / c.block;
    let row_bytes = nb * c.block_bytes;
    let rows = w.len() / cols;
    let mut out = vec![0u8; rows * row_bytes];
    const GROUP: usize = 8;
    out.par_chunks_mut(row_bytes * GROUP)
        .zip(w.par_chunks(cols * GROUP))
        .for_each(|(ob, wb)| {
            let g = wb.len() / cols;
            let mut w: Vec<f32> = wb.to_vec();
            let mut q = vec![[0f32; 8]; g];
            for b in 0..nb {
                let c0 = b * c.block;
                for r in 0..g {
                    let y = &mut ob[r * row_bytes + b * c.block_bytes..][..c.block_bytes];
                    let x = &w[r * cols + c0..r * cols + c0 + c.block];
                    (c.row)(x, Some(&qw[c0..c0 + c.block]), y);
                }
                for k in 0..c.block / 8 {
                    let j0 = c0 + 8 * k;
                    if (8 * k).is_multiple_of(c.sub) {
                        for r in 0..g {
                            let y = &mut ob[r * row_bytes + b * c.block_bytes..][..c.block_bytes];
                            let x = &w[r * cols + j0..r * cols + j0 + c.sub];
                            rescale_sub_block(
                                &lat,
                                y,
                                8 * k / c.sub,
                                c.sub,
                                x,
                                &qw[j0..j0 + c.sub],
                            );
                        }
                    }
                    for (r, q) in q.iter_mut().enumerate() {
                        let y = &mut ob[r * row_bytes + b * c.block_bytes..][..c.block_bytes];
                        regroup(
                            y,
                            k,
                            &w[r * cols + j0..r * cols + j0 + 8],
                            &qw[j0..j0 + 8],
                            q,
                        );
                    }
                    for j in j0..j0 + 8 {
                        let ujj = u[j * cols + j];
                        let urow = &u[j * cols + j + 1..(j + 1) * cols];
                        for (r, q) in q.iter().enumerate() {
                            let e = (w[r * cols + j] - q[j - j0]) / ujj;
                            if e != 0.0 {
                                let wr = &mut w[r * cols + j + 1..(r + 1) * cols];
                                for (wv, &uv) in wr.iter_mut().zip(urow) {
                                    *wv -= e * uv;
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

/// Chooses sub-block `s`'s scale code (of `sub` values `x`, weights `w`) of the lattice block
/// `y` whose least `w`-weighted error the sub-block's groups re-chosen under it give (the lowest
/// code on ties), on a copy; the groups themselves are left to GPTQ.
fn rescale_sub_block(
    lat: &super::codec::Regroup,
    y: &mut [u8],
    s: usize,
    sub: usize,
    x: &[f32],
    w: &[f32],
) {
    // The lattice types' blocks are at most 110 bytes (IQ3_S).
    let mut buf = [0u8; 128];
    let tmp = &mut buf[..y.len()];
    tmp.copy_from_slice(y);
    let mut out = [0f32; 8];
    let (mut best, mut best_code) = (f32::INFINITY, None);
    for code in 0..lat.codes {
        (lat.set_scale)(tmp, s, code);
        let mut e = 0f32;
        for q in 0..sub / 8 {
            let r = 8 * q..8 * q + 8;
            (lat.group)(tmp, s * sub / 8 + q, &x[r.clone()], &w[r.clone()], &mut out);
            e += x[r.clone()]
                .iter()
                .zip(&w[r])
                .zip(&out)
                .map(|((a, wi), b)| wi * (a - b) * (a - b))
                .sum::<f32>();
        }
        if e < best {
            (best, best_code) = (e, Some(code));
        }
    }
    if let Some(code) = best_code {
        (lat.set_scale)(y, s, code);
    }
}

/// GPTQ with activation order: columns are quantized by decreasing H_jj (the most active input
/// channels first, while the most freedom is left to compensate them). The format's scales are
/// fitted once, importance-weighted, on the original weights ("static groups"), since the
/// format's blocks are contiguous in the original column order.
pub fn gptq_matrix_act_order(
    w: &[f32],
    cols: usize,
    h: &[f64],
    damp: f64,
    qw: &[f32],
    ty: GgmlType,
) -> Result<Vec<u8>> {
    gptq_act_order_with(
        w,
        cols,
        h,
        damp,
        qw,
        codec(ty).expect("a type Frugal writes"),
    )
}

/// [`gptq_matrix_act_order`] for any block layout with level access (also Frugal's own int4
/// groups, which are not ggml types).
pub fn gptq_act_order_with(
    w: &[f32],
    cols: usize,
    h: &[f64],
    damp: f64,
    qw: &[f32],
    c: &Codec,
) -> Result<Vec<u8>> {
    let (perm, u) = act_order_plan(h, cols, damp, &Placement::Memory)?;
    Ok(act_order_rows(w, cols, &perm, &u, qw, c))
}

/// What activation-order GPTQ derives from H alone, shared by every weight (and every row
/// range) that reads the same input: the column order (decreasing H_jj, ties by index) and
/// the upper Cholesky factor of the permuted H⁻¹.
pub fn act_order_plan(
    h: &[f64],
    cols: usize,
    damp: f64,
    placement: &Placement,
) -> Result<(Vec<usize>, Scratch<f32>)> {
    let mut perm: Vec<usize> = (0..cols).collect();
    perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
    // H permuted is read through the permutation (at 7B scale a copy would be 0.97 GB).
    let (u, _) = super::calibration::inverse_cholesky_upper_of(
        cols,
        damp,
        &|i, j| h[perm[i] * cols + perm[j]],
        placement,
    )?;
    Ok((perm, u))
}

/// Rows of a weight quantized together by [`act_order_rows`]: each row of U (up to 11,008
/// values × 4 bytes at 7B) is read once for the tile instead of once per row, so the pass over
/// the factor — larger than the caches from about 2,000 columns — reads memory a tile at a time.
const ROW_TILE: usize = 8;

/// Activation-order GPTQ of the rows `w` with a plan from [`act_order_plan`]. Rows are
/// independent: any row range gives the bytes the whole matrix has for it. Rows go through the
/// factor [`ROW_TILE`] at a time, each with exactly the operations, in the same order, of
/// `act_order_rows_reference` (one row at a time), so the bytes are the same.
pub fn act_order_rows(
    w: &[f32],
    cols: usize,
    perm: &[usize],
    u: &[f32],
    qw: &[f32],
    c: &Codec,
) -> Vec<u8> {
    act_order_rows_in_tiles(w, cols, perm, u, qw, c, ROW_TILE)
}

/// [`act_order_rows`] with `tile` rows at a time (the same bytes for any `tile` ≥ 1; the
/// benchmark `examples/gptq_rows.rs` times the choice).
pub fn act_order_rows_in_tiles(
    w: &[f32],
    cols: usize,
    perm: &[usize],
    u: &[f32],
    qw: &[f32],
    c: &Codec,
    tile: usize,
) -> Vec<u8> {
    let tile = tile.max(1);
    let row_bytes = cols / c.block * c.block_bytes;
    let mut out = vec![0u8; w.len() / cols * row_bytes];
    out.par_chunks_mut(row_bytes * tile)
        .zip(w.par_chunks(cols * tile))
        .for_each(|(ob, wr)| {
            let mut rows: Vec<RowState> = ob
                .chunks_mut(row_bytes)
                .zip(wr.chunks(cols))
                .map(|(ob, wr)| RowState::new(ob, wr, perm, qw, c))
                .collect();
            let mut e = vec![0f32; rows.len()];
            for k in 0..cols {
                let uk = &u[k * cols + k + 1..(k + 1) * cols];
                for (r, e) in rows.iter_mut().zip(&mut e) {
                    *e = r.round(k, perm[k], u[k * cols + k], c);
                }
                for (r, &e) in rows.iter_mut().zip(&e) {
                    if e != 0.0 {
                        for (xv, &uv) in r.x[k + 1..].iter_mut().zip(uk) {
                            *xv -= e * uv;
                        }
                    }
                }
            }
            for (r, ob) in rows.into_iter().zip(ob.chunks_mut(row_bytes)) {
                r.finish(ob, c);
            }
        });
    out
}

/// One row in [`act_order_rows`]: its format scales (fitted once on the original row), its
/// levels, and the row in permuted order as the rounding errors update it.
struct RowState {
    scales: Vec<(f32, f32)>,
    levels: Vec<u8>,
    x: Vec<f32>,
}

impl RowState {
    fn new(ob: &mut [u8], wr: &[f32], perm: &[usize], qw: &[f32], c: &Codec) -> RowState {
        let acc = c.levels.expect("a quantized format");
        let cols = wr.len();
        let nb = cols / c.block;
        let nsub = c.block / c.sub;
        (c.row)(wr, Some(qw), ob);
        let mut scales = vec![(0f32, 0f32); nb * nsub];
        let mut levels = vec![0u8; cols];
        for b in 0..nb {
            let y = &ob[b * c.block_bytes..(b + 1) * c.block_bytes];
            (acc.scales)(y, &mut scales[b * nsub..(b + 1) * nsub]);
            (acc.get)(y, &mut levels[b * c.block..(b + 1) * c.block]);
        }
        RowState {
            scales,
            levels,
            x: perm.iter().map(|&j| wr[j]).collect(),
        }
    }

    /// Rounds the value at permuted position `k` (column `j`) to its block's grid; returns the
    /// error divided by the factor's diagonal `ukk`, by which the rest of the row is updated.
    fn round(&mut self, k: usize, j: usize, ukk: f32, c: &Codec) -> f32 {
        let (d, bias) = self.scales[j / c.sub];
        let v = self.x[k];
        let q = if d != 0.0 {
            let (l, q) = c.round_level(v, d, bias);
            self.levels[j] = l;
            q
        } else {
            bias
        };
        (v - q) / ukk
    }

    fn finish(self, ob: &mut [u8], c: &Codec) {
        let acc = c.levels.expect("a quantized format");
        for (b, lv) in self.levels.chunks(c.block).enumerate() {
            (acc.set)(&mut ob[b * c.block_bytes..(b + 1) * c.block_bytes], lv);
        }
    }
}

/// What the block-wise methods run, on the quantized model's own activations.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockwiseOptions {
    /// AWQ scales ([`super::awq`]) searched and folded exactly before rounding.
    pub awq: bool,
    /// GPTQ rounding; without it, importance-weighted rounding to nearest.
    pub gptq: Option<GptqOptions>,
}

impl BlockwiseOptions {
    /// The method's name in reports.
    pub fn name(&self) -> &'static str {
        match (self.awq, self.gptq.is_some()) {
            (true, true) => "awq+gptq",
            (true, false) => "awq",
            (false, true) => "gptq",
            (false, false) => "rtn+imatrix",
        }
    }
}

/// One tensor the block-wise pass produced: its bytes and, for quantized weights, the error
/// against the weight it rounded (which, after AWQ, is the scaled weight, not the file's).
#[derive(Debug, Clone)]
pub struct Produced {
    pub ty: GgmlType,
    pub bytes: Vec<u8>,
    /// Relative RMS error and importance-weighted relative error.
    pub errors: Option<(f64, Option<f64>)>,
}

impl Produced {
    /// The tensor as bytes, for another rank.
    pub(crate) fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.bytes.len() + 32);
        v.extend_from_slice(&self.ty.0.to_le_bytes());
        let (rel, weighted) = self.errors.unwrap_or((f64::NAN, None));
        v.push(u8::from(self.errors.is_some()) | (u8::from(weighted.is_some()) << 1));
        v.extend_from_slice(&rel.to_le_bytes());
        v.extend_from_slice(&weighted.unwrap_or(f64::NAN).to_le_bytes());
        v.extend_from_slice(&self.bytes);
        v
    }

    /// The inverse of [`Produced::to_wire`], checked (length, known type).
    pub(crate) fn from_wire(b: &[u8]) -> Result<Produced> {
        let bad = |why: &str| frugal_dist::Error::Protocol(format!("tensor message: {why}"));
        if b.len() < 21 {
            return Err(bad("too short").into());
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let id = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let ty = Some(GgmlType(id))
            .filter(|t| t.info().is_some())
            .ok_or_else(|| bad("unknown tensor type"))?;
        let flags = b[4];
        let (rel, weighted) = (f64::from_bits(u64_at(5)), f64::from_bits(u64_at(13)));
        Ok(Produced {
            ty,
            bytes: b[21..].to_vec(),
            errors: (flags & 1 != 0).then_some((rel, (flags & 2 != 0).then_some(weighted))),
        })
    }
}

/// What [`blockwise_model`] produced: quantized bytes per tensor (and the norm gains AWQ
/// changed, as F32), the importance matrix of the quantized model's own activations (for the
/// tensors left to round-to-nearest), and the AWQ choices.
pub struct BlockwiseResult {
    /// Every tensor produced (spilled to a file in the folder given, not held in memory).
    pub tensors: super::spill::ProducedStore,
    pub imatrix: Imatrix,
    /// Per AWQ group (first weight's name): α and the relative reduction of the group's
    /// rounding loss.
    pub awq: Vec<AwqChoice>,
    /// Seconds the pass ran before this process resumed it (0 for a pass run whole), so a
    /// report's time is the whole pass's.
    pub resumed_seconds: f64,
}

/// Calibrated quantization of every decoder block's linear layers, block after block, each
/// block's statistics taken on the activations of the blocks already quantized: AWQ scales
/// (optional), then GPTQ or importance-weighted rounding, with the types in `choices` (one per
/// GGUF tensor, as [`super::final_types`] gives). The output layer is left to the caller (it is
/// quantized to nearest with the importance matrix returned here). The tensors produced are
/// kept in an unnamed temporary file in `spill_dir` until the caller writes them; the Gram
/// sums and factorizations are held where `placement` says.
#[allow(clippy::too_many_arguments)]
pub fn blockwise_model(
    f: &GgufFile,
    choices: &[Option<Choice>],
    calib: &Calibration,
    opts: BlockwiseOptions,
    spill_dir: &std::path::Path,
    placement: &Placement,
    checkpoint: Option<&super::checkpoint::Checkpoint>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BlockwiseResult> {
    use super::checkpoint::{self as ckpt, Checkpoint, PassKey};
    use super::spill::{ProducedStore, StoreIndex};
    use std::cell::RefCell;
    /// What a checkpoint keeps of this pass beside the states: the tensors produced (their
    /// index; the bytes are in the checkpoint's tensor file) and AWQ's choices.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Record {
        store: StoreIndex,
        awq: Vec<AwqChoice>,
        /// Seconds the pass had run when the checkpoint was saved (all runs of it).
        #[serde(default)]
        seconds: f64,
    }
    let started = std::time::Instant::now();
    // A checkpoint is this run's only if the model, the tokens, the settings and every
    // tensor's type are the same.
    let types: Vec<Option<u32>> = choices.iter().map(|c| c.map(|c| c.ty.0)).collect();
    let checkpoint = checkpoint
        .map(|c| -> Result<_> {
            let key = PassKey::new(f.path(), &calib.chunks, format!("{opts:?} {types:?}"))?;
            Ok((c, key))
        })
        .transpose()?;
    let (store, awq0, resume, resumed_seconds) = match &checkpoint {
        Some((c, key)) => {
            let (_, tensors_file) = Checkpoint::files(&c.output);
            let saved = if c.resume {
                ckpt::load::<Record>(&c.output, key)?
            } else {
                c.remove()?;
                None
            };
            match saved {
                Some((resume, record)) => (
                    ProducedStore::reopen(&tensors_file, &record.store)?,
                    record.awq,
                    Some(resume),
                    record.seconds,
                ),
                None => (
                    ProducedStore::create_at(&tensors_file)?,
                    Vec::new(),
                    None,
                    0.0,
                ),
            }
        }
        None => (ProducedStore::new_in(spill_dir), Vec::new(), None, 0.0),
    };
    let tensors = RefCell::new(store);
    let awq_choices = RefCell::new(awq0);
    let mut after_block = |done: usize,
                           states: &[candle_core::Tensor],
                           imatrix: &HashMap<String, Vec<f32>>|
     -> Result<()> {
        let Some((c, key)) = &checkpoint else {
            return Ok(());
        };
        let record = Record {
            store: tensors.borrow().checkpoint_index()?,
            awq: awq_choices.borrow().clone(),
            seconds: resumed_seconds + started.elapsed().as_secs_f64(),
        };
        ckpt::save(&c.output, key, done, states, imatrix, &record)
    };
    let type_of: HashMap<&str, GgmlType> = f
        .header
        .tensors
        .iter()
        .zip(choices)
        .filter_map(|(t, c)| c.map(|c| (t.name.as_str(), c.ty)))
        .collect();
    let mut treat = |model: &mut Llama, i: usize, st: &mut BlockStats| -> Result<()> {
        let cfg = model.config.clone();
        // The model's layers: a fused weight's parts (Phi-3) are rounded as layers of their
        // own — rows are independent and share the input's H — and re-joined in the file's row
        // order below.
        let names = layer_names(model, i);
        let dims = st.dims;
        let n_tok = st.n_tokens;
        let grams = &mut st.grams;
        let abs = &st.abs;
        // 2. AWQ: scales searched on the full-precision block, folded exactly.
        if opts.awq {
            for g in 0..4 {
                let n = dims[g];
                let ws: Vec<(Vec<f32>, GgmlType)> = names[g]
                    .iter()
                    .filter_map(|name| type_of.get(stored_name(name)).map(|&ty| (name, ty)))
                    .map(|(name, ty)| -> Result<_> {
                        let w = linear_named(model, name).weight_f32()?;
                        Ok((w.flatten_all()?.to_vec1()?, ty))
                    })
                    .collect::<Result<_>>()?;
                if ws.is_empty() {
                    continue;
                }
                let members: Vec<super::awq::Member> = ws
                    .iter()
                    .map(|(w, ty)| super::awq::Member { w, ty: *ty })
                    .collect();
                let mean_abs: Vec<f32> = abs[g].iter().map(|v| (v / n_tok as f64) as f32).collect();
                let tie: Vec<usize> = if g == 1 {
                    super::awq::tie_gqa(cfg.n_head, cfg.n_head_kv, cfg.head_dim())
                } else {
                    (0..n).collect()
                };
                let best = super::awq::search(&members, n, &grams[g], n_tok, &mean_abs, &tie)?;
                awq_choices.borrow_mut().push(AwqChoice {
                    group: names[g][0].clone(),
                    alpha: best.alpha,
                    loss_ratio: if best.loss_plain > 0.0 {
                        best.loss / best.loss_plain
                    } else {
                        1.0
                    },
                });
                if best.alpha == 0.0 {
                    continue;
                }
                let s = best.s;
                fold_scales(model, i, g, &s)?;
                // The input's statistics in the scaled space: x/s.
                let gm = &mut grams[g];
                for a in 0..n {
                    for b in 0..n {
                        gm[a * n + b] /= f64::from(s[a]) * f64::from(s[b]);
                    }
                }
            }
            // The biases scaled with their rows (Qwen2's value projection).
            for name in [&names[0][2], &names[2][1]] {
                let lin = linear_named(model, name);
                let Some(b) = lin.bias() else { continue };
                let v: Vec<f32> = b.to_vec1()?;
                tensors.borrow_mut().insert(
                    format!("{}.bias", name.strip_suffix(".weight").unwrap_or(name)),
                    Produced {
                        ty: GgmlType::F32,
                        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        errors: None,
                    },
                )?;
            }
            for (k, norm) in ["attn_norm", "ffn_norm"].iter().enumerate() {
                let b = &model.blocks[i];
                let t = if k == 0 { &b.attn_norm } else { &b.ffn_norm };
                let v: Vec<f32> = t.to_vec1()?;
                tensors.borrow_mut().insert(
                    format!("blk.{i}.{norm}.weight"),
                    Produced {
                        ty: GgmlType::F32,
                        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        errors: None,
                    },
                )?;
            }
        }
        // 3. Round each weight against its input's H. Rows are independent, so the work is
        // shared out as row ranges: a weight costing more than a rank's fair share is cut into
        // as many ranges as needed, the ranges go largest first to the least loaded rank, and
        // every rank takes every range back, as one process would have computed it.
        let comm = frugal_dist::world();
        let jobs: Vec<(usize, &String, GgmlType)> = names
            .iter()
            .enumerate()
            .flat_map(|(g, group)| group.iter().map(move |name| (g, name)))
            .filter_map(|(g, name)| type_of.get(stored_name(name)).map(|&ty| (g, name, ty)))
            .collect();
        let per_row = |g: usize| (dims[g] * dims[g]) as f64;
        let rows_of = |model: &mut Llama, name: &str| linear_named(model, name).n_out();
        let total: f64 = jobs
            .iter()
            .map(|&(g, name, _)| rows_of(model, name) as f64 * per_row(g))
            .sum();
        let fair = total / comm.size() as f64;
        let mut pieces: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (j, &(g, name, _)) in jobs.iter().enumerate() {
            let rows = rows_of(model, name);
            let cost = rows as f64 * per_row(g);
            let p = if comm.size() == 1 {
                1
            } else {
                ((cost / fair).ceil() as usize).clamp(1, comm.size().min(rows.max(1)))
            };
            pieces.extend((0..p).map(|k| (j, frugal_dist::shard(rows, k, p))));
        }
        let costs: Vec<f64> = pieces
            .iter()
            .map(|(j, r)| r.len() as f64 * per_row(jobs[*j].0))
            .collect();
        let owner = frugal_dist::assign_by_cost(&costs, comm.size());
        // Per input group: the columns no calibration token reached, the importance row, and
        // (GPTQ) the plan derived from H, computed once where needed.
        let dead: Vec<Vec<bool>> = (0..4)
            .map(|g| {
                (0..dims[g])
                    .map(|j| grams[g][j * dims[g] + j] <= 0.0)
                    .collect()
            })
            .collect();
        let qws: Vec<Vec<f32>> = (0..4)
            .map(|g| {
                let n = dims[g];
                (0..n)
                    .map(|j| (grams[g][j * n + j] / n_tok as f64) as f32)
                    .collect()
            })
            .collect();
        let rounds = |ty: GgmlType| codec(ty).is_some_and(|c| c.gptq_rounds());
        // A weight to round: its columns no calibration token reached are zeroed (GPTQ's
        // convention: nothing measured them). A float type (a budget's or an override's
        // choice) is not rounded, so it is written as it is, every column kept.
        let weight = |model: &mut Llama, g: usize, name: &str, ty: GgmlType| -> Result<Vec<f32>> {
            let n = dims[g];
            let mut w: Vec<f32> = linear_named(model, name)
                .weight_f32()?
                .flatten_all()?
                .to_vec1()?;
            if rounds(ty) {
                for (j, _) in dead[g].iter().enumerate().filter(|(_, &d)| d) {
                    w.iter_mut().skip(j).step_by(n).for_each(|v| *v = 0.0);
                }
            }
            Ok(w)
        };
        let mut plans: HashMap<(usize, bool), (Vec<usize>, Scratch<f32>)> = HashMap::new();
        let mut mine: Vec<(usize, Vec<u8>)> = Vec::new();
        for (k, (j, rows)) in pieces.iter().enumerate() {
            if owner[k] != comm.rank() {
                continue;
            }
            let (g, name, ty) = jobs[*j];
            let n = dims[g];
            let w = weight(model, g, name, ty)?;
            let w = &w[rows.start * n..rows.end * n];
            let qw = &qws[g];
            let bytes = match opts.gptq.filter(|_| rounds(ty)) {
                Some(o) => {
                    // The lattice types round eight columns at a time in the original order.
                    let lattice = codec(ty).is_some_and(|c| c.regroup.is_some());
                    let act_order = o.act_order && !lattice;
                    // Pieces come in input order: an earlier input's plan is not needed again.
                    plans.retain(|&(k, _), _| k == g);
                    let (perm, u) = match plans.entry((g, act_order)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => e.insert(if act_order {
                            act_order_plan(&grams[g], n, o.damp, placement)?
                        } else {
                            let gm = &grams[g];
                            let h = |i: usize, j: usize| gm[i * n + j];
                            (
                                Vec::new(),
                                inverse_cholesky_upper_of(n, o.damp, &h, placement)?.0,
                            )
                        }),
                    };
                    if lattice {
                        gptq_lattice(w, n, u, qw, ty)
                    } else if act_order {
                        let c = codec(ty).expect("a type Frugal writes");
                        act_order_rows(w, n, perm, u, qw, c)
                    } else {
                        gptq_matrix(w, n, u, qw, ty)
                    }
                }
                // AWQ alone rounds with the importance weights; a float type is converted.
                None => super::quantize_matrix(w, n, ty, Some(qw)),
            };
            mine.push((k, bytes));
        }
        let got = frugal_dist::exchange_owned(comm, pieces.len(), mine, false)?
            .expect("every rank receives every range");
        let mut got = got.into_iter();
        // A fused weight's parts, joined in row order.
        let mut fused: Vec<Joined> = Vec::new();
        for (j, &(g, name, ty)) in jobs.iter().enumerate() {
            let n = dims[g];
            let row_bytes = ty
                .bytes_for(n as u64)
                .ok_or_else(|| Error::BadOptions(format!("{name}: {ty} cannot tile {n} columns")))?
                as usize;
            let mut bytes = Vec::new();
            for (_, rows) in pieces.iter().filter(|(pj, _)| *pj == j) {
                let b = got.next().expect("one result per row range");
                if b.len() != rows.len() * row_bytes {
                    return Err(frugal_dist::Error::Protocol(format!(
                        "{name}: {} bytes for {} rows of {row_bytes}",
                        b.len(),
                        rows.len()
                    ))
                    .into());
                }
                bytes.extend_from_slice(&b);
            }
            // Decoded once: for the error and for the next block's forward pass.
            let w = weight(model, g, name, ty)?;
            let back = super::decode(&bytes, ty, w.len())?;
            let stored = stored_name(name);
            if stored != name.as_str() {
                match fused.iter_mut().find(|p| p.name == stored) {
                    Some(p) => {
                        p.bytes.extend_from_slice(&bytes);
                        p.w.extend_from_slice(&w);
                        p.back.extend_from_slice(&back);
                    }
                    None => fused.push(Joined {
                        name: stored.to_string(),
                        bytes,
                        w,
                        back: back.clone(),
                        g,
                        ty,
                    }),
                }
                dense(linear_named(model, name), back)?;
                continue;
            }
            let errors = super::error_sums(&w, &back, n, Some(&qws[g])).finish(true);
            dense(linear_named(model, name), back)?;
            tensors.borrow_mut().insert(
                name.clone(),
                Produced {
                    ty,
                    bytes,
                    errors: Some(errors),
                },
            )?;
        }
        for p in fused {
            let errors = super::error_sums(&p.w, &p.back, dims[p.g], Some(&qws[p.g])).finish(true);
            tensors.borrow_mut().insert(
                p.name,
                Produced {
                    ty: p.ty,
                    bytes: p.bytes,
                    errors: Some(errors),
                },
            )?;
        }
        Ok(())
    };
    let imatrix = sequential(
        f,
        calib,
        opts.awq,
        placement,
        &mut treat,
        resume,
        &mut after_block,
        progress,
    )?;
    Ok(BlockwiseResult {
        tensors: tensors.into_inner(),
        imatrix,
        awq: awq_choices.into_inner(),
        resumed_seconds,
    })
}

/// A fused weight's parts (Phi-3) joined in the file's row order: their bytes, the weights
/// before and after rounding, and their input group and type.
struct Joined {
    name: String,
    bytes: Vec<u8>,
    w: Vec<f32>,
    back: Vec<f32>,
    g: usize,
    ty: GgmlType,
}

/// [`act_order_rows`] one row at a time: the reference the tiled pass is tested against.
#[cfg(test)]
fn act_order_rows_reference(
    w: &[f32],
    cols: usize,
    perm: &[usize],
    u: &[f32],
    qw: &[f32],
    c: &Codec,
) -> Vec<u8> {
    let acc = c.levels.expect("a quantized format");
    let nb = cols / c.block;
    let row_bytes = nb * c.block_bytes;
    let mut out = vec![0u8; w.len() / cols * row_bytes];
    let nsub = c.block / c.sub;
    out.par_chunks_mut(row_bytes)
        .zip(w.par_chunks(cols))
        .for_each(|(ob, wr)| {
            (c.row)(wr, Some(qw), ob);
            let mut scales = vec![(0f32, 0f32); nb * nsub];
            let mut levels = vec![0u8; cols];
            for b in 0..nb {
                let y = &ob[b * c.block_bytes..(b + 1) * c.block_bytes];
                (acc.scales)(y, &mut scales[b * nsub..(b + 1) * nsub]);
                (acc.get)(y, &mut levels[b * c.block..(b + 1) * c.block]);
            }
            // The row in permuted order.
            let mut x: Vec<f32> = perm.iter().map(|&j| wr[j]).collect();
            for k in 0..cols {
                let j = perm[k];
                let (d, bias) = scales[j / c.sub];
                let v = x[k];
                let q = if d != 0.0 {
                    let (l, q) = c.round_level(v, d, bias);
                    levels[j] = l;
                    q
                } else {
                    bias
                };
                let e = (v - q) / u[k * cols + k];
                if e != 0.0 {
                    for (xv, &uv) in x[k + 1..]
                        .iter_mut()
                        .zip(&u[k * cols + k + 1..(k + 1) * cols])
                    {
                        *xv -= e * uv;
                    }
                }
            }
            for b in 0..nb {
                (acc.set)(
                    &mut ob[b * c.block_bytes..(b + 1) * c.block_bytes],
                    &levels[b * c.block..(b + 1) * c.block],
                );
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::calibration::inverse_cholesky_upper;
    use crate::testutil::{gram, output_err};
    use frugal_formats::rng::SplitMix64;

    /// A rounding problem: correlated inputs `x` `[n, cols]`, their Gram matrix, a random
    /// `[rows, cols]` weight and the importance row (mean x² per column).
    #[allow(clippy::type_complexity)]
    fn problem(
        cols: usize,
        rows: usize,
        n: usize,
        seeds: (u64, u64),
    ) -> (Vec<f32>, Vec<f64>, Vec<f32>, Vec<f32>) {
        let x = inputs(n, cols, seeds.0);
        let h = gram(&x, cols);
        let mut r = SplitMix64(seeds.1);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| (r.next_f64() as f32 - 0.5) * 0.2)
            .collect();
        let qw: Vec<f32> = (0..cols)
            .map(|j| (h[j * cols + j] / n as f64) as f32)
            .collect();
        (x, h, w, qw)
    }

    /// Inputs with correlated columns (a shared factor), as real activations have.
    fn inputs(n: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        let mut g = || (r.next_f64() as f32 - 0.5) * 3.46;
        let mut x = vec![0f32; n * cols];
        for t in 0..n {
            let f = [g(), g(), g()];
            for j in 0..cols {
                x[t * cols + j] = f[j % 3] * (1.0 + (j % 7) as f32 * 0.3) + 0.3 * g();
            }
        }
        x
    }

    /// The textbook OBS/GPTQ recurrence with an explicit inverse and its rank-one downdates
    /// (f64), the direct least-squares statement GPTQ's Cholesky form must reproduce: after
    /// fixing column j, the remaining columns move to minimise the output error given it.
    fn reference_gptq(
        w: &[f32],
        cols: usize,
        h: &[f64],
        damp: f64,
        c: &Codec,
        qw: &[f32],
    ) -> Vec<f32> {
        let n = cols;
        let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
        let hm = faer::Mat::<f64>::from_fn(n, n, |i, j| {
            h[i * n + j] + if i == j { damp * mean } else { 0.0 }
        });
        use faer::linalg::solvers::DenseSolveCore;
        let inv0 = hm.llt(faer::Side::Lower).unwrap().inverse();
        let rows = w.len() / cols;
        let mut out = vec![0f32; w.len()];
        for r in 0..rows {
            let mut hinv: Vec<f64> = (0..n * n).map(|k| inv0[(k / n, k % n)]).collect();
            let mut wr: Vec<f64> = w[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let mut scales = vec![(0f32, 0f32); c.block / c.sub];
            for j in 0..n {
                if j % c.block == 0 {
                    let blk: Vec<f32> = wr[j..j + c.block].iter().map(|&v| v as f32).collect();
                    let mut y = vec![0u8; c.block_bytes];
                    (c.row)(&blk, Some(&qw[j..j + c.block]), &mut y);
                    (c.levels.unwrap().scales)(&y, &mut scales);
                }
                let (d, b) = scales[(j % c.block) / c.sub];
                let x = wr[j] as f32;
                let q = f64::from(c.round_level(x, d, b).1);
                out[r * cols + j] = q as f32;
                let e = (wr[j] - q) / hinv[j * n + j];
                for k in j + 1..n {
                    wr[k] -= e * hinv[j * n + k];
                }
                // Downdate: remove column j from the inverse.
                let hjj = hinv[j * n + j];
                let colj: Vec<f64> = (0..n).map(|i| hinv[i * n + j]).collect();
                for a in 0..n {
                    for bb in 0..n {
                        hinv[a * n + bb] -= colj[a] * colj[bb] / hjj;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn gptq_matches_the_explicit_least_squares_recurrence_and_beats_rounding() {
        let (cols, rows, n) = (64, 6, 400);
        let (x, h, w, qw) = problem(cols, rows, n, (3, 11));
        for ty in [GgmlType::Q4_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            let c = codec(ty).unwrap();
            let (u, dead) = inverse_cholesky_upper(&h, cols, 0.01).unwrap();
            assert!(dead.iter().all(|d| !d));
            let bytes = gptq_matrix(&w, cols, &u, &qw, ty);
            let ours = crate::quant::decode(&bytes, ty, w.len()).unwrap();
            let reference = reference_gptq(&w, cols, &h, 0.01, c, &qw);
            let differ = ours
                .iter()
                .zip(&reference)
                .filter(|(a, b)| (*a - *b).abs() > 1e-6)
                .count();
            // Float rounding may flip a rare tie; the two forms agree elsewhere.
            assert!(
                differ * 50 <= ours.len(),
                "{ty}: {differ} of {} values differ",
                ours.len()
            );
            let rtn = crate::quant::decode(
                &crate::quant::quantize_matrix(&w, cols, ty, Some(&qw)),
                ty,
                w.len(),
            )
            .unwrap();
            let (eg, er) = (
                output_err(&x, &w, &ours, cols),
                output_err(&x, &w, &rtn, cols),
            );
            assert!(
                eg < 0.8 * er,
                "{ty}: GPTQ output error {eg} vs rounding {er}"
            );
        }
    }

    /// What distributed GPTQ relies on: any row range, rounded alone with the shared plan,
    /// gives exactly the bytes the whole matrix has for those rows (both GPTQ variants).
    #[test]
    fn row_ranges_round_to_the_whole_matrix_bytes() {
        let (cols, rows, n) = (64, 13, 300);
        let (_, h, w, qw) = problem(cols, rows, n, (5, 21));
        let ty = GgmlType::Q4_1;
        let c = codec(ty).unwrap();
        let row_bytes = ty.bytes_for(cols as u64).unwrap() as usize;
        let whole = gptq_matrix_act_order(&w, cols, &h, 0.01, &qw, ty).unwrap();
        let (perm, u) = act_order_plan(&h, cols, 0.01, &Placement::Memory).unwrap();
        let u_plain = inverse_cholesky_upper(&h, cols, 0.01).unwrap().0;
        let whole_plain = gptq_matrix(&w, cols, &u_plain, &qw, ty);
        for p in [2usize, 3, 5] {
            let mut cat = Vec::new();
            let mut cat_plain = Vec::new();
            for k in 0..p {
                let rr = frugal_dist::shard(rows, k, p);
                let part = &w[rr.start * cols..rr.end * cols];
                cat.extend(act_order_rows(part, cols, &perm, &u, &qw, c));
                cat_plain.extend(gptq_matrix(part, cols, &u_plain, &qw, ty));
            }
            assert_eq!(cat.len(), rows * row_bytes);
            assert!(cat == whole, "act order, {p} ranges");
            assert!(cat_plain == whole_plain, "plain GPTQ, {p} ranges");
        }
    }

    /// The tiled pass writes the one-row-at-a-time reference's bytes: rows a tile's multiple,
    /// and not (a partial last tile), block and k-quant formats.
    #[test]
    fn act_order_rows_in_tiles_are_the_reference_bit_for_bit() {
        for (rows, ty) in [
            (2 * ROW_TILE, GgmlType::Q4_0),
            (2 * ROW_TILE + 3, GgmlType::Q4_K),
            (ROW_TILE - 1, GgmlType::Q6_K),
            (ROW_TILE + 5, GgmlType::Q5_1),
        ] {
            let cols = 256;
            let (_, h, w, qw) = problem(cols, rows, 600, (21, rows as u64));
            let (perm, u) = act_order_plan(&h, cols, 0.01, &Placement::Memory).unwrap();
            let c = codec(ty).unwrap();
            let one = act_order_rows_reference(&w, cols, &perm, &u, &qw, c);
            for tile in [ROW_TILE, 1, 3] {
                let tiled = act_order_rows_in_tiles(&w, cols, &perm, &u, &qw, c, tile);
                assert!(tiled == one, "{ty}, {rows} rows, tiles of {tile}");
            }
        }
    }

    #[test]
    fn act_order_gptq_beats_rounding_and_reduces_to_it_without_correlation() {
        let (cols, rows, n) = (64, 6, 400);
        let (x, h, w, qw) = problem(cols, rows, n, (9, 13));
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1] {
            let bytes = gptq_matrix_act_order(&w, cols, &h, 0.01, &qw, ty).unwrap();
            let ours = crate::quant::decode(&bytes, ty, w.len()).unwrap();
            let rtn = crate::quant::decode(
                &crate::quant::quantize_matrix(&w, cols, ty, Some(&qw)),
                ty,
                w.len(),
            )
            .unwrap();
            let (eg, er) = (
                output_err(&x, &w, &ours, cols),
                output_err(&x, &w, &rtn, cols),
            );
            assert!(
                eg < 0.8 * er,
                "{ty}: act-order GPTQ output error {eg} vs rounding {er}"
            );
        }
        // Diagonal H: nothing to compensate; static scales are the rounding's own scales.
        let cols = 256;
        let hd: Vec<f64> = (0..cols * cols)
            .map(|k| {
                if k / cols == k % cols {
                    1.0 + (k % 7) as f64
                } else {
                    0.0
                }
            })
            .collect();
        let mut r = SplitMix64(14);
        let w: Vec<f32> = (0..3 * cols).map(|_| r.next_f64() as f32 - 0.5).collect();
        let qw: Vec<f32> = (0..cols).map(|j| hd[j * cols + j] as f32).collect();
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let g = gptq_matrix_act_order(&w, cols, &hd, 0.0, &qw, ty).unwrap();
            assert_eq!(
                g,
                crate::quant::quantize_matrix(&w, cols, ty, Some(&qw)),
                "{ty}"
            );
        }
    }

    #[test]
    fn with_uncorrelated_inputs_gptq_is_weighted_rounding() {
        // H diagonal: no error to compensate, so GPTQ gives the importance-weighted RTN bytes.
        let cols = 256;
        let h: Vec<f64> = (0..cols * cols)
            .map(|k| {
                if k / cols == k % cols {
                    1.0 + (k % 5) as f64
                } else {
                    0.0
                }
            })
            .collect();
        let mut r = SplitMix64(5);
        let w: Vec<f32> = (0..4 * cols).map(|_| r.next_f64() as f32 - 0.5).collect();
        let qw: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q3_K] {
            let (u, _) = inverse_cholesky_upper(&h, cols, 0.0).unwrap();
            let g = gptq_matrix(&w, cols, &u, &qw, ty);
            let rtn = crate::quant::quantize_matrix(&w, cols, ty, Some(&qw));
            assert_eq!(g, rtn, "{ty}");
        }
    }

    const LATTICE_TYPES: [GgmlType; 7] = [
        GgmlType::IQ3_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ2_S,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_XXS,
        GgmlType::IQ1_M,
        GgmlType::IQ1_S,
    ];

    /// A sub-block's scale code is written where the decoder reads it: under each code the
    /// sub-block's groups re-chosen decode to what `Regroup::group` returned, the other
    /// sub-blocks are untouched, and a larger code gives larger values.
    #[test]
    fn lattice_scale_codes_land_where_the_decoder_reads_them() {
        let cols = 256;
        let (_, _, w, qw) = problem(cols, 1, 64, (5, 6));
        for ty in LATTICE_TYPES {
            let c = codec(ty).unwrap();
            let lat = c.regroup.unwrap();
            let y0 = crate::quant::quantize_matrix(&w, cols, ty, Some(&qw));
            let d0 = crate::quant::decode(&y0, ty, cols).unwrap();
            for s in 0..c.block / c.sub {
                let r = s * c.sub..(s + 1) * c.sub;
                let mut top = [0f32; 2];
                for code in 0..lat.codes {
                    let mut y = y0.clone();
                    (lat.set_scale)(&mut y, s, code);
                    let mut out = vec![0f32; c.sub];
                    for q in 0..c.sub / 8 {
                        let at = r.start + 8 * q;
                        (lat.group)(
                            &mut y,
                            at / 8,
                            &w[at..at + 8],
                            &qw[at..at + 8],
                            &mut out[8 * q..8 * q + 8],
                        );
                    }
                    let d = crate::quant::decode(&y, ty, cols).unwrap();
                    assert_eq!(d[r.clone()], out[..], "{ty} sub-block {s} code {code}");
                    for (i, (a, b)) in d.iter().zip(&d0).enumerate() {
                        assert!(
                            r.contains(&i) || a == b,
                            "{ty} sub-block {s} code {code}: value {i} moved"
                        );
                    }
                    let m = out.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if code == 0 {
                        top[0] = m;
                    } else if code == 7 {
                        top[1] = m;
                    }
                }
                assert!(top[1] > top[0], "{ty} sub-block {s}: {top:?}");
            }
        }
    }

    /// Re-choosing a group for the values it already decodes to keeps them (the levels,
    /// points and sign bits are written where the decoder reads them), and GPTQ on a lattice
    /// type beats importance-weighted rounding on correlated inputs.
    #[test]
    fn lattice_gptq_regroups_in_place_and_beats_rounding() {
        let (cols, rows, n) = (512, 8, 600);
        let (x, h, w, qw) = problem(cols, rows, n, (21, 22));
        for ty in LATTICE_TYPES {
            let c = codec(ty).unwrap();
            let regroup = c.regroup.unwrap().group;
            let rtn_bytes = crate::quant::quantize_matrix(&w, cols, ty, Some(&qw));
            let rtn = crate::quant::decode(&rtn_bytes, ty, w.len()).unwrap();
            let mut again = rtn_bytes.clone();
            let mut out = [0f32; 8];
            for (b, y) in again.chunks_exact_mut(c.block_bytes).enumerate() {
                for g in 0..c.block / 8 {
                    let at = b * c.block + 8 * g;
                    regroup(
                        y,
                        g,
                        &rtn[at..at + 8],
                        &qw[at % cols..at % cols + 8],
                        &mut out,
                    );
                    assert_eq!(out, rtn[at..at + 8], "{ty} block {b} group {g}");
                }
            }
            assert_eq!(
                crate::quant::decode(&again, ty, w.len()).unwrap(),
                rtn,
                "{ty}: regrouped bytes decode to other values"
            );
            let (u, _) = inverse_cholesky_upper(&h, cols, 0.01).unwrap();
            let ours =
                crate::quant::decode(&gptq_lattice(&w, cols, &u, &qw, ty), ty, w.len()).unwrap();
            let (eg, er) = (
                output_err(&x, &w, &ours, cols),
                output_err(&x, &w, &rtn, cols),
            );
            eprintln!("{ty}: lattice GPTQ output error {eg:.4e}, rounding {er:.4e}");
            assert!(
                eg < 0.8 * er,
                "{ty}: lattice GPTQ output error {eg} vs rounding {er}"
            );
        }
    }
}
