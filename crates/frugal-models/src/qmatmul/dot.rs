//! The 8-bit activations ggml pairs with each weight type, and the dot products of a prepared
//! weight row ([`super::prepare::Prepared`]) with one activation row: a plain reference and an
//! AVX2 kernel (`maddubs`: 32 products of an unsigned and a signed byte per instruction, the
//! integer sums scaled per block in f32) and an AVX-512 VNNI one (`vpdpbusd`/`vpdpwssd`: 64 per
//! instruction, the widening sums fused), tested against it.

use crate::linear::round_half_away;

/// Which 8-bit blocks a weight type's activations are rounded to (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    /// Blocks of 32: `d = f16(max|x| / 127)`, `q = round(x / d)` (Q4_0, Q5_0, Q8_0).
    Q8_0,
    /// Q8_0 with the block's `s = f16(d · Σq)` for the offset term of Q4_1 and Q5_1.
    Q8_1,
    /// Blocks of 256: `d = max / −127` in f32, `q = nearest(x / d)`, and sums of 16 (k-quants).
    Q8K,
    /// Q8_K's rounding with its scale repeated for each 32 values (IQ4_XS, whose prepared rows
    /// are blocks of 32 with a scale each, multiplied by the blocks-of-32 kernels).
    Q8K32,
}

impl ActFormat {
    /// The one rounding whose rows serve the kernels of both formats: Q8_1's rows carry all of
    /// Q8_0's (the same codes and scales, the block sums besides).
    pub fn shared(self, other: ActFormat) -> Option<ActFormat> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (ActFormat::Q8_0, ActFormat::Q8_1) | (ActFormat::Q8_1, ActFormat::Q8_0) => {
                Some(ActFormat::Q8_1)
            }
            _ => None,
        }
    }

    /// Values per scale.
    pub fn block(self) -> usize {
        match self {
            ActFormat::Q8_0 | ActFormat::Q8_1 | ActFormat::Q8K32 => 32,
            ActFormat::Q8K => 256,
        }
    }
}

/// Rows of activations rounded to 8 bits (rows concatenated).
#[derive(Debug, Default, Clone)]
pub struct Activations {
    pub q: Vec<i8>,
    /// Per block of [`ActFormat::block`] values.
    pub d: Vec<f32>,
    /// Q8_1's `s` per block of 32 (0 for the other formats).
    pub s: Vec<f32>,
    /// Σq per 16 values.
    pub bsums: Vec<i16>,
}

impl Activations {
    /// Rounds the rows of `x` (`n_in` values each, a multiple of 256 for [`ActFormat::Q8K`]
    /// and [`ActFormat::Q8K32`], of 32 otherwise), in parallel over rows. The values `q · d` are those
    /// [`crate::linear::ActRounding`] gives for the same format.
    pub fn quantize(fmt: ActFormat, x: &[f32], n_in: usize) -> Activations {
        use rayon::prelude::*;
        let rows = x.len() / n_in;
        let nb = n_in / fmt.block();
        let mut a = Activations {
            q: vec![0; x.len()],
            d: vec![0.0; rows * nb],
            s: vec![0.0; rows * nb],
            bsums: vec![0; x.len() / 16],
        };
        a.q.par_chunks_mut(n_in)
            .zip(a.d.par_chunks_mut(nb))
            .zip(a.s.par_chunks_mut(nb))
            .zip(a.bsums.par_chunks_mut(n_in / 16))
            .zip(x.par_chunks(n_in))
            .for_each(|((((q, d), s), bs), x)| {
                quantize_row(fmt, x, q, d, s);
                for (b, q) in bs.iter_mut().zip(q.chunks_exact(16)) {
                    *b = q.iter().map(|&v| i16::from(v)).sum();
                }
            });
        a
    }
}

crate::avx2_dispatch! {
    /// One row: ggml's `quantize_row_q8_0/q8_1/q8_K` reference formulas.
    fn quantize_row(fmt: ActFormat, x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
        match fmt {
            ActFormat::Q8_0 | ActFormat::Q8_1 => {
                for (((x, q), d), s) in x
                    .chunks_exact(32)
                    .zip(q.chunks_exact_mut(32))
                    .zip(d.iter_mut())
                    .zip(s.iter_mut())
                {
                    let dd = crate::kernels::max_abs(x) / 127.0;
                    let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
                    let mut sum = 0i32;
                    for (q, &v) in q.iter_mut().zip(x) {
                        *q = round_half_away(v * id) as i8;
                        sum += i32::from(*q);
                    }
                    *d = half::f16::from_f32(dd).to_f32();
                    if fmt == ActFormat::Q8_1 {
                        *s = half::f16::from_f32(sum as f32 * dd).to_f32();
                    }
                }
            }
            ActFormat::Q8K32 => {
                let mut d256 = [0f32];
                for ((x, q), d) in x.chunks_exact(256).zip(q.chunks_exact_mut(256)).zip(d.chunks_exact_mut(8)) {
                    quantize_row(ActFormat::Q8K, x, q, &mut d256, &mut [0.0]);
                    d.fill(d256[0]);
                }
            }
            ActFormat::Q8K => {
                for ((x, q), d) in x.chunks_exact(256).zip(q.chunks_exact_mut(256)).zip(d.iter_mut()) {
                    let max = crate::kernels::signed_max_abs(x);
                    if max == 0.0 {
                        q.fill(0);
                        *d = 0.0;
                        continue;
                    }
                    let iscale = -127.0 / max;
                    for (q, &v) in q.iter_mut().zip(x) {
                        *q = (iscale * v).round_ties_even().min(127.0) as i8;
                    }
                    *d = 1.0 / iscale;
                }
            }
        }
    }
}

/// One prepared weight row (borrowed from [`super::prepare::Prepared`]).
#[derive(Debug, Clone, Copy)]
pub struct WeightRow<'a> {
    pub w: &'a [u8],
    pub d: &'a [f32],
    pub m: &'a [f32],
    pub sc: &'a [i16],
    pub zsc: &'a [i16],
    pub mn: &'a [i16],
}

/// One activation row (borrowed from [`Activations`]).
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub bsums: &'a [i16],
}

/// The reference product of a legacy row (blocks of 32) with a Q8_0/Q8_1 row: per block,
/// `(d_w · d_x) · Σ w·q (+ m_w · s_x)`, summed in order.
pub fn legacy_reference(signed: bool, w: WeightRow<'_>, x: ActRow<'_>) -> f32 {
    let mut sum = 0f32;
    for (b, (wb, xb)) in w.w.chunks_exact(32).zip(x.q.chunks_exact(32)).enumerate() {
        let isum: i32 = wb
            .iter()
            .zip(xb)
            .map(|(&a, &q)| {
                let a = if signed {
                    i32::from(a as i8)
                } else {
                    i32::from(a)
                };
                a * i32::from(q)
            })
            .sum();
        sum += (w.d[b] * x.d[b]) * isum as f32;
        if !signed {
            sum += w.m[b] * x.s[b];
        }
    }
    sum
}

/// The reference product of a k-quant row (super-blocks of 256) with a Q8_K row: per
/// super-block, `(d_w · d_x) · (Σ_g sc_g · Σ w·q − Σ_g z·sc_g · Σq) − (dmin_w · d_x) · Σ_g mn_g · Σq`.
pub fn k_reference(w: WeightRow<'_>, x: ActRow<'_>) -> f32 {
    let mut sum = 0f32;
    for b in 0..w.d.len() {
        let mut isum = 0i32;
        let (mut corr, mut imin) = (0i32, 0i32);
        for g in 16 * b..16 * (b + 1) {
            let dot: i32 = w.w[16 * g..16 * (g + 1)]
                .iter()
                .zip(&x.q[16 * g..16 * (g + 1)])
                .map(|(&a, &q)| i32::from(a) * i32::from(q))
                .sum();
            isum += i32::from(w.sc[g]) * dot;
            corr += i32::from(w.zsc[g]) * i32::from(x.bsums[g]);
            imin += i32::from(w.mn[g]) * i32::from(x.bsums[g]);
        }
        sum += (w.d[b] * x.d[b]) * (isum - corr) as f32 - (w.m[b] * x.d[b]) * imin as f32;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{ActRow, WeightRow};
    use std::arch::x86_64::*;

    /// The sum of the eight lanes.
    #[inline(always)]
    pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The sum of the eight lanes.
    #[inline(always)]
    pub(crate) unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// [`super::legacy_reference`] with AVX2, for `R` input rows at once (the weight's bytes
    /// loaded once for all of them; each row's operations are those of a single row, in the
    /// same order, so the results do not depend on `R`): each block's 32 products by one
    /// `maddubs` (signed codes through the sign trick: |w| times x with w's sign), the sums
    /// scaled and accumulated in eight f32 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the rows hold whole blocks of equal count.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn legacy<const R: usize>(
        signed: bool,
        w: WeightRow<'_>,
        x: [ActRow<'_>; R],
    ) -> [f32; R] {
        let nb = w.d.len();
        assert!(w.w.len() >= 32 * nb && w.m.len() >= nb);
        for x in &x {
            assert!(x.q.len() >= 32 * nb && x.d.len() >= nb && x.s.len() >= nb);
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offs = [0f32; R];
        let wp = w.w.as_ptr();
        for b in 0..nb {
            let wv = _mm256_loadu_si256(wp.add(32 * b) as *const __m256i);
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = *w.d.get_unchecked(b);
            for r in 0..R {
                let xv = _mm256_loadu_si256(x[r].q.as_ptr().add(32 * b) as *const __m256i);
                let p16 = if signed {
                    _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv))
                } else {
                    _mm256_maddubs_epi16(wv, xv)
                };
                let p32 = _mm256_madd_epi16(p16, ones);
                let scale = _mm256_set1_ps(dw * *x[r].d.get_unchecked(b));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p32), acc[r]);
                if !signed {
                    offs[r] += *w.m.get_unchecked(b) * *x[r].s.get_unchecked(b);
                }
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum_ps(acc[r]) + offs[r];
        }
        out
    }

    /// [`super::k_reference`] with AVX2, for `R` input rows at once (as [`legacy`]): 32
    /// products per `maddubs` (the codes are unsigned), each half of its sixteen 16-bit sums
    /// scaled by its group's `sc` in the `madd` that widens them, the zero-point and minimum
    /// terms from the activation's sums of 16.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the rows hold whole super-blocks of equal count.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn k<const R: usize>(w: WeightRow<'_>, x: [ActRow<'_>; R]) -> [f32; R] {
        let nb = w.d.len();
        assert!(w.w.len() >= 256 * nb && w.m.len() >= nb);
        assert!(w.sc.len() >= 16 * nb && w.zsc.len() >= 16 * nb && w.mn.len() >= 16 * nb);
        for x in &x {
            assert!(x.q.len() >= 256 * nb && x.d.len() >= nb && x.bsums.len() >= 16 * nb);
        }
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        let wp = w.w.as_ptr();
        for b in 0..nb {
            let mut ai = [_mm256_setzero_si256(); R];
            let sc = w.sc.as_ptr().add(16 * b);
            for c in 0..8 {
                let wv = _mm256_loadu_si256(wp.add(256 * b + 32 * c) as *const __m256i);
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(*sc.add(2 * c + 1)),
                    _mm_set1_epi16(*sc.add(2 * c)),
                );
                for r in 0..R {
                    let xv =
                        _mm256_loadu_si256(x[r].q.as_ptr().add(256 * b + 32 * c) as *const __m256i);
                    let p16 = _mm256_maddubs_epi16(wv, xv);
                    ai[r] = _mm256_add_epi32(ai[r], _mm256_madd_epi16(p16, s));
                }
            }
            let zsc = _mm256_loadu_si256(w.zsc.as_ptr().add(16 * b) as *const __m256i);
            let mn = _mm256_loadu_si256(w.mn.as_ptr().add(16 * b) as *const __m256i);
            let (dw, mw) = (*w.d.get_unchecked(b), *w.m.get_unchecked(b));
            for r in 0..R {
                let bs = _mm256_loadu_si256(x[r].bsums.as_ptr().add(16 * b) as *const __m256i);
                let ai = _mm256_sub_epi32(ai[r], _mm256_madd_epi16(bs, zsc));
                let imin = hsum_epi32(_mm256_madd_epi16(bs, mn));
                let dx = *x[r].d.get_unchecked(b);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(ai), acc[r]);
                mins[r] += (mw * dx) * imin as f32;
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum_ps(acc[r]) - mins[r];
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{ActRow, WeightRow};
    use std::arch::x86_64::*;

    /// [`super::legacy_reference`] with AVX-512 VNNI, for `R` input rows at once (as
    /// [`super::avx2::legacy`]): two blocks per register, each four bytes' products summed
    /// exactly by one `vpdpbusd` (signed codes as |w| times x negated where w < 0), lanes 0–7
    /// scaled by the first block's `d_w · d_x` and 8–15 by the second's; an odd last block is
    /// loaded masked, its upper half zero.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI ([`crate::kernels::Kernel::Vnni`]); the rows hold
    /// whole blocks of equal count.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn legacy<const R: usize>(
        signed: bool,
        w: WeightRow<'_>,
        x: [ActRow<'_>; R],
    ) -> [f32; R] {
        let nb = w.d.len();
        assert!(w.w.len() >= 32 * nb && w.m.len() >= nb);
        for x in &x {
            assert!(x.q.len() >= 32 * nb && x.d.len() >= nb && x.s.len() >= nb);
        }
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); R];
        let mut offs = [0f32; R];
        let wp = w.w.as_ptr() as *const i8;
        let mut b = 0;
        while b < nb {
            let two = b + 1 < nb;
            let mask: __mmask64 = if two { !0 } else { 0xFFFF_FFFF };
            let wv = _mm512_maskz_loadu_epi8(mask, wp.add(32 * b));
            let (uw, neg) = if signed {
                (_mm512_abs_epi8(wv), _mm512_movepi8_mask(wv))
            } else {
                (wv, 0)
            };
            let dw0 = *w.d.get_unchecked(b);
            let dw1 = if two { *w.d.get_unchecked(b + 1) } else { 0.0 };
            for r in 0..R {
                let xv = _mm512_maskz_loadu_epi8(mask, x[r].q.as_ptr().add(32 * b));
                let xs = if signed {
                    _mm512_mask_sub_epi8(xv, neg, zero, xv)
                } else {
                    xv
                };
                let p = _mm512_dpbusd_epi32(zero, uw, xs);
                let s0 = dw0 * *x[r].d.get_unchecked(b);
                let s1 = if two {
                    dw1 * *x[r].d.get_unchecked(b + 1)
                } else {
                    0.0
                };
                let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(p), acc[r]);
                if !signed {
                    offs[r] += *w.m.get_unchecked(b) * *x[r].s.get_unchecked(b);
                    if two {
                        offs[r] += *w.m.get_unchecked(b + 1) * *x[r].s.get_unchecked(b + 1);
                    }
                }
            }
            b += 2;
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(acc[r]) + offs[r];
        }
        out
    }

    /// [`super::k_reference`] with AVX-512 VNNI, for `R` input rows at once: 64 products per
    /// `vpmaddubsw`, its 32 sums of pairs scaled by their groups' `sc` and added to 32-bit sums
    /// by one `vpdpwssd` (the four groups' scales spread over the register by a permute shared
    /// by the rows); per super-block the sixteen lanes fold to eight and the zero-point and
    /// minimum terms follow as in [`super::avx2::k`].
    ///
    /// # Safety
    /// As [`legacy`]; the rows hold whole super-blocks of equal count.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn k<const R: usize>(w: WeightRow<'_>, x: [ActRow<'_>; R]) -> [f32; R] {
        let nb = w.d.len();
        assert!(w.w.len() >= 256 * nb && w.m.len() >= nb);
        assert!(w.sc.len() >= 16 * nb && w.zsc.len() >= 16 * nb && w.mn.len() >= 16 * nb);
        for x in &x {
            assert!(x.q.len() >= 256 * nb && x.d.len() >= nb && x.bsums.len() >= 16 * nb);
        }
        // 16-bit lane j of a 64-byte chunk's pair sums belongs to group j / 8.
        let spread = _mm512_set_epi16(
            3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
            0, 0, 0,
        );
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        let wp = w.w.as_ptr();
        for b in 0..nb {
            let mut ai = [_mm512_setzero_si512(); R];
            let sc = w.sc.as_ptr().add(16 * b);
            for c in 0..4 {
                let wv = _mm512_loadu_si512(wp.add(256 * b + 64 * c) as *const __m512i);
                let s =
                    _mm512_permutexvar_epi16(spread, _mm512_maskz_loadu_epi16(0xF, sc.add(4 * c)));
                for r in 0..R {
                    let xv =
                        _mm512_loadu_si512(x[r].q.as_ptr().add(256 * b + 64 * c) as *const __m512i);
                    ai[r] = _mm512_dpwssd_epi32(ai[r], _mm512_maddubs_epi16(wv, xv), s);
                }
            }
            let zsc = _mm256_loadu_si256(w.zsc.as_ptr().add(16 * b) as *const __m256i);
            let mn = _mm256_loadu_si256(w.mn.as_ptr().add(16 * b) as *const __m256i);
            let (dw, mw) = (*w.d.get_unchecked(b), *w.m.get_unchecked(b));
            for r in 0..R {
                let folded = _mm256_add_epi32(
                    _mm512_castsi512_si256(ai[r]),
                    _mm512_extracti64x4_epi64(ai[r], 1),
                );
                let bs = _mm256_loadu_si256(x[r].bsums.as_ptr().add(16 * b) as *const __m256i);
                let ai = _mm256_sub_epi32(folded, _mm256_madd_epi16(bs, zsc));
                let imin = super::avx2::hsum_epi32(_mm256_madd_epi16(bs, mn));
                let dx = *x[r].d.get_unchecked(b);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(ai), acc[r]);
                mins[r] += (mw * dx) * imin as f32;
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = super::avx2::hsum_ps(acc[r]) - mins[r];
        }
        out
    }
}
