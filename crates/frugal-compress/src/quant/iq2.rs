//! llama.cpp's 2-bit lattice types IQ2_XXS (2.06 bpw), IQ2_XS (2.31 bpw) and IQ2_S (2.56 bpw),
//! written from `iq2xs_init_impl`, `quantize_row_iq2_xxs_impl`, `quantize_row_iq2_xs_impl` and
//! `quantize_row_iq2_s_impl` in `ggml/src/ggml-quants.c` so that the bytes are
//! `llama-quantize`'s.
//!
//! Magnitudes come eight at a time as one point of a lattice of 256 (IQ2_XXS), 512 (IQ2_XS) or
//! 1024 (IQ2_S) points whose coordinates are `2l + 1` times the sub-block's scale, l ∈ 0..3
//! ([`frugal_models::iq::grids`]). An 8-tuple off the lattice is replaced by the nearest of its
//! neighbours (the lattice points at its 2 (IQ2_XXS, IQ2_XS) or 1 (IQ2_S) smallest squared
//! distances) under the importance weights. IQ2_XXS and IQ2_XS store seven signs per 8 values
//! (an odd count of negatives flips the least important value); IQ2_S stores eight. IQ2_XXS
//! has one 4-bit scale per 32 values, starts from a weighted 4-level fit (`make_qp_quants`) and
//! searches 13 scales; IQ2_XS and IQ2_S have one per 16 and search 19 from the maximum. The two
//! smaller types need importance weights (llama.cpp asserts them); IQ2_S falls back to
//! `σ²/4 + x²`.

// The quantizers mirror ggml's index loops (several arrays per index), so that the bytes are
// its own.
#![allow(clippy::needless_range_loop)]

use super::kquants::{f16_bits, make_qp_quants, nearest_int, QK_K};
use frugal_models::iq::{grid8_levels, KGRID_IQ1S, KGRID_IQ2S, KGRID_IQ2XS, KGRID_IQ2XXS};
pub use frugal_models::iq::{IQ2_S_BYTES, IQ2_XS_BYTES, IQ2_XXS_BYTES};
use std::sync::OnceLock;

const K_MAX_Q: i32 = 3;
const GROUP_MAX_EPS: f32 = 1e-15;
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// A lattice of 8-value points with, for every 8-tuple of levels 0..=2 off it, its neighbours
/// on it (the quantizers clamp levels to 0..=2, so no other tuple is looked up).
pub(super) struct Lattice8 {
    /// Each point's levels.
    pub levels: Vec<[i8; 8]>,
    /// Each point's coordinates `2l + 1`, as floats, the count a power of two (256…2048).
    points: Vec<[f32; 8]>,
    /// For each 16-bit level code: `Ok(point)` on the lattice, `Err(neighbours)` off it.
    map: Vec<Result<u16, Box<[u16]>>>,
}

impl Lattice8 {
    /// `iq2xs_init_impl`: the neighbours of an off-lattice code are the lattice points at its
    /// `nwant` smallest squared distances, in order of distance then index.
    pub fn new(codes: &[u16], nwant: usize) -> Lattice8 {
        let levels: Vec<[i8; 8]> = codes
            .iter()
            .map(|&c| grid8_levels(c).map(|l| l as i8))
            .collect();
        let points: Vec<[f32; 8]> = levels
            .iter()
            .map(|l| l.map(|l| (2 * l + 1) as f32))
            .collect();
        assert!(points.len().is_power_of_two());
        let mut map: Vec<Result<u16, Box<[u16]>>> = vec![Err(Box::new([])); 1 << 16];
        for (i, &c) in codes.iter().enumerate() {
            map[c as usize] = Ok(i as u16);
        }
        let mut d2 = vec![0i32; points.len()];
        for (code, m) in map.iter_mut().enumerate() {
            let lv = grid8_levels(code as u16);
            if m.is_ok() || lv.iter().any(|&l| l > 2) {
                continue;
            }
            let pos = lv.map(|l| 2 * l as i32 + 1);
            for (d, p) in d2.iter_mut().zip(&points) {
                *d = (0..8).map(|k| (p[k] as i32 - pos[k]).pow(2)).sum();
            }
            let mut distinct: Vec<i32> = d2.clone();
            distinct.sort_unstable();
            distinct.dedup();
            distinct.truncate(nwant);
            let mut list: Vec<(i32, u16)> = d2
                .iter()
                .enumerate()
                .filter(|(_, d)| distinct.contains(d))
                .map(|(j, &d)| (d, j as u16))
                .collect();
            list.sort_unstable();
            *m = Err(list.into_iter().map(|(_, j)| j).collect());
        }
        Lattice8 {
            levels,
            points,
            map,
        }
    }

    /// The code of eight levels.
    pub fn code(l: &[i8]) -> usize {
        (0..8).map(|i| (l[i] as usize) << (2 * i)).sum()
    }

    pub fn lookup(&self, l: &[i8]) -> &Result<u16, Box<[u16]>> {
        &self.map[Lattice8::code(l)]
    }

    /// `iq2_find_best_neighbour`: the neighbour with the least weighted error at `scale` (the
    /// first on ties); its levels go into `l`.
    fn best_neighbour(&self, nb: &[u16], xval: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> u16 {
        let index = least_weighted_error(&self.points, nb, xval, w, scale);
        l[..8].copy_from_slice(&self.levels[index as usize]);
        index
    }

    /// The point of levels `l`, replacing them by the best neighbour's when off the lattice.
    fn snap(&self, xval: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> (u16, bool) {
        match self.lookup(l) {
            Ok(g) => (*g, true),
            Err(nb) => (self.best_neighbour(nb, xval, w, scale, l), false),
        }
    }
}

frugal_models::avx512_dispatch! {
    /// The candidate point `j` of `nb` of least `Σ_i w_i·(scale·p_i − x_i)²` over its eight
    /// coordinates, the first on ties, as [`first_least`] finds it: the candidates' sums side by
    /// side in vector lanes (each lane's in ggml's order), then the least by lane-wise minima (a
    /// NaN never passes `<`) and its first position. `points.len()` must be a power of two. For
    /// the 2-bit lattices (neighbour lists of 8–30 on average); the 3-bit lattices' lists are a
    /// few 4-value points, where [`first_least`]'s plain loop measured faster.
    fn least_weighted_error(points: &[[f32; 8]], nb: &[u16], x: &[f32], w: &[f32], scale: f32) -> u16 {
        // A power-of-two count, so the mask keeps every index in bounds without a branch.
        let mask = points.len() - 1;
        let points = &points[..=mask];
        let (x, w) = (&x[..8], &w[..8]);
        let (mut best, mut index) = (f32::MAX, nb[0]);
        for chunk in nb.chunks(64) {
            // Lanes past the chunk hold infinity, which no strict `<` picks.
            let mut err = [f32::INFINITY; 64];
            for (o, &j) in err.iter_mut().zip(chunk) {
                let p = &points[j as usize & mask];
                let mut d2 = 0f32;
                for i in 0..8 {
                    let diff = scale * p[i] - x[i];
                    d2 += w[i] * diff * diff;
                }
                *o = d2;
            }
            // The least in sixteen running lanes, then across them (the same value in any order:
            // a NaN never passes `<`).
            let mut lanes = [f32::MAX; 16];
            for e in err.chunks_exact(16) {
                for (a, &e) in lanes.iter_mut().zip(e) {
                    *a = if e < *a { e } else { *a };
                }
            }
            let least = lanes.iter().fold(f32::MAX, |a, &e| if e < a { e } else { a });
            if least < best {
                best = least;
                index = chunk[err.iter().position(|&e| e == least).unwrap_or(0)];
            }
        }
        index
    }
}

/// The candidate of least `err`, the first on ties (ggml's neighbour searches: a strict `<`
/// against a running best that starts at `FLT_MAX`).
pub(super) fn first_least(candidates: &[u16], err: impl Fn(u16) -> f32) -> u16 {
    let mut best = f32::MAX;
    let mut index = candidates[0];
    for &j in candidates {
        let e = err(j);
        if e < best {
            best = e;
            index = j;
        }
    }
    index
}

/// The lattice of `size` points: IQ2_XXS (256), IQ2_XS (512), IQ2_S (1024), IQ1_S/IQ1_M (2048).
pub(super) fn lattice(size: usize) -> &'static Lattice8 {
    static XXS: OnceLock<Lattice8> = OnceLock::new();
    static XS: OnceLock<Lattice8> = OnceLock::new();
    static S: OnceLock<Lattice8> = OnceLock::new();
    static IQ1: OnceLock<Lattice8> = OnceLock::new();
    match size {
        256 => XXS.get_or_init(|| Lattice8::new(&KGRID_IQ2XXS, 2)),
        512 => XS.get_or_init(|| Lattice8::new(&KGRID_IQ2XS, 2)),
        1024 => S.get_or_init(|| Lattice8::new(&KGRID_IQ2S, 1)),
        _ => IQ1.get_or_init(|| Lattice8::new(&KGRID_IQ1S, 3)),
    }
}

/// Absolute values and sign bits of eight values; with `parity`, an odd count of negatives
/// flips the value of least `w·x²` and only seven bits are kept.
pub(super) fn signs8(xb: &[f32], weight: &[f32], parity: bool, xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    let mut nflip = 0;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if !parity {
        return s;
    }
    if nflip % 2 == 1 {
        let key = |i: usize| weight[i] * xb[i] * xb[i];
        let mut imin = 0;
        let mut min = key(0);
        for i in 1..8 {
            if key(i) < min {
                min = key(i);
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// The weighted least-squares fit of `xval` by `2l + 1`.
fn fit(xval: &[f32], weight: &[f32], l: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for i in 0..xval.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

fn max_of(x: &[f32]) -> f32 {
    let mut max = x[0];
    for &v in &x[1..] {
        max = if max > v { max } else { v };
    }
    max
}

/// Levels for `id · x` on the 2l + 1 grid, clamped to 0..=2.
fn round_levels(id: f32, xval: &[f32], l: &mut [i8]) {
    for (o, &x) in l.iter_mut().zip(xval) {
        *o = nearest_int(0.5 * (id * x - 1.0)).clamp(0, K_MAX_Q - 1) as i8;
    }
}

/// One IQ2_XXS sub-block of 32: the scale, four point indices and four 7-bit sign groups;
/// `None` when it is too small (or its fit degenerate).
fn xxs_sub(xb: &[f32], weight: &[f32]) -> Option<(f32, [u16; 4], [u8; 4])> {
    let lat = lattice(256);
    let waux: [f32; 32] = std::array::from_fn(|i| weight[i].sqrt());
    let mut xval = [0f32; 32];
    let mut signs = [0u8; 4];
    for k in 0..4 {
        let r = 8 * k..8 * k + 8;
        signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], true, &mut xval[r]);
    }
    let max = max_of(&xval);
    if max < GROUP_MAX_EPS {
        return None;
    }
    let mut lq = [0u8; 32];
    let mut scale = make_qp_quants(&xval, K_MAX_Q + 1, &mut lq, weight);
    let mut l: [i8; 32] = lq.map(|v| v as i8);
    let eff_max = scale * K_MAX_Q as f32;
    if eff_max <= 0.0 {
        return None;
    }
    let mut laux = [0i8; 32];
    let mut best = 0f32;
    for is in -6..=6 {
        let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1) / eff_max;
        let this_scale = 1.0 / id;
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            round_levels(id, &xval[r.clone()], &mut laux[r.clone()]);
            lat.snap(&xval[r.clone()], &waux[r.clone()], this_scale, &mut laux[r]);
        }
        let (sumqx, sumq2) = fit(&xval, weight, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
        }
    }
    if scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            let mut t = [0i8; 8];
            round_levels(id, &xval[r.clone()], &mut t);
            match lat.lookup(&t) {
                Ok(g) => l[r].copy_from_slice(&lat.levels[*g as usize]),
                Err(nb) => {
                    lat.best_neighbour(nb, &xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
                }
            }
        }
        let (sumqx, sumq2) = fit(&xval, weight, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    finish(lat, &l, scale, signs, 127)
}

/// The end of a sub-block's search: a negative scale (ggml guards against it; never seen)
/// flipped into the sign bits (`mask`: the bits stored), and each group's lattice index;
/// `None` (a zero sub-block) where a group is not a lattice point, see [`on_lattice`].
fn finish<const N: usize>(
    lat: &Lattice8,
    l: &[i8],
    mut scale: f32,
    mut signs: [u8; N],
    mask: u8,
) -> Option<(f32, [u16; N], [u8; N])> {
    if scale < 0.0 {
        scale = -scale;
        for s in &mut signs {
            *s = !*s & mask;
        }
    }
    let mut index = [0u16; N];
    for (k, i) in index.iter_mut().enumerate() {
        *i = on_lattice(lat, &l[8 * k..8 * k + 8])?;
    }
    Some((scale, index, signs))
}

/// The lattice index of eight levels. Every search ends on lattice points, except where it
/// met no finite scale (values or weights so large that its sums overflow, the scale NaN): then
/// the levels are still the first guess's, and ggml aborts ("point not on grid"); here `None`.
fn on_lattice(lat: &Lattice8, l: &[i8]) -> Option<u16> {
    if !l.iter().all(|v| (0..4).contains(v)) {
        return None;
    }
    lat.lookup(l).as_ref().ok().copied()
}

/// One IQ2_XS or IQ2_S sub-block of 16: the scale, two point indices and two sign groups
/// (IQ2_XS: seven bits with parity; IQ2_S: eight).
fn xs_sub(
    lat: &Lattice8,
    xs: bool,
    xb: &[f32],
    weight: &[f32],
) -> Option<(f32, [u16; 2], [u8; 2])> {
    let waux: [f32; 16] = std::array::from_fn(|i| weight[i].sqrt());
    let mut xval = [0f32; 16];
    let mut signs = [0u8; 2];
    for k in 0..2 {
        let r = 8 * k..8 * k + 8;
        signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], xs, &mut xval[r]);
    }
    let max = max_of(&xval);
    if max
        < if xs {
            GROUP_MAX_EPS
        } else {
            GROUP_MAX_EPS_IQ2_S
        }
    {
        return None;
    }
    let mut l = [0i8; 16];
    let mut laux = [0i8; 16];
    let mut best = 0f32;
    let mut scale = max / (2 * K_MAX_Q - 1) as f32;
    let mut on_grid = [true; 2];
    let mut on_grid_aux = [true; 2];
    for is in -9..=9 {
        let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1) / max;
        let this_scale = 1.0 / id;
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            round_levels(id, &xval[r.clone()], &mut laux[r.clone()]);
            on_grid_aux[k] = lat
                .snap(&xval[r.clone()], &waux[r.clone()], this_scale, &mut laux[r])
                .1;
        }
        let (sumqx, sumq2) = fit(&xval, weight, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if on_grid[k] {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            round_levels(id, &xval[r.clone()], &mut l[r.clone()]);
            lat.snap(&xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
        }
        let (sumqx, sumq2) = fit(&xval, weight, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    finish(lat, &l, scale, signs, if xs { 127 } else { 255 })
}

/// The super-block's weights: the importance times √(σ² + x²), with σ² = `sigma_mul`·Σx²/256.
pub(super) fn weights(x: &[f32], qw: &[f32], sigma_mul: f32) -> [f32; QK_K] {
    let sigma2 = sigma2(x, sigma_mul);
    std::array::from_fn(|i| qw[i] * (sigma2 + x[i] * x[i]).sqrt())
}

/// `sigma_mul`·Σx²/256 over a super-block.
pub(super) fn sigma2(x: &[f32], sigma_mul: f32) -> f32 {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    sigma_mul * sumx2 / QK_K as f32
}

/// The lattice types' super-block scale: `d = max/31` over the sub-block scales (all ≥ 0),
/// stored as f16 times `fudge` in `y[0..2]`, and each sub-block scale's 4-bit code against it;
/// `None` when every sub-block was empty (nothing is written).
pub(super) fn scale_codes<const N: usize>(
    scales: &[f32; N],
    fudge: f32,
    y: &mut [u8],
) -> Option<[u8; N]> {
    let mut max_scale = 0f32;
    for &s in scales {
        max_scale = if max_scale > s { max_scale } else { s };
    }
    if max_scale == 0.0 {
        return None;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&f16_bits(d * fudge));
    let id = 1.0 / d;
    Some(scales.map(|s| nearest_int(0.5 * (id * s - 1.0)).clamp(0, 15) as u8))
}

pub(super) fn expect_weights<'a>(qw: Option<&'a [f32]>, ty: &str) -> &'a [f32] {
    // The plan refuses these types without importance weights before any work
    // (`mod::check_imatrix`), as llama.cpp's quantizer asserts them.
    qw.unwrap_or_else(|| panic!("{ty} needs importance weights: refused before quantizing"))
}

/// One super-block of 256 into 66 bytes of IQ2_XXS: `d`, then per 32 values four point
/// indices and a u32 of four 7-bit sign groups and the 4-bit scale.
pub fn iq2_xxs_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let w = weights(x, expect_weights(qw, "IQ2_XXS"), 1.0);
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut aux = [0u32; 8];
    for ib in 0..8 {
        let r = 32 * ib..32 * ib + 32;
        let Some((scale, index, signs)) = xxs_sub(&x[r.clone()], &w[r]) else {
            continue;
        };
        for k in 0..4 {
            y[2 + 8 * ib + k] = index[k] as u8;
            aux[ib] |= (signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
    }
    let Some(codes) = scale_codes(&scales, 1.0, y) else {
        y.fill(0);
        return;
    };
    for ib in 0..8 {
        let a = aux[ib] | (codes[ib] as u32) << 28;
        y[6 + 8 * ib..10 + 8 * ib].copy_from_slice(&a.to_le_bytes());
    }
}

/// One super-block of 256 into 74 bytes of IQ2_XS: `d`, 32 u16 (9-bit point index, 7 sign
/// bits), then two 4-bit scales per 32 values.
pub fn iq2_xs_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let w = weights(x, expect_weights(qw, "IQ2_XS"), 1.0);
    let lat = lattice(512);
    y.fill(0);
    let mut scales = [0f32; 16];
    for ib in 0..16 {
        let r = 16 * ib..16 * ib + 16;
        let Some((scale, index, signs)) = xs_sub(lat, true, &x[r.clone()], &w[r]) else {
            continue;
        };
        for k in 0..2 {
            let q = index[k] | (signs[k] as u16) << 9;
            y[2 + 4 * ib + 2 * k..4 + 4 * ib + 2 * k].copy_from_slice(&q.to_le_bytes());
        }
        scales[ib] = scale;
    }
    let Some(codes) = scale_codes(&scales, 1.0, y) else {
        y.fill(0);
        return;
    };
    for ib in 0..16 {
        y[66 + ib / 2] |= codes[ib] << (4 * (ib % 2));
    }
}

/// One super-block of 256 into 82 bytes of IQ2_S: `d`, 32 low bytes of the point indices, 32
/// sign bytes, 8 bytes of the indices' two high bits, 8 bytes of two 4-bit scales.
pub fn iq2_s_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let w = match qw {
        Some(q) => weights(x, q, 2.0),
        None => {
            let sigma2 = sigma2(x, 2.0);
            std::array::from_fn(|i| 0.25 * sigma2 + x[i] * x[i])
        }
    };
    let lat = lattice(1024);
    y.fill(0);
    let mut scales = [0f32; 16];
    for ib in 0..16 {
        let r = 16 * ib..16 * ib + 16;
        let Some((scale, index, signs)) = xs_sub(lat, false, &x[r.clone()], &w[r]) else {
            continue;
        };
        for k in 0..2 {
            let i8 = 2 * ib + k;
            y[2 + i8] = (index[k] & 255) as u8;
            y[66 + i8 / 4] |= ((index[k] >> 8) as u8) << (2 * (i8 % 4));
            y[34 + i8] = signs[k];
        }
        scales[ib] = scale;
    }
    let Some(codes) = scale_codes(&scales, 0.9875, y) else {
        return;
    };
    for ib in 0..16 {
        y[74 + ib / 2] |= codes[ib] << (4 * (ib % 2));
    }
}

/// Re-chooses one group of eight values of a block whose scales are fixed (what GPTQ does on a
/// lattice type, [`super::gptq::gptq_lattice`]): the signs of `x` (with parity, the least
/// important value flipped on an odd count), each magnitude's nearest level `db·mag[l]`, and,
/// off the lattice, the neighbour of least `w`-weighted error. Returns the point's index, the
/// sign bits and the decoded values (as the decoder computes them).
pub(super) fn regroup8(
    lat: &Lattice8,
    mag: &[f32],
    db: f32,
    parity: bool,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
) -> (u16, u8) {
    let mut xval = [0f32; 8];
    let s = signs8(x, w, parity, &mut xval);
    let signs = if parity {
        super::iq2::with_parity(s)
    } else {
        s
    };
    let mut l = [0i8; 8];
    for i in 0..8 {
        l[i] = nearest_level(mag, db, xval[i]);
    }
    let index = match lat.lookup(&l) {
        Ok(g) => *g,
        Err(nb) => first_least(nb, |j| {
            let p = &lat.levels[j as usize];
            let mut d2 = 0f32;
            for i in 0..8 {
                let diff = db * mag[p[i] as usize] - xval[i];
                d2 += w[i] * diff * diff;
            }
            d2
        }),
    };
    let p = &lat.levels[index as usize];
    for i in 0..8 {
        let v = db * mag[p[i] as usize];
        out[i] = if signs & (1 << i) != 0 { -v } else { v };
    }
    (index, s)
}

/// Eight sign bits from seven and their parity.
pub(super) fn with_parity(s7: u8) -> u8 {
    frugal_models::iq::signs_with_parity(s7 as u32)
}

/// The level whose magnitude `db·mag[l]` is nearest `v` (the lowest on ties).
pub(super) fn nearest_level(mag: &[f32], db: f32, v: f32) -> i8 {
    let mut best = 0;
    let mut err = f32::MAX;
    for (l, &m) in mag.iter().enumerate() {
        let e = (db * m - v).abs();
        if e < err {
            err = e;
            best = l;
        }
    }
    best as i8
}

fn iq2_mag() -> &'static [f32; 3] {
    const M: [f32; 3] = [8.0, 25.0, 43.0];
    &M
}

/// [`regroup8`] for group `g` (values `8g..8g+8`) of an IQ2_XXS block.
pub fn regroup_iq2_xxs(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let (ib, k) = (g / 4, g % 4);
    let at = 6 + 8 * ib;
    let aux = u32::from_le_bytes(y[at..at + 4].try_into().expect("4 bytes"));
    let db = frugal_models::iq::f16_at(y, 0) * (0.5 + (aux >> 28) as f32) * 0.25;
    let (index, s) = regroup8(lattice(256), iq2_mag(), db, true, x, w, out);
    y[2 + 8 * ib + k] = index as u8;
    let aux = (aux & !(127 << (7 * k))) | ((s as u32 & 127) << (7 * k));
    y[at..at + 4].copy_from_slice(&aux.to_le_bytes());
}

/// [`regroup8`] for group `g` of an IQ2_XS block.
pub fn regroup_iq2_xs(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let sc = y[66 + g / 4];
    let nib = if (g / 2).is_multiple_of(2) {
        sc & 0xF
    } else {
        sc >> 4
    };
    let db = frugal_models::iq::f16_at(y, 0) * (0.5 + nib as f32) * 0.25;
    let (index, s) = regroup8(lattice(512), iq2_mag(), db, true, x, w, out);
    let q = index | ((s as u16 & 127) << 9);
    y[2 + 2 * g..4 + 2 * g].copy_from_slice(&q.to_le_bytes());
}

/// [`regroup8`] for group `g` of an IQ2_S block.
pub fn regroup_iq2_s(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let sc = y[74 + g / 4];
    let nib = if (g / 2).is_multiple_of(2) {
        sc & 0xF
    } else {
        sc >> 4
    };
    let db = frugal_models::iq::f16_at(y, 0) * (0.5 + nib as f32) * 0.25;
    let (index, s) = regroup8(lattice(1024), iq2_mag(), db, false, x, w, out);
    y[2 + g] = (index & 255) as u8;
    let sh = 2 * (g % 4);
    y[66 + g / 4] = (y[66 + g / 4] & !(3 << sh)) | (((index >> 8) as u8) << sh);
    y[34 + g] = s;
}

/// Sets the top four bits of the little-endian u32 at `at` (a sub-block's scale beside its
/// sign bits, in IQ2_XXS and IQ3_XXS).
pub(super) fn set_top_nibble(y: &mut [u8], at: usize, code: u8) {
    let aux = u32::from_le_bytes(y[at..at + 4].try_into().expect("4 bytes"));
    let aux = (aux & 0x0FFF_FFFF) | (code as u32 & 0xF) << 28;
    y[at..at + 4].copy_from_slice(&aux.to_le_bytes());
}

/// Sets the 4-bit scale of sub-block `s` (32 values) of an IQ2_XXS block.
pub fn set_scale_iq2_xxs(y: &mut [u8], s: usize, code: u8) {
    set_top_nibble(y, 6 + 8 * s, code);
}

/// Sets nibble `s` of the bytes from `at` (sub-block `s`'s 4-bit scale).
pub(super) fn set_nibble(y: &mut [u8], at: usize, s: usize, code: u8) {
    let sh = 4 * (s % 2);
    y[at + s / 2] = (y[at + s / 2] & !(0xF << sh)) | ((code & 0xF) << sh);
}

/// Sets the 4-bit scale of sub-block `s` (16 values) of an IQ2_XS block.
pub fn set_scale_iq2_xs(y: &mut [u8], s: usize, code: u8) {
    set_nibble(y, 66, s, code);
}

/// Sets the 4-bit scale of sub-block `s` (16 values) of an IQ2_S block.
pub fn set_scale_iq2_s(y: &mut [u8], s: usize, code: u8) {
    set_nibble(y, 74, s, code);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised neighbour search picks what ggml's strict-`<` loop picks, on every
    /// neighbour list of the three 2-bit lattices (lists up to 292 long, so several chunks),
    /// with ties (equal points' errors, zero weights) and NaN errors among the candidates.
    #[test]
    fn least_weighted_error_is_the_first_least() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for size in [256, 512, 1024] {
            let lat = lattice(size);
            for (n, nb) in lat.map.iter().filter_map(|m| m.as_ref().err()).enumerate() {
                if nb.is_empty() {
                    continue;
                }
                let x: [f32; 8] = std::array::from_fn(|_| rand() * 5.0);
                let mut w: [f32; 8] = std::array::from_fn(|_| rand());
                match n % 4 {
                    0 => w = [0.0; 8],        // every error 0: the first wins
                    1 => w[n % 8] = f32::NAN, // every error NaN: the first stays
                    2 => w[n % 8] = 0.0,      // ties between points equal elsewhere
                    _ => {}
                }
                let scale = 0.5 + rand();
                let want = first_least(nb, |j| {
                    let p = &lat.points[j as usize];
                    let mut d2 = 0f32;
                    for i in 0..8 {
                        let diff = scale * p[i] - x[i];
                        d2 += w[i] * diff * diff;
                    }
                    d2
                });
                assert_eq!(least_weighted_error(&lat.points, nb, &x, &w, scale), want);
            }
        }
    }

    #[test]
    fn lattices_hold_their_points_and_every_reachable_code_has_neighbours() {
        for (size, nwant) in [(256, 2), (512, 2), (1024, 1), (2048, 3)] {
            let lat = lattice(size);
            assert_eq!(lat.points.len(), size);
            assert_eq!(lat.map.iter().filter(|m| m.is_ok()).count(), size);
            let mut off = 0;
            for code in 0..1usize << 16 {
                let lv = grid8_levels(code as u16);
                if let Err(nb) = &lat.map[code] {
                    if lv.iter().all(|&l| l <= 2) {
                        off += 1;
                        assert!(!nb.is_empty(), "{size}: code {code}");
                        let d: Vec<i32> = nb
                            .iter()
                            .map(|&j| {
                                (0..8)
                                    .map(|k| {
                                        (lat.levels[j as usize][k] as i32 - lv[k] as i32).pow(2)
                                    })
                                    .sum()
                            })
                            .collect();
                        let mut distinct = d.clone();
                        distinct.dedup();
                        assert!(distinct.len() <= nwant && d.windows(2).all(|w| w[0] <= w[1]));
                    }
                }
            }
            assert_eq!(off + size, 6561, "{size}: every point has levels 0..=2");
        }
    }
}
