//! Weight rows packed in panels of sixteen for the AVX-512 VNNI product of many input rows
//! (a prompt): each `vpdpbusd` multiplies four codes of sixteen weight rows with four bytes of
//! one input row (broadcast), so the sixteen outputs of a panel grow side by side in one
//! register and every block's scales are vectors over the panel's rows — no per-block scalar
//! work per output, which is what bounds [`super::dot::avx512`]'s one-row-at-a-time products.
//!
//! The packing is [`Panels::fill`] from the unpacked rows ([`Prepared`]): codes as unsigned
//! bytes (the signed types' offset by 128, the offset taken out again through the activation's
//! block sums), `[panel][n_in / 4][16 rows][4 codes]`; per block and row `d` and `m`; for the
//! k-quants per group of 16 the integer scale (32-bit) and the one correction the type has —
//! the zero point's `z · sc` (Q3_K, Q6_K) or the minimum `mn` (Q2_K, Q4_K, Q5_K) — as 16-bit
//! pairs of groups, multiplied with pairs of activation sums by one `vpdpwssd`. The integer
//! sums are [`super::dot::legacy_reference`]'s and [`super::dot::k_reference`]'s exactly;
//! only the f32 steps after them fuse (tested against the reference).

use super::dot::ActRow;
use super::prepare::Prepared;
use super::BlockType;

/// Weight rows per panel.
pub const PANEL: usize = 16;

/// Weight rows packed in panels (the last one padded with zero rows).
#[derive(Debug, Default, Clone)]
pub struct Panels {
    /// `[panel][n_in / 4][PANEL][4]` unsigned codes.
    pub q: Vec<u8>,
    /// `[panel][block][PANEL]`: `d`.
    pub d: Vec<f32>,
    /// `[panel][block][PANEL]`: `m` (Q4_1, Q5_1) or `dmin` (k-quants).
    pub m: Vec<f32>,
    /// k-quants, `[panel][group][PANEL]`: `sc`.
    pub sc: Vec<i32>,
    /// k-quants, `[panel][group / 2][PANEL][2]`: `z · sc` where the type has a zero point,
    /// else `mn`.
    pub corr: Vec<i16>,
}

fn reset<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::default());
}

impl Panels {
    /// Packs the first `rows` rows of `p` (`n_in` values each, of type `ty`).
    pub fn fill(&mut self, ty: BlockType, p: &Prepared, rows: usize, n_in: usize) {
        let np = rows.div_ceil(PANEL);
        let nb = n_in / ty.scale_block();
        let ng = if ty.is_k() { n_in / 16 } else { 0 };
        reset(&mut self.q, np * PANEL * n_in);
        reset(&mut self.d, np * nb * PANEL);
        reset(&mut self.m, np * nb * PANEL);
        reset(&mut self.sc, np * ng * PANEL);
        reset(&mut self.corr, np * ng * PANEL);
        let flip = if ty.is_signed() { 0x80 } else { 0 };
        let corr = if ty.zero_point() != 0 { &p.zsc } else { &p.mn };
        for r in 0..rows {
            let (pi, l) = (r / PANEL, r % PANEL);
            let q = &mut self.q[pi * PANEL * n_in..(pi + 1) * PANEL * n_in];
            for (s, c) in p.w[r * n_in..(r + 1) * n_in].chunks_exact(4).enumerate() {
                let at = (s * PANEL + l) * 4;
                for t in 0..4 {
                    q[at + t] = c[t] ^ flip;
                }
            }
            for b in 0..nb {
                self.d[(pi * nb + b) * PANEL + l] = p.d[r * nb + b];
                self.m[(pi * nb + b) * PANEL + l] = p.m[r * nb + b];
            }
            for g in 0..ng {
                self.sc[(pi * ng + g) * PANEL + l] = i32::from(p.sc[r * ng + g]);
                let pair = pi * ng / 2 + g / 2;
                self.corr[(pair * PANEL + l) * 2 + g % 2] = corr[r * ng + g];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{ActRow, Panels, PANEL};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn four(x: &ActRow<'_>, at: usize) -> __m512i {
        _mm512_set1_epi32((x.q.as_ptr().add(at) as *const i32).read_unaligned())
    }

    #[inline(always)]
    unsafe fn store<const R: usize>(acc: [__m512; R]) -> [[f32; PANEL]; R] {
        let mut out = [[0f32; PANEL]; R];
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }

    /// Panel `pi` of a legacy type (blocks of 32) times `R` Q8_0/Q8_1 rows: per block,
    /// `(d_w · d_x) · Σ w·q (+ m_w · s_x)` for the sixteen weight rows at once.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `pn` holds panel `pi` of rows of `n_in` values;
    /// each input row holds `n_in` values with their block scales and sums.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn legacy<const R: usize>(
        signed: bool,
        pn: &Panels,
        pi: usize,
        n_in: usize,
        x: [ActRow<'_>; R],
    ) -> [[f32; PANEL]; R] {
        let nb = n_in / 32;
        assert!(pn.q.len() >= (pi + 1) * PANEL * n_in && pn.d.len() >= (pi + 1) * nb * PANEL);
        for x in &x {
            assert!(x.q.len() >= n_in && x.d.len() >= nb && x.s.len() >= nb);
            assert!(x.bsums.len() >= n_in / 16);
        }
        let q = pn.q.as_ptr().add(pi * PANEL * n_in);
        let (d, m) = (
            pn.d.as_ptr().add(pi * nb * PANEL),
            pn.m.as_ptr().add(pi * nb * PANEL),
        );
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..nb {
            let mut ai = [_mm512_setzero_si512(); R];
            for s in 0..8 {
                let wv = _mm512_loadu_si512(q.add((8 * b + s) * 64) as *const __m512i);
                for r in 0..R {
                    ai[r] = _mm512_dpbusd_epi32(ai[r], wv, four(&x[r], 32 * b + 4 * s));
                }
            }
            let wd = _mm512_loadu_ps(d.add(b * PANEL));
            let wm = _mm512_loadu_ps(m.add(b * PANEL));
            for r in 0..R {
                let mut i = ai[r];
                if signed {
                    // The codes were stored + 128: take 128 · Σq back out.
                    let bs = x[r].bsums.get_unchecked(2 * b..2 * b + 2);
                    let sx = i32::from(bs[0]) + i32::from(bs[1]);
                    i = _mm512_sub_epi32(i, _mm512_set1_epi32(128 * sx));
                }
                let scale = _mm512_mul_ps(wd, _mm512_set1_ps(*x[r].d.get_unchecked(b)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[r]);
                if !signed {
                    let s = _mm512_set1_ps(*x[r].s.get_unchecked(b));
                    acc[r] = _mm512_fmadd_ps(wm, s, acc[r]);
                }
            }
        }
        store(acc)
    }

    /// Panel `pi` of a k-quant (super-blocks of 256) times `R` Q8_K rows: per super-block,
    /// `(d_w · d_x) · (Σ_g sc_g · Σ w·q − Σ_g z·sc_g · Σq) − (dmin_w · d_x) · Σ_g mn_g · Σq`,
    /// the group scales applied to the groups' 32-bit sums, the correction by `vpdpwssd` on
    /// pairs of groups; `zero` says which correction the type has (see [`Panels::corr`]).
    ///
    /// # Safety
    /// As [`legacy`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn k<const R: usize>(
        zero: bool,
        pn: &Panels,
        pi: usize,
        n_in: usize,
        x: [ActRow<'_>; R],
    ) -> [[f32; PANEL]; R] {
        let (nb, ng) = (n_in / 256, n_in / 16);
        assert!(pn.q.len() >= (pi + 1) * PANEL * n_in && pn.d.len() >= (pi + 1) * nb * PANEL);
        assert!(pn.sc.len() >= (pi + 1) * ng * PANEL && pn.corr.len() >= (pi + 1) * ng * PANEL);
        for x in &x {
            assert!(x.q.len() >= n_in && x.d.len() >= nb && x.bsums.len() >= ng);
        }
        let q = pn.q.as_ptr().add(pi * PANEL * n_in);
        let (d, m) = (
            pn.d.as_ptr().add(pi * nb * PANEL),
            pn.m.as_ptr().add(pi * nb * PANEL),
        );
        let sc = pn.sc.as_ptr().add(pi * ng * PANEL);
        let corr = pn.corr.as_ptr().add(pi * ng * PANEL);
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..nb {
            let mut ai = [_mm512_setzero_si512(); R];
            let mut ci = [_mm512_setzero_si512(); R];
            for g in 16 * b..16 * (b + 1) {
                let mut t = [_mm512_setzero_si512(); R];
                for s in 0..4 {
                    let wv = _mm512_loadu_si512(q.add((4 * g + s) * 64) as *const __m512i);
                    for r in 0..R {
                        t[r] = _mm512_dpbusd_epi32(t[r], wv, four(&x[r], 16 * g + 4 * s));
                    }
                }
                let scv = _mm512_loadu_si512(sc.add(g * PANEL) as *const __m512i);
                for r in 0..R {
                    ai[r] = _mm512_add_epi32(ai[r], _mm512_mullo_epi32(t[r], scv));
                }
            }
            for j in 0..8 {
                let pair = 8 * b + j;
                let cv = _mm512_loadu_si512(corr.add(pair * PANEL * 2) as *const __m512i);
                for r in 0..R {
                    let bs = x[r].bsums.as_ptr().add(2 * pair) as *const i32;
                    let bs = _mm512_set1_epi32(bs.read_unaligned());
                    ci[r] = _mm512_dpwssd_epi32(ci[r], cv, bs);
                }
            }
            let wd = _mm512_loadu_ps(d.add(b * PANEL));
            let wm = _mm512_loadu_ps(m.add(b * PANEL));
            for r in 0..R {
                let dx = _mm512_set1_ps(*x[r].d.get_unchecked(b));
                if zero {
                    let i = _mm512_sub_epi32(ai[r], ci[r]);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(wd, dx), acc[r]);
                } else {
                    let i = _mm512_cvtepi32_ps(ai[r]);
                    acc[r] = _mm512_fmadd_ps(i, _mm512_mul_ps(wd, dx), acc[r]);
                    let mins = _mm512_cvtepi32_ps(ci[r]);
                    acc[r] = _mm512_fnmadd_ps(mins, _mm512_mul_ps(wm, dx), acc[r]);
                }
            }
        }
        store(acc)
    }
}
