//! llama.cpp's non-linear 4-bit types, IQ4_NL and IQ4_XS, written from `quantize_row_iq4_nl_impl`
//! in `ggml/src/ggml-quants.c` (what `quantize_iq4_nl`/`quantize_iq4_xs`, and so
//! `llama-quantize`, run): each block of 32 gets the scale that best fits the 16-value table
//! `kvalues_iq4nl` under the importance weights, searched over 15 starting scales; IQ4_XS then
//! stores those scales as 6-bit multiples of one f16 super-block scale. Every float operation is
//! done in the order ggml does it, so the bytes are llama.cpp's.
//!
//! A level is an index into the table: level `l` of a sub-block with scale `d` decodes to
//! `d · KVALUES_IQ4NL[l]` ([`super::codec::Codec::values`]).

use super::kquants::{f16_bits, nearest_int, QK_K};
pub use frugal_models::iq::{IQ4_NL_BYTES, IQ4_XS_BYTES, KVALUES_IQ4NL};

const GROUP_MAX_EPS: f32 = 1e-15;
const NTRY: i32 = 7;

/// The index of the table value nearest `x`, exactly as ggml's `best_index_int8` bisection
/// decides (the upper of two equally near values), without its branches: the bisection's upper
/// end is the first value above `x`, i.e. the count of values at or below it (the table rises
/// strictly). [`best_index_bisect`] is the reference it is tested against.
#[inline]
pub fn best_index(val: &[i8], x: f32) -> usize {
    let n = val.len();
    let mut mu = 0usize;
    for &v in val {
        mu += usize::from(v as f32 <= x);
    }
    if mu == 0 {
        // Below the table, or NaN (which the bisection walks to the top).
        return if x.is_nan() { n - 1 } else { 0 };
    }
    if mu == n {
        return n - 1;
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// ggml's `best_index_int8` as written: bisection.
pub fn best_index_bisect(val: &[i8], x: f32) -> usize {
    let n = val.len();
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[n - 1] as f32 {
        return n - 1;
    }
    let (mut ml, mut mu) = (0, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// Twice the boundaries between neighbouring table values, `val[i] + val[i + 1]`: integers, so
/// `x` is nearer `val[i + 1]` (or as near) exactly when `floor(2x)` reaches the boundary.
const IQ4NL_LO: i32 = KVALUES_IQ4NL[0] as i32 + KVALUES_IQ4NL[1] as i32;
const IQ4NL_HI: i32 = KVALUES_IQ4NL[14] as i32 + KVALUES_IQ4NL[15] as i32;
/// Slots for `floor(2x)` in `[LO − 1, HI]` (435 of them), rounded up to a power of two so a mask
/// keeps every index in bounds without a check.
const IQ4NL_SLOTS: usize = 512;

/// [`iq4nl_slot`]'s tables: slot `floor(2x) − (LO − 1)` holds the count of boundaries at or
/// below `floor(2x)`, which is the nearest value's index, and that value. (Slots past `HI` are
/// never reached.)
static IQ4NL_INDEX: [u8; IQ4NL_SLOTS] = {
    let mut t = [0u8; IQ4NL_SLOTS];
    let mut s = 0;
    while s < IQ4NL_SLOTS {
        let floor2x = s as i32 + IQ4NL_LO - 1;
        let mut i = 0;
        while i < 15 {
            if KVALUES_IQ4NL[i] as i32 + KVALUES_IQ4NL[i + 1] as i32 <= floor2x {
                t[s] += 1;
            }
            i += 1;
        }
        s += 1;
    }
    t
};
static IQ4NL_VALUE: [f32; IQ4NL_SLOTS] = {
    let mut t = [0f32; IQ4NL_SLOTS];
    let mut s = 0;
    while s < IQ4NL_SLOTS {
        t[s] = KVALUES_IQ4NL[IQ4NL_INDEX[s] as usize] as f32;
        s += 1;
    }
    t
};

/// The table slot of `x` (see [`iq4nl_index`]): branch-free, so a loop over candidates
/// vectorises.
#[inline(always)]
fn iq4nl_slot(x: f32) -> usize {
    // Clamp 2x to [LO − 1, HI], a NaN to HI: `max` takes the other operand of a NaN.
    let z = -((-2.0 * x).max(-IQ4NL_HI as f32).min((1 - IQ4NL_LO) as f32));
    // floor of a value within [−232, 202]: truncate, then step down where that rounded up.
    let t = z as i32;
    let t = t - i32::from((t as f32) > z);
    (t - (IQ4NL_LO - 1)) as usize & (IQ4NL_SLOTS - 1)
}

/// [`best_index`] for `KVALUES_IQ4NL`, by table: ggml's last comparison
/// `x − val[i] < val[i + 1] − x` near a boundary `m = (val[i] + val[i + 1]) / 2` is exact
/// arithmetic there (|x| ≥ 4 and both differences ≤ 13, so neither rounds), i.e. `x < m`, i.e.
/// `floor(2x) < 2m`; away from a boundary rounding cannot change it. Every input gives the
/// bisection's answer, NaN included (the bisection sends it to the top); tested on every f32.
#[inline(always)]
pub fn iq4nl_index(x: f32) -> usize {
    IQ4NL_INDEX[iq4nl_slot(x)] as usize
}

frugal_models::avx512_dispatch! {
    /// One super-block of `x.len()` values (32 for IQ4_NL, 256 for IQ4_XS) in sub-blocks of 32:
    /// returns the f16 scale's value and fills the sub-block scale codes (IQ4_XS: `ls + 32`) and
    /// the levels `l`. Compiled for AVX-512, AVX2 and baseline x86-64 (the same operations in the
    /// same order: the 16 candidate scales are one vector, the table lookups gathers).
    fn iq4_impl(x: &[f32], qw: Option<&[f32]>, codes: &mut [u8], l: &mut [u8]) -> f32 {
        let values = &KVALUES_IQ4NL;
        let v0 = values[0] as f32;
        let n = x.len();
        let mut sigma2 = 0f32;
        for &v in x {
            sigma2 += v * v;
        }
        sigma2 *= 2.0 / n as f32;
        let nsub = n / 32;
        let mut scales = [0f32; QK_K / 32];
        let mut weight = [0f32; 32];
        let (mut max_scale, mut amax_scale) = (0f32, 0f32);
        for ib in 0..nsub {
            let xb = &x[32 * ib..32 * ib + 32];
            let lb = &mut l[32 * ib..32 * ib + 32];
            match qw {
                Some(qw) => {
                    let qw = &qw[32 * ib..32 * ib + 32];
                    for j in 0..32 {
                        weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                    }
                }
                None => {
                    for j in 0..32 {
                        weight[j] = xb[j] * xb[j];
                    }
                }
            }
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut d = -max / v0;
            let id = 1.0 / d;
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for j in 0..32 {
                let li = iq4nl_index(id * xb[j]);
                lb[j] = li as u8;
                let q = values[li] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
            let mut best = d * sumqx;
            // The 15 candidate scales side by side, a sixteenth lane idle: each sum still runs in
            // element order, so the choice is ggml's, but the candidates are one vector.
            const NCAND: usize = 2 * NTRY as usize + 1;
            let ids: [f32; 16] = std::array::from_fn(|k| {
                (k.min(NCAND - 1) as i32 - NTRY + values[0] as i32) as f32 / max
            });
            let mut sqx = [0f32; 16];
            let mut sq2 = [0f32; 16];
            for j in 0..32 {
                let (w, xj) = (weight[j], xb[j]);
                for k in 0..16 {
                    let q = IQ4NL_VALUE[iq4nl_slot(ids[k] * xj)];
                    sqx[k] += w * q * xj;
                    sq2[k] += w * q * q;
                }
            }
            for k in 0..NCAND {
                if sq2[k] > 0.0 && sqx[k] * sqx[k] > best * sq2[k] {
                    d = sqx[k] / sq2[k];
                    best = d * sqx[k];
                }
            }
            scales[ib] = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        if nsub > 1 {
            let d = -max_scale / 32.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for ib in 0..nsub {
                let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
                let dl = d * ls as f32;
                let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
                for (o, &v) in l[32 * ib..32 * ib + 32].iter_mut().zip(&x[32 * ib..]) {
                    *o = iq4nl_index(idl * v) as u8;
                }
                codes[ib] = (ls + 32) as u8;
            }
            d
        } else {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for (o, &v) in l.iter_mut().zip(x) {
                *o = iq4nl_index(id * v) as u8;
            }
            scales[0]
        }
    }
}

fn pack_nibbles(l: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// One block of 32 into 18 bytes of IQ4_NL (`quantize_iq4_nl`).
pub fn iq4_nl_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; 32];
    let d = iq4_impl(x, qw, &mut [0u8; 1], &mut l);
    y[..2].copy_from_slice(&f16_bits(d));
    pack_nibbles(&l, &mut y[2..18]);
}

/// One super-block of 256 into 136 bytes of IQ4_XS (`quantize_iq4_xs`).
pub fn iq4_xs_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut codes = [0u8; 8];
    let d = iq4_impl(x, qw, &mut codes, &mut l);
    y[..2].copy_from_slice(&f16_bits(d));
    set_xs_codes(y, &codes);
    for (ib, lb) in l.chunks_exact(32).enumerate() {
        pack_nibbles(lb, &mut y[8 + 16 * ib..8 + 16 * (ib + 1)]);
    }
}

fn set_xs_codes(y: &mut [u8], codes: &[u8; 8]) {
    let mut h = 0u16;
    y[4..8].fill(0);
    for (ib, &c) in codes.iter().enumerate() {
        y[4 + ib / 2] |= (c & 0xF) << (4 * (ib % 2));
        h |= ((c >> 4) as u16) << (2 * ib);
    }
    y[2..4].copy_from_slice(&h.to_le_bytes());
}

/// Scales and levels, for GPTQ ([`super::codec::LevelAccess`]); a level indexes the table.
pub(crate) mod access {
    use super::*;
    use frugal_models::iq::{iq4_xs_sub_scales, unpack_nibbles};

    fn f16_at(b: &[u8]) -> f32 {
        half::f16::from_le_bytes([b[0], b[1]]).to_f32()
    }
    pub fn iq4_nl_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y), 0.0);
    }
    pub fn iq4_nl_levels(y: &[u8], q: &mut [u8]) {
        unpack_nibbles(&y[2..18], q)
    }
    pub fn iq4_nl_set_levels(y: &mut [u8], q: &[u8]) {
        pack_nibbles(q, &mut y[2..18])
    }
    pub fn iq4_xs_scales(y: &[u8], o: &mut [(f32, f32)]) {
        let d = f16_at(y);
        for (o, ls) in o.iter_mut().zip(iq4_xs_sub_scales(y)) {
            *o = (d * ls as f32, 0.0);
        }
    }
    pub fn iq4_xs_levels(y: &[u8], q: &mut [u8]) {
        for (ib, qb) in q.chunks_exact_mut(32).enumerate() {
            unpack_nibbles(&y[8 + 16 * ib..8 + 16 * (ib + 1)], qb);
        }
    }
    pub fn iq4_xs_set_levels(y: &mut [u8], q: &[u8]) {
        for (ib, qb) in q.chunks_exact(32).enumerate() {
            pack_nibbles(qb, &mut y[8 + 16 * ib..8 + 16 * (ib + 1)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_is_ggmls_bisection() {
        let v = &KVALUES_IQ4NL;
        let mut xs: Vec<f32> = (-1500..1500).map(|k| k as f32 / 10.0).collect();
        // Every table value, every midpoint (the ties), their neighbours, and the extremes.
        for i in 0..16 {
            let a = v[i] as f32;
            xs.extend([a, a.next_up(), a.next_down()]);
            if i < 15 {
                let m = (a + v[i + 1] as f32) / 2.0;
                xs.extend([m, m.next_up(), m.next_down()]);
            }
        }
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e30,
            -1e30,
        ]);
        for x in xs {
            assert_eq!(best_index(v, x), best_index_bisect(v, x), "{x}");
            assert_eq!(iq4nl_index(x), best_index_bisect(v, x), "{x}");
        }
    }

    /// The table's index against the bisection on every float within 4,096 steps of each
    /// boundary and table value (where rounding could matter), and on 2^22 spread over every
    /// exponent and sign. (All 2^32 floats agree too, checked by hand in release.)
    #[test]
    fn the_tables_index_is_ggmls_bisection() {
        let v = &KVALUES_IQ4NL;
        let check = |x: f32| assert_eq!(iq4nl_index(x), best_index_bisect(v, x), "{x:e}");
        for i in 0..16 {
            let a = v[i] as f32;
            let mut around = vec![a];
            if i < 15 {
                around.push((a + v[i + 1] as f32) / 2.0);
            }
            for c in around {
                let (mut up, mut down) = (c, c);
                for _ in 0..4096 {
                    check(up);
                    check(down);
                    up = up.next_up();
                    down = down.next_down();
                }
            }
        }
        for k in 0..1u32 << 22 {
            check(f32::from_bits(k.wrapping_mul(0x9E37_79B9) | (k & 1) << 31));
        }
    }

    #[test]
    fn best_index_is_the_nearest_value() {
        let v = &KVALUES_IQ4NL;
        for k in -1500..1500 {
            let x = k as f32 / 10.0;
            let got = best_index(v, x);
            let d = |i: usize| (x - v[i] as f32).abs();
            assert!((0..16).all(|i| d(got) <= d(i)), "{x}: {got}");
        }
    }
}
