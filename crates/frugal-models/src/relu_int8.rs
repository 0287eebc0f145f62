//! Integer products for int8 weights and **nonnegative** activations (a ReLU's outputs, or
//! pixels in 0..1), as a served classifier runs them: `y = sa · sw[o] · Σ_j a[j] · q[o, j] +
//! bias[o]`, the activations rounded to 0..=127 with one scale per row (`max / 127`) and the
//! weights int8 per output channel (Frugal's int8 format).
//!
//! Because the activations are unsigned and at most 127, a pair of byte products never reaches
//! the 16-bit limit (`2 · 127 · 128 < 2¹⁵`), so AVX2's `vpmaddubsw` takes them as they are (no
//! sign trick), and one scale per row lets a whole row's products add up as exact 32-bit
//! integers, converted once at the end (`k · 127 · 128 < 2³¹` for every `k` below 132,000). The
//! weights are packed once in panels of 16 outputs, four inputs at a time (`[n/16][k/4][16][4]`
//! bytes, zero-padded): one 512-bit register (`vpdpbusd`, AVX-512 VNNI) or two 256-bit ones
//! (`vpmaddubsw` + `vpmaddwd`, AVX2) per four inputs, the activations broadcast four bytes at a
//! time. The portable loop computes the same integers, and all three finish each output with the
//! same float operations (`(Σ as f32) · (sa · sw[o]) + bias[o]`, in that order), so their
//! results are bit-identical (tested).

/// Outputs per packed panel.
const PANEL: usize = 16;

pub use crate::kernels::Kernel;

/// Inputs rounded up to the four-byte steps of the kernels.
pub fn padded_inputs(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// An int8 weight `[n, k]` packed for [`matmul`].
#[derive(Debug, Clone)]
pub struct PackedRelu {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of 4: the row length of the activations.
    pub kp: usize,
    /// `[n/16][kp/4][16][4]`, zero-padded.
    panels: Vec<i8>,
    /// Per output, zero-padded to whole panels.
    scale: Vec<f32>,
    /// The layer's bias, zero-padded the same way.
    bias: Vec<f32>,
    /// The kernel [`matmul`] runs, chosen once here rather than per product.
    kernel: Kernel,
}

impl PackedRelu {
    /// `q` row-major `[n, k]`, one scale and one bias per output.
    pub fn new(q: &[i8], scale: &[f32], bias: &[f32], k: usize) -> PackedRelu {
        let n = scale.len();
        assert!(k > 0 && n > 0 && q.len() == n * k, "int8 weight: shape");
        assert_eq!(bias.len(), n, "int8 weight: bias");
        assert!(k < 132_000, "int8 weight: {k} inputs overflow 32-bit sums");
        let (kp, np) = (padded_inputs(k), n.div_ceil(PANEL) * PANEL);
        let mut panels = vec![0i8; np * kp];
        for (o, row) in q.chunks_exact(k).enumerate() {
            let panel = &mut panels[o / PANEL * PANEL * kp..][..PANEL * kp];
            for (j, &v) in row.iter().enumerate() {
                panel[(j / 4) * PANEL * 4 + (o % PANEL) * 4 + j % 4] = v;
            }
        }
        let pad = |v: &[f32]| {
            let mut v = v.to_vec();
            v.resize(np, 0.0);
            v
        };
        PackedRelu {
            n,
            k,
            kp,
            panels,
            scale: pad(scale),
            bias: pad(bias),
            kernel: Kernel::detected(),
        }
    }
}

/// Rounds nonnegative `x` to `q` in 0..=127 (negative values to 0) and returns the scale
/// (`max / 127`; 0 for an all-zero `x`). `q` and `x` have the same length.
pub fn round_nonneg(x: &[f32], q: &mut [u8]) -> f32 {
    assert_eq!(x.len(), q.len(), "rounding: lengths");
    let m = x.iter().fold(0f32, |m, &v| m.max(v));
    let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        // Round to nearest, ties to even, through the adder (0 ≤ v·inv ≤ 127 < 2²²), as
        // `int8_kernels` does: no float-to-int conversion in the loop.
        const SHIFT: f32 = 12_582_912.0;
        let r = (v.max(0.0) * inv + SHIFT)
            .to_bits()
            .wrapping_sub(SHIFT.to_bits());
        *o = r as u8;
    }
    m / 127.0
}

/// `dst[m, n] = sa[r] · sw[o] · (a[r] · q[o]) + bias[o]` for rows `a` `[m, kp]` (0..=127, zero
/// beyond `k`), on the caller's thread.
pub fn matmul(a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
    // The kernel was detected on this CPU when the weight was packed.
    run(w.kernel, a, sa, w, dst)
}

/// [`matmul`] with a chosen kernel (which this CPU must have).
pub fn matmul_with(kernel: Kernel, a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
    assert!(
        kernel.available(),
        "int8 product: {kernel:?} is not on this CPU"
    );
    run(kernel, a, sa, w, dst)
}

fn run(kernel: Kernel, a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
    let m = sa.len();
    assert!(
        a.len() == m * w.kp && dst.len() == m * w.n,
        "int8 product: shapes"
    );
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the kernel's instructions (detected at packing, or checked by
        // `matmul_with`); shapes checked above.
        Kernel::Avx2 => unsafe { x86::rows_avx2(a, sa, w, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Vnni => unsafe { x86::rows_vnni(a, sa, w, dst) },
        _ => portable(a, sa, w, dst),
    }
}

/// The same integers in plain loops, and the same float operations after them.
fn portable(a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
    let (kp, n) = (w.kp, w.n);
    for ((row, &s), d) in a.chunks_exact(kp).zip(sa).zip(dst.chunks_exact_mut(n)) {
        for (o, out) in d.iter_mut().enumerate() {
            let panel = &w.panels[o / PANEL * PANEL * kp..][..PANEL * kp];
            let mut acc = 0i32;
            for (step, x) in row.chunks_exact(4).enumerate() {
                let wq = &panel[step * PANEL * 4 + (o % PANEL) * 4..][..4];
                for (&xv, &wv) in x.iter().zip(wq) {
                    acc += i32::from(xv) * i32::from(wv);
                }
            }
            *out = acc as f32 * (s * w.scale[o]) + w.bias[o];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedRelu, PANEL};
    use std::arch::x86_64::*;

    /// Rows per tile.
    const MR: usize = 4;

    /// Every row against every panel, `MR` rows at a time: `tile(rows, a, b, sa, panel)`
    /// writes `rows` rows of one panel's 16 outputs into its argument.
    #[inline(always)]
    unsafe fn rows(
        a: &[u8],
        sa: &[f32],
        w: &PackedRelu,
        dst: &mut [f32],
        tile: impl Fn(usize, *const u8, *const i8, *const f32, usize, &mut [[f32; PANEL]; MR]),
    ) {
        let (kp, n) = (w.kp, w.n);
        let m = sa.len();
        let mut out = [[0f32; PANEL]; MR];
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(MR);
            for p in 0..n.div_ceil(PANEL) {
                let b = w.panels.as_ptr().add(p * PANEL * kp);
                tile(
                    mr,
                    a.as_ptr().add(r * kp),
                    b,
                    sa.as_ptr().add(r),
                    p * PANEL,
                    &mut out,
                );
                let cols = (n - p * PANEL).min(PANEL);
                for (i, o) in out.iter().take(mr).enumerate() {
                    dst[(r + i) * n + p * PANEL..][..cols].copy_from_slice(&o[..cols]);
                }
            }
            r += mr;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
        rows(a, sa, w, dst, |mr, a, b, s, col, out| match mr {
            4 => tile_avx2::<4>(a, w, b, s, col, out),
            3 => tile_avx2::<3>(a, w, b, s, col, out),
            2 => tile_avx2::<2>(a, w, b, s, col, out),
            _ => tile_avx2::<1>(a, w, b, s, col, out),
        })
    }

    /// `R` rows × one panel of 16 outputs: exact 32-bit sums, then `Σ · (sa · sw) + bias`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_avx2<const R: usize>(
        a: *const u8,
        w: &PackedRelu,
        b: *const i8,
        sa: *const f32,
        col: usize,
        out: &mut [[f32; PANEL]; MR],
    ) {
        let kp = w.kp;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for step in 0..kp / 4 {
            let bp = b.add(step * PANEL * 4);
            let w0 = _mm256_loadu_si256(bp as *const __m256i);
            let w1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av =
                    _mm256_set1_epi32((a.add(r * kp + step * 4) as *const i32).read_unaligned());
                acc[0] = _mm256_add_epi32(
                    acc[0],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones),
                );
                acc[1] = _mm256_add_epi32(
                    acc[1],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones),
                );
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm256_set1_ps(*sa.add(r));
            for (h, acc) in acc.iter().enumerate() {
                let sw = _mm256_loadu_ps(w.scale.as_ptr().add(col + 8 * h));
                let bias = _mm256_loadu_ps(w.bias.as_ptr().add(col + 8 * h));
                let y = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(*acc), _mm256_mul_ps(s, sw)),
                    bias,
                );
                _mm256_storeu_ps(out[r].as_mut_ptr().add(8 * h), y);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn rows_vnni(a: &[u8], sa: &[f32], w: &PackedRelu, dst: &mut [f32]) {
        rows(a, sa, w, dst, |mr, a, b, s, col, out| match mr {
            4 => tile_vnni::<4>(a, w, b, s, col, out),
            3 => tile_vnni::<3>(a, w, b, s, col, out),
            2 => tile_vnni::<2>(a, w, b, s, col, out),
            _ => tile_vnni::<1>(a, w, b, s, col, out),
        })
    }

    /// `R` rows × one panel of 16 outputs with `vpdpbusd`, then `Σ · (sa · sw) + bias`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn tile_vnni<const R: usize>(
        a: *const u8,
        w: &PackedRelu,
        b: *const i8,
        sa: *const f32,
        col: usize,
        out: &mut [[f32; PANEL]; MR],
    ) {
        let kp = w.kp;
        let mut acc = [_mm512_setzero_si512(); R];
        for step in 0..kp / 4 {
            let wv = _mm512_loadu_si512(b.add(step * PANEL * 4) as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av =
                    _mm512_set1_epi32((a.add(r * kp + step * 4) as *const i32).read_unaligned());
                *acc = _mm512_dpbusd_epi32(*acc, av, wv);
            }
        }
        let sw = _mm512_loadu_ps(w.scale.as_ptr().add(col));
        let bias = _mm512_loadu_ps(w.bias.as_ptr().add(col));
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm512_set1_ps(*sa.add(r));
            let y = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(*acc), _mm512_mul_ps(s, sw)),
                bias,
            );
            _mm512_storeu_ps(out[r].as_mut_ptr(), y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(n: usize, k: usize, seed: u64) -> (Vec<i8>, Vec<f32>) {
        let mut rng = frugal_formats::rng::SplitMix64(seed);
        let q = (0..n * k)
            .map(|_| (rng.next_f64() * 256.0 - 128.0).floor() as i8)
            .collect();
        let s = (0..n)
            .map(|_| 0.001 + rng.next_f64() as f32 * 0.01)
            .collect();
        (q, s)
    }

    /// Every kernel this CPU has gives the portable loop's bits, and the portable loop the
    /// exact integer product (f64) to float rounding, on shapes with tails everywhere:
    /// rows not a multiple of the tile, outputs not a multiple of 16, inputs not of 4, and the
    /// extreme bytes (127 activations against −128 weights).
    #[test]
    fn kernels_agree_bit_for_bit_with_the_exact_product() {
        for &(m, n, k) in &[
            (7, 10, 9),
            (16, 16, 72),
            (1, 128, 256),
            (5, 33, 131),
            (4, 64, 288),
        ] {
            let (mut q, s) = weights(n, k, (m * n * k) as u64);
            q[0] = i8::MIN;
            let bias: Vec<f32> = (0..n).map(|o| o as f32 * 0.1 - 0.5).collect();
            let w = PackedRelu::new(&q, &s, &bias, k);
            let mut rng = frugal_formats::rng::SplitMix64(9);
            let mut a = vec![0u8; m * w.kp];
            let mut sa = Vec::new();
            for row in a.chunks_exact_mut(w.kp) {
                let x: Vec<f32> = (0..k).map(|_| rng.next_f64() as f32 - 0.2).collect();
                sa.push(round_nonneg(&x, &mut row[..k]));
            }
            a[..k].fill(127);
            let mut want = vec![0f32; m * n];
            matmul_with(Kernel::Portable, &a, &sa, &w, &mut want);
            for r in 0..m {
                for o in 0..n {
                    let exact: f64 = (0..k)
                        .map(|j| f64::from(a[r * w.kp + j]) * f64::from(q[o * k + j]))
                        .sum::<f64>()
                        * f64::from(sa[r])
                        * f64::from(s[o])
                        + f64::from(bias[o]);
                    let got = f64::from(want[r * n + o]);
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "{got} vs {exact}"
                    );
                }
            }
            for kernel in [Kernel::Avx2, Kernel::Vnni] {
                if !kernel.available() {
                    continue;
                }
                let mut got = vec![f32::NAN; m * n];
                matmul_with(kernel, &a, &sa, &w, &mut got);
                assert_eq!(got, want, "{kernel:?} at {m}×{n}×{k}");
            }
        }
    }

    /// Rounding: the largest value is 127, negatives 0, the scale maps back within half a step.
    #[test]
    fn rounding_of_nonnegative_rows() {
        let x = [0.0, 0.5, 1.0, -0.3, 0.25];
        let mut q = [9u8; 5];
        let s = round_nonneg(&x, &mut q);
        assert_eq!(q, [0, 64, 127, 0, 32]);
        assert!((s - 1.0 / 127.0).abs() < 1e-9);
        for (&qi, &xi) in q.iter().zip(&x) {
            assert!((f32::from(qi) * s - xi.max(0.0)).abs() <= 0.5 * s + 1e-7);
        }
        let mut z = [5u8; 3];
        assert_eq!(round_nonneg(&[0.0, -1.0, 0.0], &mut z), 0.0);
        assert_eq!(z, [0, 0, 0]);
    }
}
