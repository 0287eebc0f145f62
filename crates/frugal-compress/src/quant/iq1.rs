//! llama.cpp's 1-bit lattice types IQ1_S (1.56 bpw) and IQ1_M (1.75 bpw), written from
//! `quantize_row_iq1_s_impl` and `quantize_row_iq1_m_impl` in `ggml/src/ggml-quants.c` so that
//! the bytes are `llama-quantize`'s.
//!
//! Values are `d·s·(l − 1 ± δ)`, l ∈ 0..3, δ = 1/8, eight at a time as one point of a lattice of
//! 2048 ([`frugal_models::iq::grids`]). Each sub-block (32 values for IQ1_S, 16 for IQ1_M)
//! solves the weighted three-level fit exactly: the values sorted, every pair of split points
//! scored from prefix sums, for both signs of the shift (IQ1_M: the shift's sign chosen per 8).
//! Groups of eight off the lattice take their best neighbour (the points at the 3 smallest
//! squared distances) and the scale is refitted. IQ1_S stores a 3-bit scale and the shift's
//! sign per 32 beside the f16 `d`; IQ1_M stores 3-bit scales per 16 and spreads its f16 `d`
//! (refitted over the whole super-block) across the top nibbles of its four scale words.
//! IQ1_S needs importance weights (llama.cpp asserts them); IQ1_M falls back to `x²`.

use super::iq2::{expect_weights, first_least, lattice, nearest_level, sigma2, weights, Lattice8};
use super::kquants::{f16_bits, nearest_int, QK_K};
use frugal_models::iq::IQ1_DELTA;
pub use frugal_models::iq::{IQ1_M_BYTES, IQ1_S_BYTES};

const X_P: [f32; 3] = [-1.0 + IQ1_DELTA, IQ1_DELTA, 1.0 + IQ1_DELTA];
const X_M: [f32; 3] = [-1.0 - IQ1_DELTA, -IQ1_DELTA, 1.0 - IQ1_DELTA];
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// The order of a sub-block's values, ascending; equal values keep their order (glibc's
/// `qsort`, a merge sort for arrays this small, is stable). By insertion with ggml's comparison
/// (`<`): the same order for any values that have one, and no panic where a NaN makes the
/// comparison no order at all (the standard sort may panic then).
fn ascending<const N: usize>(xb: &[f32]) -> [usize; N] {
    let mut idx: [usize; N] = std::array::from_fn(|i| i);
    for j in 1..N {
        let mut k = j;
        while k > 0 && xb[idx[k]] < xb[idx[k - 1]] {
            idx.swap(k, k - 1);
            k -= 1;
        }
    }
    idx
}

/// Levels 0, 1, 2 for the values below `i1`, from `i1` to `i2`, and from `i2` in ascending
/// order `idx`.
fn split_levels(idx: &[usize], i1: usize, i2: usize, l: &mut [i8]) {
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// `iq1_find_best_neighbour2`: the neighbour with the least weighted error of `scale·xx[l]`
/// against the signed values (the first on ties); its levels go into `l`.
fn best_neighbour(
    lat: &Lattice8,
    nb: &[u16],
    xb: &[f32],
    w: &[f32],
    scale: f32,
    xx: &[f32; 3],
    l: &mut [i8],
) -> u16 {
    let index = first_least(nb, |j| {
        let g = &lat.levels[j as usize];
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = xx[g[i] as usize];
            let diff = scale * q - xb[i];
            d2 += w[i] * diff * diff;
        }
        d2
    });
    l[..8].copy_from_slice(&lat.levels[index as usize]);
    index
}

/// Snaps each group of eight to the lattice; true when all were on it. `shift_of(k)` is the
/// level set of group k.
fn snap_groups(
    lat: &Lattice8,
    xb: &[f32],
    w: &[f32],
    scale: f32,
    shift_of: impl Fn(usize) -> &'static [f32; 3],
    l: &mut [i8],
    index: &mut [u16],
) -> bool {
    let mut all = true;
    for (k, ix) in index.iter_mut().enumerate() {
        let r = 8 * k..8 * k + 8;
        *ix = match lat.lookup(&l[r.clone()]) {
            Ok(g) => *g,
            Err(nb) => {
                all = false;
                best_neighbour(
                    lat,
                    nb,
                    &xb[r.clone()],
                    &w[r.clone()],
                    scale,
                    shift_of(k),
                    &mut l[r],
                )
            }
        };
    }
    all
}

/// The weighted least-squares scale of the groups' points against the signed values, if
/// positive.
fn refit(
    lat: &Lattice8,
    xb: &[f32],
    w: &[f32],
    index: &[u16],
    shift_of: impl Fn(usize) -> &'static [f32; 3],
) -> Option<f32> {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for (k, &ix) in index.iter().enumerate() {
        let g = &lat.levels[ix as usize];
        let xx = shift_of(k);
        for j in 0..8 {
            let wj = w[8 * k + j];
            let q = xx[g[j] as usize];
            sumqx += wj * q * xb[8 * k + j];
            sumq2 += wj * q * q;
        }
    }
    (sumqx > 0.0 && sumq2 > 0.0).then(|| sumqx / sumq2)
}

fn max_abs(x: &[f32]) -> f32 {
    let mut max = x[0].abs();
    for &v in &x[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    max
}

/// One super-block of 256 into 50 bytes of IQ1_S: `d`, 32 low bytes of the point indices, then
/// per 32 values a u16 of the indices' three high bits, the 3-bit scale and the shift's sign.
pub fn iq1_s_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let weight = weights(x, expect_weights(qw, "IQ1_S"), 2.0);
    let lat = lattice(2048);
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut shifts = [1i8; 8];
    let mut qh = [0u16; 8];
    let mut max_scale = 0f32;
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let w = &weight[32 * ib..32 * ib + 32];
        if max_abs(xb) < GROUP_MAX_EPS_IQ1_S {
            continue;
        }
        let idx: [usize; 32] = ascending(xb);
        let mut sumx = [0f32; 33];
        let mut sumw = [0f32; 33];
        for j in 0..32 {
            let i = idx[j];
            sumx[j + 1] = sumx[j] + w[i] * xb[i];
            sumw[j + 1] = sumw[j] + w[i];
        }
        let mut best_score = -f32::MAX;
        let mut scale = max_abs(xb);
        let (mut besti1, mut besti2, mut best_shift) = (usize::MAX, usize::MAX, 0i8);
        for i1 in 0..=32 {
            for i2 in i1..=32 {
                for (xs, shift) in [(&X_P, 1i8), (&X_M, -1)] {
                    let sumqx = (sumx[i1] - sumx[0]) * xs[0]
                        + (sumx[i2] - sumx[i1]) * xs[1]
                        + (sumx[32] - sumx[i2]) * xs[2];
                    let sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0]
                        + (sumw[i2] - sumw[i1]) * xs[1] * xs[1]
                        + (sumw[32] - sumw[i2]) * xs[2] * xs[2];
                    if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        (besti1, besti2, best_shift) = (i1, i2, shift);
                    }
                }
            }
        }
        if besti1 == usize::MAX || best_shift == 0 {
            continue;
        }
        let mut l = [0i8; 32];
        split_levels(&idx, besti1, besti2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_shift = -best_shift;
        }
        let xx: &'static [f32; 3] = if best_shift == 1 { &X_P } else { &X_M };
        let mut index = [0u16; 4];
        if !snap_groups(lat, xb, w, scale, |_| xx, &mut l, &mut index) {
            if let Some(s) = refit(lat, xb, w, &index, |_| xx) {
                scale = s;
            }
        }
        for k in 0..4 {
            y[2 + 4 * ib + k] = (index[k] & 255) as u8;
            qh[ib] |= (index[k] >> 8) << (3 * k);
        }
        scales[ib] = scale;
        shifts[ib] = best_shift;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        for (ib, h) in qh.iter().enumerate() {
            y[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&h.to_le_bytes());
        }
        return;
    }
    let d = max_scale / 15.0;
    y[..2].copy_from_slice(&f16_bits(d * 1.125));
    let id = 1.0 / d;
    for ib in 0..8 {
        let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7) as u16;
        if shifts[ib] == -1 {
            l |= 8;
        }
        let h = qh[ib] | l << 12;
        y[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&h.to_le_bytes());
    }
}

/// IQ1_M's level set of group `k` (0 or 1) of a sub-block of 16 under shift pattern `s`
/// (0: +,+; 1: +,−; 2: −,+; 3: −,−).
fn m_shift(s: usize, k: usize) -> &'static [f32; 3] {
    let plus = if k == 0 { s < 2 } else { s.is_multiple_of(2) };
    if plus {
        &X_P
    } else {
        &X_M
    }
}

/// One super-block of 256 into 56 bytes of IQ1_M: 32 low bytes of the point indices, 16 bytes
/// of their three high bits and the shifts' signs, four u16 of 3-bit scales whose top nibbles
/// hold the f16 `d`.
pub fn iq1_m_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let sigma2 = sigma2(x, 2.0);
    let weight: [f32; QK_K] = std::array::from_fn(|i| match qw {
        Some(q) => q[i] * (sigma2 + x[i] * x[i]).sqrt(),
        None => x[i] * x[i],
    });
    let lat = lattice(2048);
    y.fill(0);
    let mut scales = [0f32; 16];
    let mut shifts = [0usize; 16];
    let mut max_scale = 0f32;
    let (cp1, cp2) = (
        X_P[0] * X_P[0] - X_P[1] * X_P[1],
        X_P[1] * X_P[1] - X_P[2] * X_P[2],
    );
    let (cm1, cm2) = (
        X_M[0] * X_M[0] - X_M[1] * X_M[1],
        X_M[1] * X_M[1] - X_M[2] * X_M[2],
    );
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        let w = &weight[16 * ib..16 * ib + 16];
        if max_abs(xb) < GROUP_MAX_EPS_IQ1_M {
            continue;
        }
        let idx: [usize; 16] = ascending(xb);
        let mut px = [[0f32; 17]; 2];
        let mut pw = [[0f32; 17]; 2];
        for j in 0..16 {
            let i = idx[j];
            let h = usize::from(i >= 8);
            px[h][j + 1] = px[h][j] + w[i] * xb[i];
            px[1 - h][j + 1] = px[1 - h][j];
            pw[h][j + 1] = pw[h][j] + w[i];
            pw[1 - h][j + 1] = pw[1 - h][j];
        }
        let txs = [px[0][16], px[1][16]];
        let tws = [pw[0][16], pw[1][16]];
        let (p2, m2) = (X_P[2], X_M[2]);
        let mut best_score = -f32::MAX;
        let mut scale = max_abs(xb);
        let (mut besti1, mut besti2, mut best_k) = (usize::MAX, usize::MAX, usize::MAX);
        for i1 in 0..=16 {
            for i2 in i1..=16 {
                let mut qx_p = [0f32; 2];
                let mut qx_m = [0f32; 2];
                let mut q2_p = [0f32; 2];
                let mut q2_m = [0f32; 2];
                for h in 0..2 {
                    let sx = px[h][i1] + px[h][i2];
                    qx_p[h] = txs[h] * p2 - sx;
                    qx_m[h] = txs[h] * m2 - sx;
                    q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                    q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
                }
                let sumqx = [
                    qx_p[0] + qx_p[1],
                    qx_p[0] + qx_m[1],
                    qx_m[0] + qx_p[1],
                    qx_m[0] + qx_m[1],
                ];
                let sumq2 = [
                    q2_p[0] + q2_p[1],
                    q2_p[0] + q2_m[1],
                    q2_m[0] + q2_p[1],
                    q2_m[0] + q2_m[1],
                ];
                for k in 0..4 {
                    if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                        scale = sumqx[k] / sumq2[k];
                        best_score = scale * sumqx[k];
                        (besti1, besti2, best_k) = (i1, i2, k);
                    }
                }
            }
        }
        if besti1 == usize::MAX {
            continue;
        }
        let mut l = [0i8; 16];
        split_levels(&idx, besti1, besti2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_k = 3 - best_k;
        }
        let mut index = [0u16; 2];
        if !snap_groups(
            lat,
            xb,
            w,
            scale,
            |k| m_shift(best_k, k),
            &mut l,
            &mut index,
        ) {
            if let Some(s) = refit(lat, xb, w, &index, |k| m_shift(best_k, k)) {
                scale = s;
            }
        }
        y[2 * ib] = (index[0] & 255) as u8;
        y[2 * ib + 1] = (index[1] & 255) as u8;
        y[32 + ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return;
    }
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for ib in 0..16 {
        let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
        sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
        y[32 + ib] |= MASKS[shifts[ib]];
        let qh = y[32 + ib] as usize;
        for k in 0..2 {
            let xx = m_shift(shifts[ib], k);
            let ix = y[2 * ib + k] as usize + ((qh << (8 - 4 * k)) & 0x700);
            let g = &lat.levels[ix];
            for j in 0..8 {
                let wj = weight[16 * ib + 8 * k + j];
                let q = xx[g[j] as usize] * (2 * l + 1) as f32;
                sumqx += wj * q * x[16 * ib + 8 * k + j];
                sumq2 += wj * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    let s = half::f16::from_f32(d * 1.1125).to_bits();
    sc[0] |= (s & 0x000F) << 12;
    sc[1] |= (s & 0x00F0) << 8;
    sc[2] |= (s & 0x0F00) << 4;
    sc[3] |= s & 0xF000;
    for (i, v) in sc.iter().enumerate() {
        y[48 + 2 * i..50 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// The lattice point of least `w`-weighted error of `dl·xx[l]` against `x` (each value's
/// nearest level, or off the lattice the best of that code's neighbours), its levels in `l`,
/// and that error.
fn nearest_point(
    lat: &Lattice8,
    x: &[f32],
    w: &[f32],
    dl: f32,
    xx: &[f32; 3],
    l: &mut [i8],
) -> (u16, f32) {
    for i in 0..8 {
        l[i] = nearest_level(xx, dl, x[i]);
    }
    let index = match lat.lookup(&l[..8]) {
        Ok(g) => *g,
        Err(nb) => best_neighbour(lat, nb, x, w, dl, xx, l),
    };
    let g = &lat.levels[index as usize];
    let mut d2 = 0f32;
    for i in 0..8 {
        let diff = dl * xx[g[i] as usize] - x[i];
        d2 += w[i] * diff * diff;
    }
    (index, d2)
}

/// GPTQ's re-choice of group `g` (values `8g..8g+8`) of an IQ1_S block whose scales and shifts
/// are fixed ([`super::gptq::gptq_lattice`]; the shift is shared by the four groups of its 32
/// and is set with the scale, [`set_scale_iq1_s`]): the point only.
pub fn regroup_iq1_s(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let (ib, k) = (g / 4, g % 4);
    let at = 34 + 2 * ib;
    let qh = u16::from_le_bytes([y[at], y[at + 1]]);
    let dl = frugal_models::iq::f16_at(y, 0) * (2 * ((qh >> 12) & 7) + 1) as f32;
    let xx = if qh & 0x8000 != 0 { &X_M } else { &X_P };
    let lat = lattice(2048);
    let mut l = [0i8; 8];
    let (index, _) = nearest_point(lat, x, w, dl, xx, &mut l);
    let p = &lat.levels[index as usize];
    for i in 0..8 {
        out[i] = dl * xx[p[i] as usize];
    }
    y[2 + g] = (index & 255) as u8;
    let qh = (qh & !(7 << (3 * k))) | ((index >> 8) << (3 * k));
    y[at..at + 2].copy_from_slice(&qh.to_le_bytes());
}

/// GPTQ's re-choice of group `g` of an IQ1_M block whose scales are fixed: the point and its
/// own shift's sign (IQ1_M has one per eight values), whichever errs least.
pub fn regroup_iq1_m(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let (ib, k) = (g / 2, g % 2);
    let sc = u16::from_le_bytes([y[48 + 2 * (ib / 4)], y[49 + 2 * (ib / 4)]]);
    let dl = frugal_models::iq::iq1_m_scale(y) * (2 * ((sc >> (3 * (ib % 4))) & 7) + 1) as f32;
    let lat = lattice(2048);
    let mut l = [0i8; 8];
    let (ip, ep) = nearest_point(lat, x, w, dl, &X_P, &mut l);
    let (im, em) = nearest_point(lat, x, w, dl, &X_M, &mut l);
    let (index, neg) = if em < ep { (im, true) } else { (ip, false) };
    let xx = if neg { &X_M } else { &X_P };
    let p = &lat.levels[index as usize];
    for i in 0..8 {
        out[i] = dl * xx[p[i] as usize];
    }
    y[g] = (index & 255) as u8;
    let nib = ((index >> 8) as u8) | if neg { 8 } else { 0 };
    let sh = 4 * k;
    y[32 + ib] = (y[32 + ib] & !(0xF << sh)) | (nib << sh);
}

/// Sets sub-block `s`'s (32 values) 3-bit scale and, as the code's fourth bit, its shift's sign
/// in an IQ1_S block.
pub fn set_scale_iq1_s(y: &mut [u8], s: usize, code: u8) {
    let at = 34 + 2 * s;
    let qh = u16::from_le_bytes([y[at], y[at + 1]]);
    let qh = (qh & 0x0FFF) | (code as u16 & 0xF) << 12;
    y[at..at + 2].copy_from_slice(&qh.to_le_bytes());
}

/// Sets the 3-bit scale of sub-block `s` (16 values) of an IQ1_M block (the words' top
/// nibbles, the super-block scale, untouched).
pub fn set_scale_iq1_m(y: &mut [u8], s: usize, code: u8) {
    let at = 48 + 2 * (s / 4);
    let sh = 3 * (s % 4);
    let sc = u16::from_le_bytes([y[at], y[at + 1]]);
    let sc = (sc & !(7 << sh)) | (code as u16 & 7) << sh;
    y[at..at + 2].copy_from_slice(&sc.to_le_bytes());
}
