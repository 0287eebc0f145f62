//! Integer matrix products for int8 weights: `y = x · Wᵀ` with `W` stored as int8 per output
//! channel (`W[o, j] = s[o] · q[o, j]`, Frugal's int8 format) and `x` rounded on the fly to int8
//! in groups of [`GROUP`] consecutive input columns, each group of each row with its own scale
//! (`max |x| / 127`). Per-group activation scales keep the rounding error of a row's large
//! values out of its small ones: on all-MiniLM-L6-v2 per-row scales give embeddings at cosine
//! 0.997 to the F32 model, groups of 32 give 0.9992 (bench/encoder-int.sh).
//!
//! Each group's dot products are exact 32-bit integer sums, converted to f32 and scaled once per
//! group. On CPUs with AVX-512 VNNI the sums come from `vpdpbusd` (unsigned × signed bytes, so
//! the activations are stored offset by 128 and `128 · Σ q` is subtracted per group); on AVX2
//! from `vpmaddubsw` of |x| and the weights carrying x's sign, then `vpmaddwd` (exact: with
//! |x|, |w| ≤ 127 no pair sum reaches the 16-bit limit; a weight of −128 sends the product to
//! the portable loop), in eight lanes per group; elsewhere a portable loop computes the same
//! integers. The three differ only in the order of the f32 additions after the integer sums.

use rayon::prelude::*;

/// Input columns per activation scale.
pub const GROUP: usize = 32;

/// Output columns per packed panel (two 512-bit registers of 32-bit sums).
const PANEL: usize = 32;

/// An int8 weight `[n, k]` ready for [`matmul_i8`].
#[derive(Debug, Clone)]
pub struct PackedI8 {
    pub n: usize,
    pub k: usize,
    /// Row-major `[n, k]`.
    q: Vec<i8>,
    /// Per output channel.
    scale: Vec<f32>,
    /// `[k / GROUP, n]`: `128 · Σ_{j ∈ group} q[o, j]`, the offset of unsigned activations.
    corr: Vec<i32>,
    /// Panels of 32 output columns: `[n / 32][k / 4][32][4]`, empty when VNNI is not used.
    panels: Vec<i8>,
    /// Whether the AVX2 kernel may multiply these weights (none is −128) and the CPU has it.
    avx2: bool,
}

/// Activations rounded for [`matmul_i8`]: `[m, k]` as `q + 128` and `[m, k / GROUP]` scales.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    pub m: usize,
    pub k: usize,
    pub q: Vec<u8>,
    pub scale: Vec<f32>,
}

fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedI8 {
    /// `q` row-major `[n, k]` with one scale per row. `k` must be a multiple of [`GROUP`].
    pub fn new(q: Vec<i8>, scale: Vec<f32>, k: usize) -> PackedI8 {
        assert!(
            k > 0 && k.is_multiple_of(GROUP),
            "int8 product: {k} columns"
        );
        assert_eq!(q.len(), scale.len() * k, "int8 product: weight shape");
        let n = scale.len();
        let groups = k / GROUP;
        let mut corr = vec![0i32; groups * n];
        for (o, row) in q.chunks_exact(k).enumerate() {
            for (g, grp) in row.chunks_exact(GROUP).enumerate() {
                corr[g * n + o] = 128 * grp.iter().map(|&v| i32::from(v)).sum::<i32>();
            }
        }
        let panels = if vnni() && n.is_multiple_of(PANEL) {
            let mut p = vec![0i8; n * k];
            for (pi, panel) in p.chunks_exact_mut(PANEL * k).enumerate() {
                for (s, step) in panel.chunks_exact_mut(PANEL * 4).enumerate() {
                    for c in 0..PANEL {
                        let o = pi * PANEL + c;
                        step[c * 4..c * 4 + 4]
                            .copy_from_slice(&q[o * k + s * 4..o * k + s * 4 + 4]);
                    }
                }
            }
            p
        } else {
            Vec::new()
        };
        let avx2 = avx2_fma() && !q.contains(&i8::MIN);
        PackedI8 {
            n,
            k,
            q,
            scale,
            corr,
            panels,
            avx2,
        }
    }

    /// Rounds an f32 weight `[n, k]` to int8 per row (`max |w| / 127`).
    pub fn from_f32(w: &[f32], k: usize) -> PackedI8 {
        let mut q = vec![0i8; w.len()];
        let scale: Vec<f32> = w
            .chunks_exact(k)
            .zip(q.chunks_exact_mut(k))
            .map(|(row, qr)| {
                let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = m / 127.0;
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                for (o, &v) in qr.iter_mut().zip(row) {
                    *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
                s
            })
            .collect();
        PackedI8::new(q, scale, k)
    }
}

crate::avx512_dispatch! {
    /// Rounds whole rows, group by group; of `gelu(x)` instead of `x` when `gelu` is set (the
    /// GELU of the MLP fused into the rounding of its output, one pass over memory).
    fn quantize_rows(x: &[f32], q: &mut [u8], scale: &mut [f32], gelu: bool) {
        let mut buf = [0f32; GROUP];
        for ((xg, qg), s) in x.chunks_exact(GROUP).zip(q.chunks_exact_mut(GROUP)).zip(scale) {
            let xg: &[f32] = if gelu {
                for (b, &v) in buf.iter_mut().zip(xg) {
                    *b = crate::kernels::gelu_erf(v);
                }
                &buf
            } else {
                xg
            };
            let m = crate::kernels::max_abs(xg);
            *s = m / 127.0;
            let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
            for (o, &v) in qg.iter_mut().zip(xg) {
                // Round to nearest, ties to even, through the adder (|v·inv| ≤ 127 < 2²²): the
                // sum's low mantissa bits hold the integer (no float-to-int conversion, which
                // checks for NaN and stops vectorisation).
                const SHIFT: f32 = 12_582_912.0;
                let bits = (v * inv + SHIFT).to_bits().wrapping_sub(SHIFT.to_bits());
                *o = bits.wrapping_add(128) as u8;
            }
        }
    }
}

/// Rounds `x` (`[m, k]`, `k` a multiple of [`GROUP`]) for [`matmul_i8`], rows over the cores.
pub fn quantize_acts(x: &[f32], k: usize, out: &mut QuantizedActs) {
    quantize_acts_of(x, k, out, false)
}

/// [`quantize_acts`] of `gelu(x)` (exact GELU, [`crate::kernels::gelu_erf`]).
pub fn quantize_gelu_acts(x: &[f32], k: usize, out: &mut QuantizedActs) {
    quantize_acts_of(x, k, out, true)
}

fn quantize_acts_of(x: &[f32], k: usize, out: &mut QuantizedActs, gelu: bool) {
    assert!(
        k > 0 && k.is_multiple_of(GROUP) && x.len().is_multiple_of(k),
        "int8 activations: shape"
    );
    let m = x.len() / k;
    out.m = m;
    out.k = k;
    out.q.resize(m * k, 0);
    out.scale.resize(m * k / GROUP, 0.0);
    const ROWS: usize = 16;
    out.q
        .par_chunks_mut(ROWS * k)
        .zip(out.scale.par_chunks_mut(ROWS * k / GROUP))
        .zip(x.par_chunks(ROWS * k))
        .for_each(|((q, s), x)| quantize_rows(x, q, s, gelu));
}

/// `dst[m×n] += dequantized(a) · Wᵀ` (so `dst` may hold a bias and a residual already).
pub fn matmul_i8(a: &QuantizedActs, w: &PackedI8, dst: &mut [f32]) {
    assert_eq!(a.k, w.k, "int8 product: inner sizes");
    assert_eq!(dst.len(), a.m * w.n, "int8 product: destination");
    let (k, n) = (w.k, w.n);
    let groups = k / GROUP;
    dst.par_chunks_mut(BLOCK_ROWS * n)
        .zip(a.q.par_chunks(BLOCK_ROWS * k))
        .zip(a.scale.par_chunks(BLOCK_ROWS * groups))
        .for_each(|((d, q), s)| block(q, s, w, d));
}

/// Rows per task: each block of rows runs over every column panel.
const BLOCK_ROWS: usize = 48;

fn block(q: &[u8], s: &[f32], w: &PackedI8, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if !w.panels.is_empty() {
        // SAFETY: panels exist only when the CPU has AVX-512F and VNNI; shapes are checked by
        // the callers and in `block_vnni`.
        unsafe { vnni::block_vnni(q, s, w, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if w.avx2 {
        // SAFETY: `avx2` is set only when the CPU has AVX2 and FMA; shapes are checked in
        // `block_avx2`.
        unsafe { avx2::block_avx2(q, s, w, dst) };
        return;
    }
    block_portable(q, s, w, dst);
}

/// `out = rounded(gelu(dequantized(a) · Wᵀ + bias))`: an MLP's first product, its GELU and the
/// rounding of the second product's input, block of rows by block of rows so the f32 values
/// never leave the core's cache. `w.n` must be a multiple of [`GROUP`].
pub fn matmul_i8_gelu_quantize(
    a: &QuantizedActs,
    w: &PackedI8,
    bias: &[f32],
    out: &mut QuantizedActs,
) {
    let (k, n) = (w.k, w.n);
    assert_eq!(a.k, k, "int8 product: inner sizes");
    assert_eq!(bias.len(), n, "int8 product: bias");
    assert!(n.is_multiple_of(GROUP), "int8 product: {n} outputs");
    let groups = k / GROUP;
    out.m = a.m;
    out.k = n;
    out.q.resize(a.m * n, 0);
    out.scale.resize(a.m * n / GROUP, 0.0);
    out.q
        .par_chunks_mut(BLOCK_ROWS * n)
        .zip(out.scale.par_chunks_mut(BLOCK_ROWS * n / GROUP))
        .zip(a.q.par_chunks(BLOCK_ROWS * k))
        .zip(a.scale.par_chunks(BLOCK_ROWS * groups))
        .for_each_init(Vec::new, |y: &mut Vec<f32>, (((oq, os), q), s)| {
            y.clear();
            for _ in 0..q.len() / k {
                y.extend_from_slice(bias);
            }
            block(q, s, w, y);
            quantize_rows(y, oq, os, true);
        });
}

/// The same integers as the VNNI kernel, in plain loops.
fn block_portable(q: &[u8], s: &[f32], w: &PackedI8, dst: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    let groups = k / GROUP;
    for ((qa, sa), d) in q
        .chunks_exact(k)
        .zip(s.chunks_exact(groups))
        .zip(dst.chunks_exact_mut(n))
    {
        for (o, out) in d.iter_mut().enumerate() {
            let wr = &w.q[o * k..(o + 1) * k];
            let mut acc = 0f32;
            for (g, ((xg, wg), &scale)) in qa
                .chunks_exact(GROUP)
                .zip(wr.chunks_exact(GROUP))
                .zip(sa)
                .enumerate()
            {
                let dot: i32 = xg
                    .iter()
                    .zip(wg)
                    .map(|(&x, &v)| i32::from(x) * i32::from(v))
                    .sum();
                acc += (dot - w.corr[g * n + o]) as f32 * scale;
            }
            *out += acc * w.scale[o];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{PackedI8, GROUP, PANEL};
    use std::arch::x86_64::*;

    /// Rows `q` (`[rows, k]`, offset by 128) with scales `s` times every panel of `w`, added
    /// into `dst` `[rows, n]`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn block_vnni(q: &[u8], s: &[f32], w: &PackedI8, dst: &mut [f32]) {
        let (k, n) = (w.k, w.n);
        let groups = k / GROUP;
        let rows = q.len() / k;
        assert!(q.len() == rows * k && s.len() == rows * groups && dst.len() == rows * n);
        assert!(n.is_multiple_of(PANEL) && w.panels.len() == n * k);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(6);
            for p in 0..n / PANEL {
                let args = (q.as_ptr().add(r * k), s.as_ptr().add(r * groups), p, r);
                match mr {
                    6 => tile::<6>(args, w, dst),
                    5 => tile::<5>(args, w, dst),
                    4 => tile::<4>(args, w, dst),
                    3 => tile::<3>(args, w, dst),
                    2 => tile::<2>(args, w, dst),
                    _ => tile::<1>(args, w, dst),
                }
            }
            r += mr;
        }
    }

    /// `MR` rows × one panel of 32 columns.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn tile<const MR: usize>(
        (a, sa, panel, row0): (*const u8, *const f32, usize, usize),
        w: &PackedI8,
        dst: &mut [f32],
    ) {
        let (k, n) = (w.k, w.n);
        let groups = k / GROUP;
        let b = w.panels.as_ptr().add(panel * PANEL * k);
        let col = panel * PANEL;
        let mut facc = [[_mm512_setzero_ps(); 2]; MR];
        for g in 0..groups {
            let mut iacc = [[_mm512_setzero_si512(); 2]; MR];
            for step in 0..GROUP / 4 {
                let kk = g * GROUP + step * 4;
                let bp = b.add(kk / 4 * PANEL * 4);
                let b0 = _mm512_loadu_si512(bp as *const __m512i);
                let b1 = _mm512_loadu_si512(bp.add(64) as *const __m512i);
                for (r, acc) in iacc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32((a.add(r * k + kk) as *const i32).read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
                }
            }
            let cp = w.corr.as_ptr().add(g * n + col);
            let c0 = _mm512_loadu_si512(cp as *const __m512i);
            let c1 = _mm512_loadu_si512(cp.add(16) as *const __m512i);
            for (r, (f, i)) in facc.iter_mut().zip(&iacc).enumerate() {
                let scale = _mm512_set1_ps(*sa.add(r * groups + g));
                f[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(i[0], c0)), scale, f[0]);
                f[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(i[1], c1)), scale, f[1]);
            }
        }
        let ws0 = _mm512_loadu_ps(w.scale.as_ptr().add(col));
        let ws1 = _mm512_loadu_ps(w.scale.as_ptr().add(col + 16));
        for (r, f) in facc.iter().enumerate() {
            let d = dst.as_mut_ptr().add((row0 + r) * n + col);
            _mm512_storeu_ps(d, _mm512_fmadd_ps(f[0], ws0, _mm512_loadu_ps(d)));
            _mm512_storeu_ps(
                d.add(16),
                _mm512_fmadd_ps(f[1], ws1, _mm512_loadu_ps(d.add(16))),
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PackedI8, GROUP};
    use std::arch::x86_64::*;

    /// Rows `q` (`[rows, k]`, offset by 128) with scales `s` times every output of `w`, added
    /// into `dst` `[rows, n]`: four outputs of a row at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_avx2(q: &[u8], s: &[f32], w: &PackedI8, dst: &mut [f32]) {
        let (k, n) = (w.k, w.n);
        let groups = k / GROUP;
        let rows = q.len() / k;
        assert!(q.len() == rows * k && s.len() == rows * groups && dst.len() == rows * n);
        assert!(w.q.len() == n * k && w.scale.len() == n);
        for r in 0..rows {
            let (a, sa) = (q.as_ptr().add(r * k), s.as_ptr().add(r * groups));
            let d = dst.as_mut_ptr().add(r * n);
            let mut o = 0;
            while o + 4 <= n {
                outputs::<4>(a, sa, w, o, d);
                o += 4;
            }
            while o < n {
                outputs::<1>(a, sa, w, o, d);
                o += 1;
            }
        }
    }

    /// One row `a` times outputs `o..o + NO`, added into `d[o..]`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn outputs<const NO: usize>(
        a: *const u8,
        sa: *const f32,
        w: &PackedI8,
        o: usize,
        d: *mut f32,
    ) {
        let k = w.k;
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); NO];
        for g in 0..k / GROUP {
            // The signed activations, their magnitudes, and the group's scale.
            let x = _mm256_xor_si256(_mm256_loadu_si256(a.add(g * GROUP) as *const __m256i), flip);
            let ax = _mm256_abs_epi8(x);
            let scale = _mm256_set1_ps(*sa.add(g));
            for (j, acc) in acc.iter_mut().enumerate() {
                let wp = w.q.as_ptr().add((o + j) * k + g * GROUP);
                let wv = _mm256_loadu_si256(wp as *const __m256i);
                let pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv, x));
                let sums = _mm256_madd_epi16(pairs, ones);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, *acc);
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let h = _mm_add_ps(_mm256_castps256_ps128(*acc), _mm256_extractf128_ps(*acc, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            *d.add(o + j) += _mm_cvtss_f32(h) * w.scale[o + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn integer_product_matches_the_dequantized_f32_product() {
        // Odd row count (tails of the 6-row tiles), several groups and panels.
        let (m, k, n) = (13, 96, 64);
        let x = data(m * k, 1);
        let wf = data(n * k, 2);
        let w = PackedI8::from_f32(&wf, k);
        let mut a = QuantizedActs::default();
        quantize_acts(&x, k, &mut a);
        let mut got = vec![0.5f32; m * n];
        matmul_i8(&a, &w, &mut got);
        let mut portable = vec![0.5f32; m * n];
        block_portable(&a.q, &a.scale, &w, &mut portable);
        for r in 0..m {
            for o in 0..n {
                // The same product from the rounded values in f64.
                let mut want = 0.5f64;
                for j in 0..k {
                    let xa = (f64::from(a.q[r * k + j]) - 128.0)
                        * f64::from(a.scale[r * k / GROUP + j / GROUP]);
                    let wv = f64::from(w.q[o * k + j]) * f64::from(w.scale[o]);
                    want += xa * wv;
                }
                let (g, p) = (f64::from(got[r * n + o]), f64::from(portable[r * n + o]));
                assert!(
                    (g - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{r},{o}: {g} vs {want}"
                );
                assert!(
                    (p - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{r},{o}: {p} vs {want}"
                );
                // And the rounding itself is close to the f32 product (relative to Σ|x·w|).
                let terms = (0..k).map(|j| f64::from(x[r * k + j]) * f64::from(wf[o * k + j]));
                let exact = terms.clone().sum::<f64>() + 0.5;
                let mass: f64 = terms.map(f64::abs).sum();
                assert!(
                    (g - exact).abs() < 0.01 * mass,
                    "{g} vs exact {exact} ({mass})"
                );
            }
        }
    }

    /// The AVX2 kernel (whatever the dispatch picks on this CPU) gives the portable loop's
    /// products; a weight of −128 (whose sign the AVX2 trick cannot flip) is multiplied by
    /// another kernel, correctly.
    #[test]
    fn avx2_kernel_matches_the_portable_loop() {
        let (m, k, n) = (7, 160, 38); // outputs not a multiple of 4 (the one-output tail)
        let x = data(m * k, 6);
        let mut w = PackedI8::from_f32(&data(n * k, 7), k);
        let mut a = QuantizedActs::default();
        quantize_acts(&x, k, &mut a);
        let mut portable = vec![0.25f32; m * n];
        block_portable(&a.q, &a.scale, &w, &mut portable);
        let close = |got: &[f32], portable: &[f32]| {
            for (g, p) in got.iter().zip(portable) {
                assert!((g - p).abs() <= 1e-5 * (1.0 + p.abs()), "{g} vs {p}");
            }
        };
        #[cfg(target_arch = "x86_64")]
        if w.avx2 {
            let mut got = vec![0.25f32; m * n];
            // SAFETY: `avx2` says the CPU has AVX2 and FMA.
            unsafe { avx2::block_avx2(&a.q, &a.scale, &w, &mut got) };
            close(&got, &portable);
        }
        let mut q = w.q.clone();
        q[5] = i8::MIN;
        w = PackedI8::new(q, w.scale.clone(), k);
        assert!(!w.avx2);
        portable.fill(0.25);
        block_portable(&a.q, &a.scale, &w, &mut portable);
        let mut got = vec![0.25f32; m * n];
        matmul_i8(&a, &w, &mut got);
        close(&got, &portable);
    }

    #[test]
    fn fused_mlp_step_equals_its_parts() {
        let (m, k, n) = (50, 64, 96); // more rows than one block, a partial last block
        let x = data(m * k, 3);
        let w = PackedI8::from_f32(&data(n * k, 4), k);
        let bias = data(n, 5);
        let mut a = QuantizedActs::default();
        quantize_acts(&x, k, &mut a);
        let mut fused = QuantizedActs::default();
        matmul_i8_gelu_quantize(&a, &w, &bias, &mut fused);
        let mut y: Vec<f32> = (0..m).flat_map(|_| bias.iter().copied()).collect();
        matmul_i8(&a, &w, &mut y);
        let mut parts = QuantizedActs::default();
        quantize_gelu_acts(&y, n, &mut parts);
        assert_eq!((fused.m, fused.k), (m, n));
        assert_eq!(fused.q, parts.q);
        assert_eq!(fused.scale, parts.scale);
    }

    #[test]
    fn activation_rounding_is_per_group_and_symmetric() {
        let mut x = vec![0f32; 64];
        x[0] = 127.0;
        x[1] = -63.5;
        x[32] = 0.01;
        let mut a = QuantizedActs::default();
        quantize_acts(&x, 64, &mut a);
        assert_eq!(a.scale, vec![1.0, 0.01 / 127.0]);
        assert_eq!(a.q[0], 255);
        assert_eq!(a.q[1], 128 - 64, "ties to even: -63.5 → -64");
        assert_eq!(a.q[2], 128);
        assert_eq!(a.q[32], 255);
    }
}
