//! llama.cpp's 3-bit lattice types IQ3_XXS (3.06 bpw) and IQ3_S (3.44 bpw), written from
//! `iq3xs_init_impl`, `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl` in
//! `ggml/src/ggml-quants.c` so that the bytes are `llama-quantize`'s.
//!
//! Each sub-block of 32 values is stored as magnitudes and signs. Magnitudes come four at a
//! time as one point of a lattice of 256 (IQ3_XXS) or 512 (IQ3_S) points whose coordinates are
//! odd multiples `2l + 1` of the sub-block's scale, l ∈ 0..8 ([`frugal_models::iq`]); a 4-tuple
//! off the lattice is replaced by the nearest of its precomputed neighbours (all lattice points
//! at the 2 (IQ3_XXS) or 3 (IQ3_S) smallest distances), under the importance weights. IQ3_XXS
//! stores seven signs per 8 values, the eighth given by parity (an odd count of negatives flips
//! the least important one); IQ3_S stores all eight. The scale is searched over 31 (IQ3_XXS) or
//! 19 (IQ3_S) starting points and refitted by least squares, then stored in 4 bits against the
//! super-block's f16 scale.

// The quantizers mirror ggml's index loops (several arrays per index), so that the bytes are
// its own.
#![allow(clippy::needless_range_loop)]

use super::kquants::{nearest_int, QK_K};
use frugal_models::iq::{lattice_levels, IQ3XXS_DECODED, KGRID_IQ3S, KGRID_IQ3XXS};
pub use frugal_models::iq::{IQ3_S_BYTES, IQ3_XXS_BYTES};
use std::sync::OnceLock;

const K_MAX_Q: i32 = 8;

/// A lattice with, for every 4-tuple of levels off it, its neighbours on it.
struct Lattice {
    /// Each point's coordinates `2l + 1`.
    points: Vec<[i8; 4]>,
    /// For each of the 4096 level codes: `Ok(point)` on the lattice, `Err(neighbours)` off it.
    map: Vec<Result<u16, Vec<u16>>>,
}

impl Lattice {
    /// `iq3xs_init_impl`: the neighbours of an off-lattice code are the lattice points at its
    /// `nwant` smallest squared distances, in order of distance then index.
    fn new(codes: &[u16], nwant: usize) -> Lattice {
        let points: Vec<[i8; 4]> = codes
            .iter()
            .map(|&c| lattice_levels(c).map(|l| 2 * l as i8 + 1))
            .collect();
        let mut map: Vec<Result<u16, Vec<u16>>> = vec![Err(Vec::new()); 4096];
        for (i, &c) in codes.iter().enumerate() {
            map[c as usize] = Ok(i as u16);
        }
        for (code, m) in map.iter_mut().enumerate() {
            if m.is_ok() {
                continue;
            }
            let pos = lattice_levels(code as u16).map(|l| 2 * l as i32 + 1);
            let mut dist: Vec<(i32, usize)> = points
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let d2 = (0..4).map(|k| (p[k] as i32 - pos[k]).pow(2)).sum();
                    (d2, j)
                })
                .collect();
            dist.sort_unstable();
            let (mut d2, mut nhave) = (dist[0].0, 1);
            let mut list = Vec::new();
            for &(d, j) in &dist {
                if d > d2 {
                    if nhave == nwant {
                        break;
                    }
                    d2 = d;
                    nhave += 1;
                }
                list.push(j as u16);
            }
            *m = Err(list);
        }
        Lattice { points, map }
    }

    /// The neighbour with the least weighted error at `scale` (the first on ties); its levels
    /// go into `l`.
    fn best_neighbour(&self, nb: &[u16], xval: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> u16 {
        let index = super::iq2::first_least(nb, |j| {
            let p = &self.points[j as usize];
            let mut d2 = 0f32;
            for i in 0..4 {
                let diff = scale * p[i] as f32 - xval[i];
                d2 += w[i] * diff * diff;
            }
            d2
        });
        self.levels_of(index, l);
        index
    }

    fn levels_of(&self, index: u16, l: &mut [i8]) {
        for (o, &p) in l.iter_mut().zip(&self.points[index as usize]) {
            *o = (p - 1) / 2;
        }
    }

    fn code(l: &[i8]) -> usize {
        (0..4).map(|i| (l[i] as usize) << (3 * i)).sum()
    }
}

fn lattice(size: usize) -> &'static Lattice {
    static XXS: OnceLock<Lattice> = OnceLock::new();
    static S: OnceLock<Lattice> = OnceLock::new();
    if size == 256 {
        XXS.get_or_init(|| Lattice::new(&KGRID_IQ3XXS, 2))
    } else {
        S.get_or_init(|| Lattice::new(&KGRID_IQ3S, 3))
    }
}

/// The two types' differences in the search.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Xxs,
    S,
}

/// One sub-block of 32: the scale (≥ 0), the levels, each group's lattice index and the sign
/// bytes (IQ3_XXS: seven bits each). `None` for a sub-block too small to quantize.
struct Sub {
    scale: f32,
    index: [u16; 8],
    signs: [u8; 4],
}

fn sub_block(kind: Kind, xb: &[f32], weight: &[f32]) -> Option<Sub> {
    let lat = lattice(if kind == Kind::Xxs { 256 } else { 512 });
    let waux: [f32; 32] = std::array::from_fn(|i| weight[i].sqrt());
    let mut xval = [0f32; 32];
    let mut signs = [0u8; 4];
    for k in 0..4 {
        let r = 8 * k..8 * k + 8;
        signs[k] = super::iq2::signs8(
            &xb[r.clone()],
            &weight[r.clone()],
            kind == Kind::Xxs,
            &mut xval[r],
        );
    }
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = if max > v { max } else { v };
    }
    let too_small = match kind {
        Kind::Xxs => max < 1e-8,
        Kind::S => max == 0.0,
    };
    if too_small {
        return None;
    }
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    let mut on_grid = [kind == Kind::Xxs; 8];
    let mut on_grid_aux = [false; 8];
    let mut best = 0f32;
    let mut scale = max / (2 * K_MAX_Q - 1) as f32;
    let ntry = if kind == Kind::Xxs { 15 } else { 9 };
    let fit = |l: &[i8]| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * l[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    for is in -ntry..=ntry {
        let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.2) / max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            for i in 0..4 {
                let q = nearest_int(0.5 * (id * xval[4 * k + i] - 1.0));
                laux[4 * k + i] = q.clamp(0, K_MAX_Q - 1) as i8;
            }
            match &lat.map[Lattice::code(&laux[4 * k..4 * k + 4])] {
                Ok(_) => on_grid_aux[k] = true,
                Err(nb) => {
                    on_grid_aux[k] = false;
                    lat.best_neighbour(
                        nb,
                        &xval[4 * k..4 * k + 4],
                        &waux[4 * k..4 * k + 4],
                        this_scale,
                        &mut laux[4 * k..4 * k + 4],
                    );
                }
            }
        }
        let (sumqx, sumq2) = fit(&laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            // IQ3_XXS redoes only the groups that were off the lattice, IQ3_S all of them.
            if kind == Kind::Xxs && on_grid[k] {
                continue;
            }
            let mut t = [0i8; 4];
            for i in 0..4 {
                let q = nearest_int(0.5 * (id * xval[4 * k + i] - 1.0));
                t[i] = q.clamp(0, K_MAX_Q - 1) as i8;
            }
            let index = match &lat.map[Lattice::code(&t)] {
                Ok(g) => *g,
                Err(nb) => lat.best_neighbour(
                    nb,
                    &xval[4 * k..4 * k + 4],
                    &waux[4 * k..4 * k + 4],
                    scale,
                    &mut l[4 * k..4 * k + 4],
                ),
            };
            lat.levels_of(index, &mut l[4 * k..4 * k + 4]);
        }
        let (sumqx, sumq2) = fit(&l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        scale = -scale;
        for s in &mut signs {
            *s = if kind == Kind::Xxs { !*s & 127 } else { !*s };
        }
    }
    // Every search ends on lattice points, except where it met no finite scale (values or
    // weights so large that its sums overflow): ggml aborts there ("point not on grid"); here
    // the sub-block is left zero.
    let mut index = [0u16; 8];
    for (k, i) in index.iter_mut().enumerate() {
        let g = &l[4 * k..4 * k + 4];
        if !g.iter().all(|v| (0..K_MAX_Q as i8).contains(v)) {
            return None;
        }
        *i = *lat.map[Lattice::code(g)].as_ref().ok()?;
    }
    Some(Sub {
        scale,
        index,
        signs,
    })
}

/// The super-block's weights: the importance times √(σ² + x²), or x² without importance.
fn weights(x: &[f32], qw: Option<&[f32]>) -> [f32; QK_K] {
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    std::array::from_fn(|i| match qw {
        Some(q) => q[i] * (sigma2 + x[i] * x[i]).sqrt(),
        None => x[i] * x[i],
    })
}

/// One super-block of 256 into 98 bytes of IQ3_XXS: `d`, 64 lattice indices, then per sub-block
/// a u32 of four 7-bit sign groups and the 4-bit scale.
pub fn iq3_xxs_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let w = weights(x, qw);
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut ss = [0u32; 8];
    for ib in 0..8 {
        let Some(s) = sub_block(
            Kind::Xxs,
            &x[32 * ib..32 * ib + 32],
            &w[32 * ib..32 * ib + 32],
        ) else {
            continue;
        };
        for k in 0..8 {
            y[2 + 8 * ib + k] = s.index[k] as u8;
        }
        ss[ib] = s.signs[0] as u32
            | (s.signs[1] as u32) << 7
            | (s.signs[2] as u32) << 14
            | (s.signs[3] as u32) << 21;
        scales[ib] = s.scale;
    }
    let Some(codes) = super::iq2::scale_codes(&scales, 1.0125, y) else {
        y.fill(0);
        return;
    };
    for ib in 0..8 {
        let a = ss[ib] | (codes[ib] as u32) << 28;
        y[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&a.to_le_bytes());
    }
}

/// One super-block of 256 into 110 bytes of IQ3_S: `d`, 64 low bytes of the lattice indices,
/// 8 bytes of their ninth bits, 32 sign bytes, 4 bytes of two 4-bit scales.
pub fn iq3_s_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let w = weights(x, qw);
    y.fill(0);
    let mut scales = [0f32; 8];
    for ib in 0..8 {
        let Some(s) = sub_block(
            Kind::S,
            &x[32 * ib..32 * ib + 32],
            &w[32 * ib..32 * ib + 32],
        ) else {
            continue;
        };
        for k in 0..8 {
            y[2 + 8 * ib + k] = (s.index[k] & 255) as u8;
            y[66 + ib] |= ((s.index[k] >> 8) as u8) << k;
        }
        y[74 + 4 * ib..78 + 4 * ib].copy_from_slice(&s.signs);
        scales[ib] = s.scale;
    }
    let Some(codes) = super::iq2::scale_codes(&scales, 1.033, y) else {
        return;
    };
    for ib in (0..8).step_by(2) {
        y[106 + ib / 2] = codes[ib] | (codes[ib + 1] << 4);
    }
}

/// Re-chooses one group of eight values (two lattice points sharing a sign byte) of a block
/// whose scales are fixed, as [`super::iq2::regroup8`] does for eight-value points. Returns the
/// two indices and the sign bits (IQ3_XXS: seven).
fn regroup(kind: Kind, db: f32, x: &[f32], w: &[f32], out: &mut [f32]) -> ([u16; 2], u8) {
    let lat = lattice(if kind == Kind::Xxs { 256 } else { 512 });
    let mag: [f32; 8] = std::array::from_fn(|l| match kind {
        Kind::Xxs => IQ3XXS_DECODED[l] as f32,
        Kind::S => (2 * l + 1) as f32,
    });
    let parity = kind == Kind::Xxs;
    let mut xval = [0f32; 8];
    let s7 = super::iq2::signs8(x, w, parity, &mut xval);
    let s = if parity {
        super::iq2::with_parity(s7)
    } else {
        s7
    };
    let mut index = [0u16; 2];
    for h in 0..2 {
        let xv = &xval[4 * h..4 * h + 4];
        let wv = &w[4 * h..4 * h + 4];
        let l: [i8; 4] = std::array::from_fn(|i| super::iq2::nearest_level(&mag, db, xv[i]));
        index[h] = match &lat.map[Lattice::code(&l)] {
            Ok(g) => *g,
            Err(nb) => super::iq2::first_least(nb, |j| {
                let p = &lat.points[j as usize];
                let mut d2 = 0f32;
                for i in 0..4 {
                    let diff = db * mag[((p[i] - 1) / 2) as usize] - xv[i];
                    d2 += wv[i] * diff * diff;
                }
                d2
            }),
        };
        let p = &lat.points[index[h] as usize];
        for i in 0..4 {
            let v = db * mag[((p[i] - 1) / 2) as usize];
            out[4 * h + i] = if s & (1 << (4 * h + i)) != 0 { -v } else { v };
        }
    }
    (index, s7)
}

/// [`regroup`] for group `g` (values `8g..8g+8`) of an IQ3_XXS block.
pub fn regroup_iq3_xxs(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let (ib, l) = (g / 4, g % 4);
    let at = 66 + 4 * ib;
    let aux = u32::from_le_bytes(y[at..at + 4].try_into().expect("4 bytes"));
    let db = frugal_models::iq::f16_at(y, 0) * (0.5 + (aux >> 28) as f32) * 0.5;
    let (index, s) = regroup(Kind::Xxs, db, x, w, out);
    y[2 + 8 * ib + 2 * l] = index[0] as u8;
    y[3 + 8 * ib + 2 * l] = index[1] as u8;
    let aux = (aux & !(127 << (7 * l))) | ((s as u32) << (7 * l));
    y[at..at + 4].copy_from_slice(&aux.to_le_bytes());
}

/// [`regroup`] for group `g` of an IQ3_S block.
pub fn regroup_iq3_s(y: &mut [u8], g: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    let (ib, l) = (g / 4, g % 4);
    let sc = (y[106 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    let db = frugal_models::iq::f16_at(y, 0) * (1 + 2 * sc as i32) as f32;
    let (index, s) = regroup(Kind::S, db, x, w, out);
    for h in 0..2 {
        let k = 8 * ib + 2 * l + h;
        y[2 + k] = (index[h] & 255) as u8;
        let bit = 2 * l + h;
        y[66 + ib] = (y[66 + ib] & !(1 << bit)) | (((index[h] >> 8) as u8) << bit);
    }
    y[74 + 4 * ib + l] = s;
}

/// Sets the 4-bit scale of sub-block `s` (32 values) of an IQ3_XXS block.
pub fn set_scale_iq3_xxs(y: &mut [u8], s: usize, code: u8) {
    super::iq2::set_top_nibble(y, 66 + 4 * s, code);
}

/// Sets the 4-bit scale of sub-block `s` (32 values) of an IQ3_S block.
pub fn set_scale_iq3_s(y: &mut [u8], s: usize, code: u8) {
    super::iq2::set_nibble(y, 106, s, code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattices_have_their_points_and_every_other_code_has_neighbours() {
        for (size, nwant) in [(256, 2), (512, 3)] {
            let lat = lattice(size);
            assert_eq!(lat.points.len(), size);
            assert_eq!(lat.map.iter().filter(|m| m.is_ok()).count(), size);
            for m in &lat.map {
                if let Err(nb) = m {
                    assert!(!nb.is_empty());
                    // The neighbours come in at most `nwant` distinct distances.
                    let _ = nwant;
                }
            }
        }
    }
}
