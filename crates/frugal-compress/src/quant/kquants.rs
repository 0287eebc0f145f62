//! ggml's k-quants (super-blocks of 256 values with 16 or 32 sub-block scales), written from the
//! algorithm in llama.cpp's `ggml/src/ggml-quants.c` so that, without an importance matrix, the
//! output is bit-identical to `quantize_row_q{2..6}_K_ref` (what `llama-quantize` runs), and with
//! one it follows the weighted search of `quantize_row_q*_K_impl`. Every float operation is done
//! in the same order as there: both sides are plain IEEE single precision without contraction.
//!
//! Layouts (little-endian, bytes):
//! - Q2_K (84): `scales[16]` (low nibble scale, high nibble min), `qs[64]` (2 bits), `d`, `dmin`;
//! - Q3_K (110): `hmask[32]` (third bit), `qs[64]` (low 2 bits), `scales[12]` (6-bit, biased
//!   by 32), `d`;
//! - Q4_K (144): `d`, `dmin`, `scales[12]` (6-bit scales and mins), `qs[128]`;
//! - Q5_K (176): `d`, `dmin`, `scales[12]`, `qh[32]` (fifth bit), `qs[128]`;
//! - Q6_K (210): `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`.
//!
//! Besides quantizing, each format exposes its sub-block scales and its packed levels so that
//! GPTQ can choose the levels itself ([`super::codec`]).

pub const QK_K: usize = 256;
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest (ties to even) through the float adder, as ggml does, for |x| < 2²².
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

#[inline]
pub(crate) fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

frugal_models::avx2_dispatch! {
    /// Symmetric levels `nmax + l`, l ∈ [−nmax, nmax−1], with a scale search weighted by `qw` (or by
    /// a function of x chosen by `rmse_type`); returns the scale.
    pub(crate) fn make_qx_quants(
        x: &[f32],
        nmax: i32,
        out: &mut [i8],
        rmse_type: i32,
        qw: Option<&[f32]>,
    ) -> f32 {
        let Some(max) = signed_max_or_clear(x, out) else {
            return 0.0;
        };
        let iscale = -(nmax as f32) / max;
        if rmse_type == 0 {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            return 1.0 / iscale;
        }
        let return_early = rmse_type < 0;
        let rmse_type = rmse_type.abs();
        // The weights, once (n ≤ 256 here: 16 or 32 values, or a super-block's 16 scales).
        let mut wbuf = [0f32; 256];
        let wts = &mut wbuf[..x.len()];
        for (i, w) in wts.iter_mut().enumerate() {
            *w = match qw {
                Some(q) => q[i],
                None => match rmse_type {
                    1 => x[i] * x[i],
                    2 => 1.0,
                    3 => x[i].abs(),
                    _ => x[i].abs().sqrt(),
                },
            };
        }
        let wts = &*wts;
        let fill = |out: &mut [i8], iscale: f32| {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
        };
        fill(out, iscale);
        let [(sumlx, suml2)] = candidate_sums(x, wts, nmax, [iscale]);
        let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
        if return_early {
            return if suml2 > 0.0 {
                0.5 * (scale + 1.0 / iscale)
            } else {
                1.0 / iscale
            };
        }
        // The 18 other candidate scales do not depend on which one wins, so their sums are computed
        // side by side (each in ggml's order, so the choice is the same), then compared in order.
        let cands: [f32; 18] = std::array::from_fn(|c| {
            let is = c as i32 - 9 + i32::from(c >= 9);
            -(nmax as f32 + 0.1 * is as f32) / max
        });
        let lo: [f32; 9] = std::array::from_fn(|c| cands[c]);
        let hi: [f32; 9] = std::array::from_fn(|c| cands[9 + c]);
        let sums = [
            candidate_sums(x, wts, nmax, lo),
            candidate_sums(x, wts, nmax, hi),
        ];
        let mut best = scale * sumlx;
        for (&iscale, &(sumlx, suml2)) in cands.iter().zip(sums.iter().flatten()) {
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                fill(out, iscale);
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        scale
    }
}

/// `(Σ w·x·l, Σ w·l²)` for each candidate inverse scale, `l = clamp(round(iscale·x), −nmax,
/// nmax−1)`: every sum in element order (as ggml adds them), the candidates side by side so the
/// loop runs at the adder's throughput instead of its latency.
#[inline(always)]
fn candidate_sums<const C: usize>(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    iscale: [f32; C],
) -> [(f32, f32); C] {
    let (mut sumlx, mut suml2) = ([0f32; C], [0f32; C]);
    for (&v, &w) in x.iter().zip(w) {
        for c in 0..C {
            let l = nearest_int(iscale[c] * v).clamp(-nmax, nmax - 1) as f32;
            sumlx[c] += w * v * l;
            suml2[c] += w * l * l;
        }
    }
    std::array::from_fn(|c| (sumlx[c], suml2[c]))
}

/// The value of largest magnitude (the first on ties) with its sign, or `None` with every level
/// cleared when the group is all (near) zero.
#[inline(always)]
fn signed_max_or_clear(x: &[f32], out: &mut [i8]) -> Option<f32> {
    let max = super::legacy::signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        out.iter_mut().for_each(|l| *l = 0);
        return None;
    }
    Some(max)
}

/// Q3_K's scale search (weights x²) with a few passes of per-element level refinement.
fn make_q3_quants(x: &[f32], nmax: i32, out: &mut [i8], do_rmse: bool) -> f32 {
    let Some(max) = signed_max_or_clear(x, out) else {
        return 0.0;
    };
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (o, &v) in out.iter_mut().zip(x) {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            *o = l as i8;
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _ in 0..5 {
            let mut changed = 0;
            for (i, &v) in x.iter().enumerate() {
                let w = v * v;
                let li = out[i] as f32;
                let mut slx = sumlx - w * v * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != out[i] as i32 {
                        slx += w * v * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            changed += 1;
                        }
                    }
                }
            }
            if changed == 0 {
                break;
            }
        }
        out.iter_mut().for_each(|l| *l += nmax as i8);
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
    1.0 / iscale
}

frugal_models::avx2_dispatch! {
    /// Levels 0..=nmax with a scale and a (non-positive) offset, searched over `nstep + 1` trial
    /// scales minimizing the weighted squared (or absolute) error. Returns (scale, −offset).
    /// Groups of up to 256 values.
    /// (ggml's `make_qkx2_quants` and `make_qkx3_quants` are this function for non-null weights.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_qkx_quants(
        x: &[f32],
        nmax: i32,
        weights: &[f32],
        out: &mut [u8],
        rmin: f32,
        rdelta: f32,
        nstep: i32,
        use_mad: bool,
    ) -> (f32, f32) {
        let n = x.len();
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            sum_w += weights[i];
            sum_x += weights[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max <= min {
            out.iter_mut().for_each(|l| *l = 0);
            return (0.0, -min);
        }
        let iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let err = |d: f32| if use_mad { d.abs() } else { d * d };
        let mut best_error = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            out[i] = l as u8;
            best_error += weights[i] * err(scale * l as f32 + min - x[i]);
        }
        if nstep < 1 {
            return (scale, -min);
        }
        // Each candidate's levels depend on `min`, which changes only when a candidate wins: the
        // candidates are evaluated LANES at a time under the current `min` (each sum in ggml's
        // order), then compared in order; after a win the rest of the batch is recomputed with the
        // new `min`. The choice is exactly the one-at-a-time loop's.
        const LANES: usize = 8;
        let mut next = 0i32;
        while next <= nstep {
            let k = ((nstep - next + 1) as usize).min(LANES);
            let iscales: [f32; LANES] = std::array::from_fn(|c| {
                let is = next + c.min(k - 1) as i32;
                (rmin + rdelta * is as f32 + nmax as f32) / (max - min)
            });
            let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
            for (&xi, &w) in x.iter().zip(weights) {
                let xm = xi - min;
                for c in 0..LANES {
                    let l = nearest_int(iscales[c] * xm).clamp(0, nmax) as f32;
                    sum_l[c] += w * l;
                    sum_l2[c] += w * l * l;
                    sum_xl[c] += w * l * xi;
                }
            }
            // The least-squares fit of each candidate's levels (`None` when degenerate).
            let mut fits = [None; LANES];
            for c in 0..k {
                let d = sum_w * sum_l2[c] - sum_l[c] * sum_l[c];
                if d > 0.0 {
                    let mut this_scale = (sum_w * sum_xl[c] - sum_x * sum_l[c]) / d;
                    let mut this_min = (sum_l2[c] * sum_x - sum_l[c] * sum_xl[c]) / d;
                    if this_min > 0.0 {
                        this_min = 0.0;
                        this_scale = sum_xl[c] / sum_l2[c];
                    }
                    fits[c] = Some((this_scale, this_min));
                }
            }
            let fit = fits.map(|f| f.unwrap_or((0.0, 0.0)));
            let mut cur = [0f32; LANES];
            for (&xi, &w) in x.iter().zip(weights) {
                let xm = xi - min;
                for c in 0..LANES {
                    let l = nearest_int(iscales[c] * xm).clamp(0, nmax) as f32;
                    cur[c] += w * err(fit[c].0 * l + fit[c].1 - xi);
                }
            }
            match (0..k).find(|&c| fits[c].is_some() && cur[c] < best_error) {
                Some(c) => {
                    for (o, &xi) in out.iter_mut().zip(x) {
                        *o = nearest_int(iscales[c] * (xi - min)).clamp(0, nmax) as u8;
                    }
                    best_error = cur[c];
                    (scale, min) = fit[c];
                    next += c as i32 + 1;
                }
                None => next += k as i32,
            }
        }
        (scale, -min)
    }
}

/// Quantizes non-negative sub-block scales to 0..=nmax against one super-block scale, weighted.
pub(super) fn make_qp_quants(x: &[f32], nmax: i32, out: &mut [u8], qw: &[f32]) -> f32 {
    let max = x.iter().fold(0f32, |m, &v| m.max(v));
    if max < GROUP_MAX_EPS {
        out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..x.len() {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let l = nearest_int(iscale * x[i]).min(nmax);
        out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..x.len() {
            let w = qw[i];
            let li = out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v)
}

/// Importance weights `qw · sqrt(σ² + x²)`, as ggml forms them from an importance matrix.
fn imatrix_weights(x: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// Packs four 2-bit planes: byte `j/4 + l` of each 128-group holds levels l, l+32, l+64, l+96.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for l in 0..32 {
            qs[j / 4 + l] = levels[j + l]
                | (levels[j + l + 32] << 2)
                | (levels[j + l + 64] << 4)
                | (levels[j + l + 96] << 6);
        }
    }
}

fn unpack_2bit(qs: &[u8], levels: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for l in 0..32 {
            let b = qs[j / 4 + l];
            for k in 0..4 {
                levels[j + l + 32 * k] = (b >> (2 * k)) & 3;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------- Q2_K

pub const Q2K_BYTES: usize = 84;

/// One super-block of Q2_K.
pub fn q2_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut w = [0f32; 16];
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    match qw {
        None => {
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..16 {
                let xb = &x[16 * j..16 * j + 16];
                for (wi, &v) in w.iter_mut().zip(xb) {
                    *wi = v.abs();
                }
                (scales[j], mins[j]) =
                    make_qkx_quants(xb, 3, &w, &mut l[16 * j..16 * j + 16], -0.5, 0.1, 15, true);
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            if max_scale > 0.0 {
                let iscale = 15.0 / max_scale;
                for j in 0..16 {
                    sc[j] = nearest_int(iscale * scales[j]) as u8;
                }
                dd[0..2].copy_from_slice(&f16_bits(max_scale / 15.0));
            } else {
                sc.fill(0);
                dd[0..2].copy_from_slice(&f16_bits(0.0));
            }
            if max_min > 0.0 {
                let iscale = 15.0 / max_min;
                for j in 0..16 {
                    sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                dd[2..4].copy_from_slice(&f16_bits(max_min / 15.0));
            } else {
                dd[2..4].copy_from_slice(&f16_bits(0.0));
            }
        }
        Some(qw) => {
            let sigma2 = sum_sq(x) / QK_K as f32;
            let mut sw = [0f32; 16];
            for j in 0..16 {
                let xb = &x[16 * j..16 * j + 16];
                imatrix_weights(xb, &qw[16 * j..16 * j + 16], sigma2, &mut w);
                sw[j] = w.iter().fold(0f32, |s, &v| s + v);
                (scales[j], mins[j]) = make_qkx_quants(
                    xb,
                    3,
                    &w,
                    &mut l[16 * j..16 * j + 16],
                    -0.9,
                    0.05,
                    36,
                    false,
                );
            }
            let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
            let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
            let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
            dd[0..2].copy_from_slice(&f16_bits(dm));
            dd[2..4].copy_from_slice(&f16_bits(mm));
            for j in 0..16 {
                sc[j] = ls[j] | (lm[j] << 4);
            }
        }
    }
    let (d, dmin) = (f16_at(dd, 0), f16_at(dd, 2));
    for j in 0..16 {
        let dl = d * (sc[j] & 0xF) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + ml) / dl).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, qs);
}

pub(crate) fn q2_k_scales(y: &[u8], out: &mut [(f32, f32)]) {
    let (d, dmin) = (f16_at(y, 80), f16_at(y, 82));
    for (j, o) in out.iter_mut().enumerate() {
        *o = (d * (y[j] & 0xF) as f32, -(dmin * (y[j] >> 4) as f32));
    }
}

pub(crate) fn q2_k_levels(y: &[u8], levels: &mut [u8]) {
    unpack_2bit(&y[16..80], levels)
}

pub(crate) fn q2_k_set_levels(y: &mut [u8], levels: &[u8]) {
    pack_2bit(levels.try_into().expect("256 levels"), &mut y[16..80])
}

// ---------------------------------------------------------------------------------------- Q3_K

pub const Q3K_BYTES: usize = 110;

fn q3_k_scale(s: &[u8], j: usize) -> i32 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (lo | (hi << 4)) as i32 - 32
}

fn q3_k_set_scale(s: &mut [u8], j: usize, l: u8) {
    if j < 8 {
        s[j] = l & 0xF;
    } else {
        s[j - 8] |= (l & 0xF) << 4;
    }
    s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
}

/// One super-block of Q3_K.
pub fn q3_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, d) = rest.split_at_mut(12);
    sc.fill(0);
    match qw {
        None => {
            let (mut max_scale, mut amax) = (0f32, 0f32);
            for j in 0..16 {
                scales[j] = make_q3_quants(
                    &x[16 * j..16 * j + 16],
                    4,
                    &mut l[16 * j..16 * j + 16],
                    true,
                );
                if scales[j].abs() > amax {
                    amax = scales[j].abs();
                    max_scale = scales[j];
                }
            }
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for (j, &s) in scales.iter().enumerate() {
                    let v = nearest_int(iscale * s) as i8 as i32;
                    q3_k_set_scale(sc, j, (v.clamp(-32, 31) + 32) as u8);
                }
                d.copy_from_slice(&f16_bits(1.0 / iscale));
            } else {
                d.copy_from_slice(&f16_bits(0.0));
            }
        }
        Some(qw) => {
            let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
            let mut w = [0f32; 16];
            let mut sw = [0f32; 16];
            for j in 0..16 {
                let xb = &x[16 * j..16 * j + 16];
                imatrix_weights(xb, &qw[16 * j..16 * j + 16], sigma2, &mut w);
                sw[j] = w.iter().fold(0f32, |s, &v| s + v);
                scales[j] = make_qx_quants(xb, 4, &mut l[16 * j..16 * j + 16], 1, Some(&w));
            }
            let mut ls = [0i8; 16];
            let d_block = make_qx_quants(&scales, 32, &mut ls, 1, Some(&sw));
            for (j, &v) in ls.iter().enumerate() {
                q3_k_set_scale(sc, j, v as u8);
            }
            d.copy_from_slice(&f16_bits(d_block));
        }
    }
    let dall = f16_at(d, 0);
    for j in 0..16 {
        let dl = dall * q3_k_scale(sc, j) as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dl).clamp(-4, 3) + 4) as i8;
        }
    }
    let levels: [u8; QK_K] = std::array::from_fn(|i| l[i] as u8);
    q3_k_pack(&levels, hmask, qs);
}

fn q3_k_pack(levels: &[u8; QK_K], hmask: &mut [u8], qs: &mut [u8]) {
    hmask.fill(0);
    let mut low = *levels;
    for (j, v) in low.iter_mut().enumerate() {
        if *v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    pack_2bit(&low, qs);
}

pub(crate) fn q3_k_scales(y: &[u8], out: &mut [(f32, f32)]) {
    let d = f16_at(y, 108);
    for (j, o) in out.iter_mut().enumerate() {
        *o = (d * q3_k_scale(&y[96..108], j) as f32, 0.0);
    }
}

pub(crate) fn q3_k_levels(y: &[u8], levels: &mut [u8]) {
    unpack_2bit(&y[32..96], levels);
    for (j, v) in levels.iter_mut().enumerate() {
        if y[j % 32] & (1 << (j / 32)) != 0 {
            *v += 4;
        }
    }
}

pub(crate) fn q3_k_set_levels(y: &mut [u8], levels: &[u8]) {
    let (hmask, rest) = y.split_at_mut(32);
    q3_k_pack(
        levels.try_into().expect("256 levels"),
        hmask,
        &mut rest[..64],
    );
}

// ------------------------------------------------------------------------------- Q4_K and Q5_K

pub const Q4K_BYTES: usize = 144;
pub const Q5K_BYTES: usize = 176;

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], s: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// The shared part of Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins. Writes
/// `d`, `dmin` and the 12 scale bytes into `head` (16 bytes) and the levels into `l`.
fn qk_scale_min_block(x: &[f32], qw: Option<&[f32]>, nmax: i32, head: &mut [u8], l: &mut [u8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut w = [0f32; 32];
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    match qw {
        None => {
            let (rmin, rdelta, nstep) = if nmax == 15 {
                (-1.0, 0.1, 20)
            } else {
                (-0.5, 0.1, 15)
            };
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..8 {
                let xb = &x[32 * j..32 * j + 32];
                let av_x = (sum_sq(xb) / 32.0).sqrt();
                for (wi, &v) in w.iter_mut().zip(xb) {
                    *wi = av_x + v.abs();
                }
                (scales[j], mins[j]) = make_qkx_quants(
                    xb,
                    nmax,
                    &w,
                    &mut l[32 * j..32 * j + 32],
                    rmin,
                    rdelta,
                    nstep,
                    false,
                );
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            head[0..2].copy_from_slice(&f16_bits(max_scale / 63.0));
            head[2..4].copy_from_slice(&f16_bits(max_min / 63.0));
        }
        Some(qw) => {
            let sigma2 = 2.0 * sum_sq(&x[..QK_K]) / QK_K as f32;
            let mut sw = [0f32; 8];
            for j in 0..8 {
                let xb = &x[32 * j..32 * j + 32];
                imatrix_weights(xb, &qw[32 * j..32 * j + 32], sigma2, &mut w);
                sw[j] = w.iter().fold(0f32, |s, &v| s + v);
                (scales[j], mins[j]) = make_qkx_quants(
                    xb,
                    nmax,
                    &w,
                    &mut l[32 * j..32 * j + 32],
                    -0.9,
                    0.05,
                    36,
                    false,
                );
            }
            let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
            let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
            if nmax == 31 {
                // Only ggml's Q5_K clamps here (it matters only for negative scales).
                for j in 0..8 {
                    ls[j] = ls[j].min(63);
                    lm[j] = lm[j].min(63);
                }
            }
            head[0..2].copy_from_slice(&f16_bits(d_block));
            head[2..4].copy_from_slice(&f16_bits(m_block));
        }
    }
    pack_scale_min_k4(&ls, &lm, &mut head[4..16]);
    let (d, dmin) = (f16_at(head, 0), f16_at(head, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &head[4..16]);
        let dl = d * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
}

pub(crate) fn qk_scale_min_scales(y: &[u8], out: &mut [(f32, f32)]) {
    let (d, dmin) = (f16_at(y, 0), f16_at(y, 2));
    for (j, o) in out.iter_mut().enumerate() {
        let (sc, m) = scale_min_k4(j, &y[4..16]);
        *o = (d * sc as f32, -(dmin * m as f32));
    }
}

/// One super-block of Q4_K.
pub fn q4_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (head, qs) = y.split_at_mut(16);
    qk_scale_min_block(x, qw, 15, head, &mut l);
    q4_k_pack(&l, qs);
}

fn q4_k_pack(l: &[u8], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(64) {
        for i in 0..32 {
            qs[j / 2 + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

pub(crate) fn q4_k_levels(y: &[u8], levels: &mut [u8]) {
    for j in (0..QK_K).step_by(64) {
        for i in 0..32 {
            let b = y[16 + j / 2 + i];
            levels[j + i] = b & 0xF;
            levels[j + i + 32] = b >> 4;
        }
    }
}

pub(crate) fn q4_k_set_levels(y: &mut [u8], levels: &[u8]) {
    q4_k_pack(levels, &mut y[16..])
}

/// One super-block of Q5_K.
pub fn q5_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (head, rest) = y.split_at_mut(16);
    qk_scale_min_block(x, qw, 31, head, &mut l);
    q5_k_pack(&l, rest);
}

fn q5_k_pack(l: &[u8], rest: &mut [u8]) {
    let (qh, ql) = rest.split_at_mut(32);
    qh.fill(0);
    for (k, n) in (0..QK_K).step_by(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for j in 0..32 {
            let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[n / 2 + j] = l1 | (l2 << 4);
        }
    }
}

pub(crate) fn q5_k_levels(y: &[u8], levels: &mut [u8]) {
    let (qh, ql) = (&y[16..48], &y[48..176]);
    for (k, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let b = ql[n / 2 + j];
            levels[n + j] = (b & 0xF) | (((qh[j] >> (2 * k)) & 1) << 4);
            levels[n + j + 32] = (b >> 4) | (((qh[j] >> (2 * k + 1)) & 1) << 4);
        }
    }
}

pub(crate) fn q5_k_set_levels(y: &mut [u8], levels: &[u8]) {
    q5_k_pack(levels, &mut y[16..])
}

// ---------------------------------------------------------------------------------------- Q6_K

pub const Q6K_BYTES: usize = 210;

/// One super-block of Q6_K.
pub fn q6_k_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for ib in 0..16 {
        let q = qw.map(|w| &w[16 * ib..16 * ib + 16]);
        scales[ib] = make_qx_quants(
            &x[16 * ib..16 * ib + 16],
            32,
            &mut l[16 * ib..16 * ib + 16],
            1,
            q,
        );
        if scales[ib].abs() > max_abs {
            max_abs = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16_bits(1.0 / iscale);
    y[208..210].copy_from_slice(&d);
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let dall = f16_at(y, 208);
    for j in 0..16 {
        let dl = dall * y[192 + j] as i8 as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dl).clamp(-32, 31) + 32) as i8;
        }
    }
    let levels: [u8; QK_K] = std::array::from_fn(|i| l[i] as u8);
    q6_k_set_levels(y, &levels);
}

pub(crate) fn q6_k_scales(y: &[u8], out: &mut [(f32, f32)]) {
    let d = f16_at(y, 208);
    for (j, o) in out.iter_mut().enumerate() {
        *o = (d * y[192 + j] as i8 as f32, 0.0);
    }
}

pub(crate) fn q6_k_levels(y: &[u8], levels: &mut [u8]) {
    for (k, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (&y[64 * k..64 * k + 64], &y[128 + 32 * k..128 + 32 * k + 32]);
        for l in 0..32 {
            levels[j + l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            levels[j + l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            levels[j + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            levels[j + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
}

pub(crate) fn q6_k_set_levels(y: &mut [u8], levels: &[u8]) {
    for (k, j) in (0..QK_K).step_by(128).enumerate() {
        for l in 0..32 {
            let q = |o: usize| levels[j + l + o];
            y[64 * k + l] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            y[64 * k + l + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            y[128 + 32 * k + l] =
                (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

/// Sub-block scales, level unpacking and packing of each k-quant, for [`super::codec`].
pub(crate) mod access {
    pub(crate) use super::{
        q2_k_levels, q2_k_scales, q2_k_set_levels, q3_k_levels, q3_k_scales, q3_k_set_levels,
        q4_k_levels, q4_k_set_levels, q5_k_levels, q5_k_set_levels, q6_k_levels, q6_k_scales,
        q6_k_set_levels, qk_scale_min_scales,
    };
}
