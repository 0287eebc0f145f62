//! Weight blocks unpacked into the form the dot products read: one byte per value (the code as
//! stored, made unsigned where the type allows, so one `maddubs` multiplies it with an 8-bit
//! activation), and the block's scales — the formulas of ggml's `dequantize_row_*`, rearranged
//! so that a value is `d · (w − z) + m` (legacy blocks of 32) or
//! `(d · sc) · (w − z) − dmin · mn` (k-quant super-blocks of 256, `sc` and `mn` per 16 values).
//! [`Prepared::value`] evaluates exactly those expressions, tested equal bit for bit to
//! candle's (ggml's) dequantization of every type.

// Index loops over fixed-size arrays: they compile to vector instructions, where the same
// loops written with zipped iterators over split slices stayed scalar (measured: unpacking was
// 63 % of a one-row product's time before).
#![allow(clippy::needless_range_loop)]

use super::BlockType;

/// Every f16 as f32, as ggml keeps it: a table lookup instead of a conversion per block.
pub(super) fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect()
    })
}

#[inline(always)]
pub(super) fn f16_at(t: &[f32], b: &[u8], at: usize) -> f32 {
    t[usize::from(u16::from_le_bytes([b[at], b[at + 1]]))]
}

/// Rows of one weight, unpacked (rows concatenated; a row's blocks follow each other).
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    /// One code per value: two's-complement `i8` for the signed legacy types (Q4_0, Q5_0,
    /// Q8_0), else unsigned (at most 63).
    pub w: Vec<u8>,
    /// Per block: the scale `d` (legacy: per 32 values; k-quants: per 256).
    pub d: Vec<f32>,
    /// Per block: the offset `m` of Q4_1/Q5_1, or the k-quants' `dmin`; 0 otherwise.
    pub m: Vec<f32>,
    /// k-quants, per 16 values: the integer scale `sc`.
    pub sc: Vec<i16>,
    /// k-quants, per 16 values: `z · sc`, the zero point's share (Q3_K z = 4, Q6_K z = 32).
    pub zsc: Vec<i16>,
    /// k-quants, per 16 values: the integer minimum `mn` (Q2_K, Q4_K, Q5_K).
    pub mn: Vec<i16>,
}

impl Prepared {
    /// Unpacks `rows` (whole rows of blocks of `ty`, `n_in` values each), replacing what was
    /// held.
    pub fn fill(&mut self, ty: BlockType, rows: &[u8], n_in: usize) {
        let blocks = rows.len() / ty.block_bytes();
        debug_assert_eq!(blocks * ty.block_values() % n_in, 0);
        let values = blocks * ty.block_values();
        self.w.resize(values, 0);
        self.d.resize(values / ty.scale_block(), 0.0);
        self.m.resize(values / ty.scale_block(), 0.0);
        let groups = if ty.is_k() { blocks * 16 } else { 0 };
        self.sc.resize(groups, 0);
        self.zsc.resize(groups, 0);
        self.mn.resize(groups, 0);
        fill_blocks(ty, rows, self);
    }

    /// Value `j` of the prepared values (the reference the tests hold against ggml's
    /// dequantization): ggml's expression for the type, term for term.
    pub fn value(&self, ty: BlockType, j: usize) -> f32 {
        if ty.is_k() {
            let (b, g) = (j / 256, j / 16);
            let z = ty.zero_point();
            (self.d[b] * f32::from(self.sc[g])) * f32::from(i16::from(self.w[j]) - z)
                - self.m[b] * f32::from(self.mn[g])
        } else if ty.is_signed() {
            f32::from(self.w[j] as i8) * self.d[j / 32]
        } else {
            f32::from(self.w[j]) * self.d[j / 32] + self.m[j / 32]
        }
    }
}

crate::avx2_dispatch! {
    /// [`Prepared::fill`]'s unpacking, compiled for AVX2 too (the byte loops vectorise).
    fn fill_blocks(ty: BlockType, rows: &[u8], p: &mut Prepared) {
        let bb = ty.block_bytes();
        let t = f16_table();
        if ty.is_k() {
            let z = ty.zero_point();
            for (i, b) in rows.chunks_exact(bb).enumerate() {
                let w: &mut [u8; 256] =
                    (&mut p.w[i * 256..(i + 1) * 256]).try_into().expect("256 values");
                let sc: &mut [i16; 16] =
                    (&mut p.sc[i * 16..(i + 1) * 16]).try_into().expect("16 groups");
                let mn: &mut [i16; 16] =
                    (&mut p.mn[i * 16..(i + 1) * 16]).try_into().expect("16 groups");
                let (d, dmin) = kquant(ty, t, b, w, sc, mn);
                p.d[i] = d;
                p.m[i] = dmin;
                for (zs, s) in p.zsc[i * 16..(i + 1) * 16].iter_mut().zip(sc.iter()) {
                    *zs = z * *s;
                }
            }
        } else if ty == BlockType::IQ4_XS {
            for (i, b) in rows.chunks_exact(bb).enumerate() {
                let d = f16_at(t, b, 0);
                let ls = crate::iq::iq4_xs_sub_scales(b);
                for s in 0..8 {
                    let w: &mut [u8; 32] = (&mut p.w[256 * i + 32 * s..256 * i + 32 * (s + 1)])
                        .try_into()
                        .expect("32 values");
                    iq4_values(arr(&b[8 + 16 * s..24 + 16 * s]), w);
                    // ggml's `dl = d · (ls − 32)`: exact in f32 (11 by 6 significant bits).
                    p.d[8 * i + s] = d * ls[s] as f32;
                    p.m[8 * i + s] = 0.0;
                }
            }
        } else {
            for (i, (b, w)) in rows.chunks_exact(bb).zip(p.w.chunks_exact_mut(32)).enumerate() {
                let (d, m) = legacy(ty, t, b, w.try_into().expect("32 values"));
                p.d[i] = d;
                p.m[i] = m;
            }
        }
    }
}

/// `lo[l] = q[l] & 15 − off`, `hi[l] = q[l] >> 4 − off` (wrapping), in loops over fixed-size
/// arrays that compile to vector instructions.
#[inline(always)]
fn nibbles<const N: usize>(q: &[u8; N], lo: &mut [u8; N], hi: &mut [u8; N], off: u8) {
    for l in 0..N {
        lo[l] = (q[l] & 0x0F).wrapping_sub(off);
    }
    for l in 0..N {
        hi[l] = (q[l] >> 4).wrapping_sub(off);
    }
}

fn arr<const N: usize>(s: &[u8]) -> &[u8; N] {
    s.try_into().expect("a block's field")
}

fn arr_mut<const N: usize>(s: &mut [u8]) -> &mut [u8; N] {
    s.try_into().expect("a block's field")
}

/// One legacy block of 32 values: its codes (centred for the `_0` types, as ggml subtracts
/// 8 or 16), `d`, and `m` (0 for the `_0` types).
#[inline(always)]
fn legacy(ty: BlockType, t: &[f32], b: &[u8], w: &mut [u8; 32]) -> (f32, f32) {
    let d = f16_at(t, b, 0);
    match ty {
        BlockType::Q8_0 => {
            w.copy_from_slice(&b[2..34]);
            (d, 0.0)
        }
        BlockType::Q4_0 | BlockType::Q4_1 => {
            let (m, qs, off) = if ty == BlockType::Q4_1 {
                (f16_at(t, b, 2), &b[4..20], 0u8)
            } else {
                (0.0, &b[2..18], 8u8)
            };
            let (lo, hi) = w.split_at_mut(16);
            nibbles::<16>(arr(qs), arr_mut(lo), arr_mut(hi), off);
            (d, m)
        }
        BlockType::Q5_0 | BlockType::Q5_1 => {
            let (m, at, off) = if ty == BlockType::Q5_1 {
                (f16_at(t, b, 2), 4, 0u8)
            } else {
                (0.0, 2, 16u8)
            };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let (lo, hi) = w.split_at_mut(16);
            let (lo, hi): (&mut [u8; 16], &mut [u8; 16]) = (arr_mut(lo), arr_mut(hi));
            nibbles::<16>(arr(&b[at + 4..at + 20]), lo, hi, 0);
            for j in 0..16 {
                lo[j] = (lo[j] | ((((qh >> j) << 4) & 0x10) as u8)).wrapping_sub(off);
            }
            for j in 0..16 {
                hi[j] = (hi[j] | (((qh >> (j + 12)) & 0x10) as u8)).wrapping_sub(off);
            }
            (d, m)
        }
        BlockType::IQ4_NL => {
            iq4_values(arr(&b[2..18]), w);
            (d, 0.0)
        }
        _ => unreachable!("{ty:?} is not a block of 32"),
    }
}

/// Sixteen bytes of IQ4 nibbles as the table values they index (`kvalues_iq4nl`, two's
/// complement): value j from the low nibble of byte j, value j + 16 from its high nibble. With
/// SSSE3 (every x86-64 CPU with AVX2) a table lookup per sixteen values (`pshufb`).
#[inline(always)]
fn iq4_values(qs: &[u8; 16], w: &mut [u8; 32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3 (checked); the loads and stores are of 16 bytes within
        // `qs` and `w`.
        unsafe { iq4_values_ssse3(qs, w) };
        return;
    }
    iq4_values_plain(qs, w);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn iq4_values_ssse3(qs: &[u8; 16], w: &mut [u8; 32]) {
    use std::arch::x86_64::*;
    let table = _mm_loadu_si128(crate::iq::KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let q = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_shuffle_epi8(table, _mm_and_si128(q, m));
    let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), m));
    _mm_storeu_si128(w.as_mut_ptr() as *mut __m128i, lo);
    _mm_storeu_si128(w.as_mut_ptr().add(16) as *mut __m128i, hi);
}

/// [`iq4_values`]' plain reference.
fn iq4_values_plain(qs: &[u8; 16], w: &mut [u8; 32]) {
    let (lo, hi) = w.split_at_mut(16);
    let (lo, hi): (&mut [u8; 16], &mut [u8; 16]) = (arr_mut(lo), arr_mut(hi));
    nibbles::<16>(qs, lo, hi, 0);
    for v in lo.iter_mut().chain(hi.iter_mut()) {
        *v = crate::iq::KVALUES_IQ4NL[usize::from(*v)] as u8;
    }
}

/// Q3_K's sixteen 6-bit scales (from its 12 bytes of scales, ggml's `kmask1`/`kmask2`
/// unpacking), minus 32.
pub(super) fn q3k_scales(scales: &[u8]) -> [i16; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            scales[4 * i],
            scales[4 * i + 1],
            scales[4 * i + 2],
            scales[4 * i + 3],
        ])
    };
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let aux = [
        (a0 & K2) | ((tmp & K1) << 4),
        (a1 & K2) | (((tmp >> 2) & K1) << 4),
        ((a0 >> 4) & K2) | (((tmp >> 4) & K1) << 4),
        ((a1 >> 4) & K2) | (((tmp >> 6) & K1) << 4),
    ];
    std::array::from_fn(|g| i16::from(aux[g / 4].to_le_bytes()[g % 4] as i8) - 32)
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (of 32 values).
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// A k-quant super-block's scales: `d`, `dmin` (0 where the type has none), and per group of
/// 16 the integer scale `sc` and minimum `mn` (0 where the type has a zero point instead).
#[inline(always)]
pub(super) fn k_scales(
    ty: BlockType,
    t: &[f32],
    b: &[u8],
    sc: &mut [i16; 16],
    mn: &mut [i16; 16],
) -> (f32, f32) {
    match ty {
        BlockType::Q4_K | BlockType::Q5_K => {
            let scales = &b[4..16];
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, scales);
                sc[2 * j..2 * j + 2].fill(i16::from(s));
                mn[2 * j..2 * j + 2].fill(i16::from(m));
            }
            (f16_at(t, b, 0), f16_at(t, b, 2))
        }
        BlockType::Q6_K => {
            for (s, &v) in sc.iter_mut().zip(&b[192..208]) {
                *s = i16::from(v as i8);
            }
            mn.fill(0);
            (f16_at(t, b, 208), 0.0)
        }
        BlockType::Q2_K => {
            for ((s, m), &v) in sc.iter_mut().zip(mn.iter_mut()).zip(&b[0..16]) {
                *s = i16::from(v & 0x0F);
                *m = i16::from(v >> 4);
            }
            (f16_at(t, b, 80), f16_at(t, b, 82))
        }
        BlockType::Q3_K => {
            *sc = q3k_scales(&b[96..108]);
            mn.fill(0);
            (f16_at(t, b, 108), 0.0)
        }
        _ => unreachable!("{ty:?} is a legacy type"),
    }
}

/// One k-quant super-block of 256 values: codes (unsigned), per-16 scales and minima, and
/// `(d, dmin)`; the zero point is [`BlockType::zero_point`].
#[inline(always)]
fn kquant(
    ty: BlockType,
    t: &[f32],
    b: &[u8],
    w: &mut [u8; 256],
    sc: &mut [i16; 16],
    mn: &mut [i16; 16],
) -> (f32, f32) {
    let (d, dmin) = k_scales(ty, t, b, sc, mn);
    match ty {
        BlockType::Q4_K | BlockType::Q5_K => {
            let ql = if ty == BlockType::Q5_K {
                &b[48..176]
            } else {
                &b[16..144]
            };
            for c in 0..4 {
                let (lo, hi) = w[c * 64..(c + 1) * 64].split_at_mut(32);
                let (lo, hi): (&mut [u8; 32], &mut [u8; 32]) = (arr_mut(lo), arr_mut(hi));
                nibbles::<32>(arr(&ql[c * 32..(c + 1) * 32]), lo, hi, 0);
                if ty == BlockType::Q5_K {
                    let qh: &[u8; 32] = arr(&b[16..48]);
                    for l in 0..32 {
                        lo[l] |= ((qh[l] >> (2 * c)) & 1) << 4;
                    }
                    for l in 0..32 {
                        hi[l] |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                }
            }
        }
        BlockType::Q6_K => {
            let (ql, qh) = (&b[0..128], &b[128..192]);
            for h in 0..2 {
                let ql: &[u8; 64] = arr(&ql[h * 64..(h + 1) * 64]);
                let qh: &[u8; 32] = arr(&qh[h * 32..(h + 1) * 32]);
                let y: &mut [u8; 128] = arr_mut(&mut w[h * 128..(h + 1) * 128]);
                for l in 0..32 {
                    y[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                }
                for l in 0..32 {
                    y[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                }
                for l in 0..32 {
                    y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                }
                for l in 0..32 {
                    y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
        }
        BlockType::Q2_K => {
            let qs = &b[16..80];
            for h in 0..2 {
                let q = &qs[h * 32..(h + 1) * 32];
                for j in 0..4 {
                    let y: &mut [u8; 32] =
                        arr_mut(&mut w[h * 128 + j * 32..h * 128 + (j + 1) * 32]);
                    let q: &[u8; 32] = arr(q);
                    for l in 0..32 {
                        y[l] = (q[l] >> (2 * j)) & 3;
                    }
                }
            }
        }
        BlockType::Q3_K => {
            let (hm, qs) = (&b[0..32], &b[32..96]);
            for h in 0..2 {
                let q = &qs[h * 32..(h + 1) * 32];
                for j in 0..4 {
                    let bit = 1u8 << (h * 4 + j);
                    let y: &mut [u8; 32] =
                        arr_mut(&mut w[h * 128 + j * 32..h * 128 + (j + 1) * 32]);
                    let (q, hm): (&[u8; 32], &[u8; 32]) = (arr(q), arr(hm));
                    for l in 0..32 {
                        y[l] = ((q[l] >> (2 * j)) & 3) | (u8::from(hm[l] & bit != 0) << 2);
                    }
                }
            }
        }
        _ => unreachable!("{ty:?} is a legacy type"),
    }
    (d, dmin)
}

#[cfg(test)]
mod tests {
    /// The table lookup by `pshufb` gives the plain reference's bytes for every nibble in both
    /// halves of a byte.
    #[test]
    fn iq4_lookup_equals_the_reference() {
        for start in 0..=255u8 {
            let qs: [u8; 16] = std::array::from_fn(|j| start.wrapping_add(17 * j as u8));
            let (mut fast, mut plain) = ([0u8; 32], [0u8; 32]);
            super::iq4_values(&qs, &mut fast);
            super::iq4_values_plain(&qs, &mut plain);
            assert_eq!(fast, plain, "{qs:?}");
            assert_eq!(
                plain[0] as i8,
                crate::iq::KVALUES_IQ4NL[usize::from(qs[0] & 15)]
            );
            assert_eq!(
                plain[16] as i8,
                crate::iq::KVALUES_IQ4NL[usize::from(qs[0] >> 4)]
            );
        }
    }
}
