//! Products of activation rows with weight rows stored as F32, F16 or BF16: `y = x Wᵀ`, both
//! operands contiguous along the shared dimension `k` (how GGUF stores a weight and how a
//! layer's input arrives), so nothing is transposed, packed or widened to an F32 copy first.
//!
//! Tiles of `RM` activation rows × `RN` weight rows keep `RM·RN` running sums in vector
//! registers, each weight element widened to f32 as it is loaded (the way llama.cpp's tinyBLAS
//! multiplies): AVX-512F with F16C conversions (4 × 6 tiles of 16 lanes), or AVX2 + FMA (3 × 4
//! tiles of 8 lanes), chosen at run time ([`Isa::detected`]); [`Isa::Scalar`] is the plain loop
//! each is tested against, and what runs elsewhere. A tile's sums run per lane and are added
//! across lanes at the end, so results differ from the plain loop by summation order only.
//!
//! Work is split over the weight's rows (each task a range of them, all activation rows), in
//! blocks of activation rows small enough to stay in the core's L2 cache while a weight panel
//! stays in L1.

use half::{bf16, f16};
use rayon::prelude::*;

/// A weight's rows `[n, k]`, in their stored element type.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl Rows<'_> {
    /// Elements (`n · k`).
    pub fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
            Rows::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A weight element type the kernels read.
pub trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// An element type every vector path can load.
#[cfg(target_arch = "x86_64")]
trait Kernel: Elem + avx512::Load + avx2::Load {}
#[cfg(target_arch = "x86_64")]
impl<T: Elem + avx512::Load + avx2::Load> Kernel for T {}
#[cfg(not(target_arch = "x86_64"))]
trait Kernel: Elem {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: Elem> Kernel for T {}

/// The instruction set a product runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain loops (the reference).
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 F, BW and VL, with F16C.
    Avx512,
}

impl Isa {
    /// The widest set this CPU has (detected once). `FRUGAL_ISA=scalar|avx2` asks for a
    /// narrower one (to compare paths on one machine).
    pub fn detected() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let best = [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Scalar);
            let asked = match std::env::var("FRUGAL_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") => Isa::Avx2,
                _ => best,
            };
            asked.min(best)
        })
    }

    /// Whether this CPU can run this set.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::Avx512 => avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }
}

/// `y[i, j] = Σ_k x[i, k] · w[j, k]` for `x` `[m, k]`, `w` `[n, k]`, `y` `[m, n]`, with the
/// detected instruction set, on the rayon pool.
///
/// # Panics
/// If the lengths are not `m · k`, `n · k` and `m · n` for some `m` and `n` (`k > 0`).
pub fn matmul_t(x: &[f32], k: usize, w: Rows<'_>, y: &mut [f32]) {
    matmul_t_with(Isa::detected(), x, k, w, y)
}

/// [`matmul_t`] with a chosen instruction set (falls back to [`Isa::Scalar`] where the CPU
/// lacks it).
pub fn matmul_t_with(isa: Isa, x: &[f32], k: usize, w: Rows<'_>, y: &mut [f32]) {
    let isa = if isa.available() { isa } else { Isa::Scalar };
    match w {
        Rows::F32(w) => run(isa, x, k, w, y),
        Rows::F16(w) => run(isa, x, k, w, y),
        Rows::Bf16(w) => run(isa, x, k, w, y),
    }
}

/// A pointer shared by the tasks that write disjoint parts of one output.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own columns of the output (see `run`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the whole `Out`, not its field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Bytes of activation rows a block keeps in L2 while the weight panels pass over it.
const X_BLOCK_BYTES: usize = 384 << 10;

fn run<E: Kernel>(isa: Isa, x: &[f32], k: usize, w: &[E], y: &mut [f32]) {
    assert!(k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k));
    let (m, n) = (x.len() / k, w.len() / k);
    assert_eq!(y.len(), m * n, "output of {} for [{m}, {n}]", y.len());
    if m == 0 || n == 0 {
        return;
    }
    if isa == Isa::Scalar {
        y.par_chunks_mut(n)
            .zip(x.par_chunks(k))
            .for_each(|(yr, xr)| reference_row(xr, w, yr));
        return;
    }
    // The path's tiles and their largest shape (activation rows × weight rows).
    let (tiles, (rm, rn)): (Tiles<E>, _) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (avx512::tiles::<E>, (4, 6)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (avx2::tiles::<E>, (3, 4)),
        _ => unreachable!("vector paths exist on x86-64 only"),
    };
    // Tasks: ranges of weight rows, a few per thread (whole panels but the last).
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(4 * threads).max(8 * rn).div_ceil(rn) * rn;
    let mb = (X_BLOCK_BYTES / (4 * k)).max(rm) / rm * rm;
    let out = Out(y.as_mut_ptr());
    (0..n.div_ceil(per)).into_par_iter().for_each(|t| {
        let cols = t * per..((t + 1) * per).min(n);
        for i0 in (0..m).step_by(mb) {
            let rows = i0..(i0 + mb).min(m);
            // SAFETY: shapes checked above; this task writes only columns `cols` of `y`; the
            // path's instructions are present (`isa` is available).
            unsafe { block(tiles, (rm, rn), x, k, w, n, rows, &cols, out) };
        }
    });
}

/// A vector path's tiles: `(rm, rn, x, w, k, y, n)` multiplies `rm` activation rows from `x`
/// by `rn` weight rows from `w` into `y` (row stride `n`).
type Tiles<E> = unsafe fn(usize, usize, *const f32, *const E, usize, *mut f32, usize);

/// Rows `rows` × weight rows `cols` of the product, in tiles of at most `rm_max × rn_max`:
/// each panel of weight rows (in L1) passes over every activation row of the block (in L2).
///
/// # Safety
/// `tiles`' instructions present; `x` `[m, k]`, `w` `[n, k]`, `y` `[m, n]` with the ranges
/// inside; no other thread writes these outputs.
#[allow(clippy::too_many_arguments)]
unsafe fn block<E>(
    tiles: Tiles<E>,
    (rm_max, rn_max): (usize, usize),
    x: &[f32],
    k: usize,
    w: &[E],
    n: usize,
    rows: std::ops::Range<usize>,
    cols: &std::ops::Range<usize>,
    y: Out,
) {
    let mut j = cols.start;
    while j < cols.end {
        let rn = (cols.end - j).min(rn_max);
        let wp = w.as_ptr().add(j * k);
        let mut i = rows.start;
        while i < rows.end {
            let rm = (rows.end - i).min(rm_max);
            tiles(
                rm,
                rn,
                x.as_ptr().add(i * k),
                wp,
                k,
                y.ptr().add(i * n + j),
                n,
            );
            i += rm;
        }
        j += rn;
    }
}

/// One output row, plainly: `yr[j] = Σ_k xr[k] · w[j, k]`, summed in order in f32.
fn reference_row<E: Elem>(xr: &[f32], w: &[E], yr: &mut [f32]) {
    for (o, wr) in yr.iter_mut().zip(w.chunks_exact(xr.len())) {
        *o = xr
            .iter()
            .zip(wr)
            .fold(0f32, |s, (&a, &b)| a.mul_add(b.to_f32(), s));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Elem;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// 16 weight elements widened to f32.
    pub(super) trait Load: Elem {
        /// # Safety
        /// `p` valid for 16 reads; AVX-512 F/BW/VL present.
        unsafe fn load(p: *const Self) -> __m512;
        /// # Safety
        /// `p` valid for the reads `mask` selects; AVX-512 F/BW/VL present.
        unsafe fn load_masked(p: *const Self, mask: __mmask16) -> __m512;
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, mask: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Load for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f16, mask: __mmask16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    #[inline(always)]
    unsafe fn widen_bf16(v: __m256i) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
    }

    impl Load for bf16 {
        #[inline(always)]
        unsafe fn load(p: *const bf16) -> __m512 {
            widen_bf16(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const bf16, mask: __mmask16) -> __m512 {
            widen_bf16(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    /// `rm ≤ 4` activation rows × `rn ≤ 6` weight rows (a [`super::Tiles`]).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL, F16C and FMA present; `x` valid for `rm` rows and `w` for `rn` rows of
    /// `k`, `y` for `rm` rows of stride `n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    pub(super) unsafe fn tiles<E: Load>(
        rm: usize,
        rn: usize,
        x: *const f32,
        w: *const E,
        k: usize,
        y: *mut f32,
        n: usize,
    ) {
        macro_rules! cols {
            ($rm:literal) => {
                match rn {
                    6 => tile::<$rm, 6, E>(x, w, k, y, n),
                    5 => tile::<$rm, 5, E>(x, w, k, y, n),
                    4 => tile::<$rm, 4, E>(x, w, k, y, n),
                    3 => tile::<$rm, 3, E>(x, w, k, y, n),
                    2 => tile::<$rm, 2, E>(x, w, k, y, n),
                    _ => tile::<$rm, 1, E>(x, w, k, y, n),
                }
            };
        }
        match rm {
            4 => cols!(4),
            3 => cols!(3),
            2 => cols!(2),
            _ => cols!(1),
        }
    }

    /// `RM` activation rows × `RN` weight rows: `RM·RN` sums of 16 lanes each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `c` and `r` index two arrays each
    unsafe fn tile<const RM: usize, const RN: usize, E: Load>(
        x: *const f32,
        w: *const E,
        k: usize,
        y: *mut f32,
        n: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); RN]; RM];
        let mut kk = 0;
        while kk + 16 <= k {
            let mut xv = [_mm512_setzero_ps(); RM];
            for (r, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(x.add(r * k + kk));
            }
            for c in 0..RN {
                let wv = E::load(w.add(c * k + kk));
                for r in 0..RM {
                    acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
                }
            }
            kk += 16;
        }
        if kk < k {
            let mask: __mmask16 = (1u16 << (k - kk)) - 1;
            let mut xv = [_mm512_setzero_ps(); RM];
            for (r, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, x.add(r * k + kk));
            }
            for c in 0..RN {
                let wv = E::load_masked(w.add(c * k + kk), mask);
                for r in 0..RM {
                    acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                *y.add(r * n + c) = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Elem;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// 8 weight elements widened to f32.
    pub(super) trait Load: Elem {
        /// # Safety
        /// `p` valid for 8 reads; AVX2, FMA and F16C present.
        unsafe fn load(p: *const Self) -> __m256;
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    impl Load for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    impl Load for bf16 {
        #[inline(always)]
        unsafe fn load(p: *const bf16) -> __m256 {
            let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
        }
    }

    /// `rm ≤ 3` activation rows × `rn ≤ 4` weight rows (a [`super::Tiles`]).
    ///
    /// # Safety
    /// AVX2, FMA and F16C present; as [`super::avx512::tiles`] otherwise.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tiles<E: Load>(
        rm: usize,
        rn: usize,
        x: *const f32,
        w: *const E,
        k: usize,
        y: *mut f32,
        n: usize,
    ) {
        macro_rules! cols {
            ($rm:literal) => {
                match rn {
                    4 => tile::<$rm, 4, E>(x, w, k, y, n),
                    3 => tile::<$rm, 3, E>(x, w, k, y, n),
                    2 => tile::<$rm, 2, E>(x, w, k, y, n),
                    _ => tile::<$rm, 1, E>(x, w, k, y, n),
                }
            };
        }
        match rm {
            3 => cols!(3),
            2 => cols!(2),
            _ => cols!(1),
        }
    }

    /// `RM` activation rows × `RN` weight rows: `RM·RN` sums of 8 lanes each, the last
    /// `k mod 8` products added after the lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `c` and `r` index two arrays each
    unsafe fn tile<const RM: usize, const RN: usize, E: Load>(
        x: *const f32,
        w: *const E,
        k: usize,
        y: *mut f32,
        n: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        let mut kk = 0;
        while kk + 8 <= k {
            let mut xv = [_mm256_setzero_ps(); RM];
            for (r, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(x.add(r * k + kk));
            }
            for c in 0..RN {
                let wv = E::load(w.add(c * k + kk));
                for r in 0..RM {
                    acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
                }
            }
            kk += 8;
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                let h = _mm_add_ps(_mm256_castps256_ps128(*a), _mm256_extractf128_ps::<1>(*a));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
                let mut s = _mm_cvtss_f32(h);
                for t in kk..k {
                    s = (*x.add(r * k + t)).mul_add((*w.add(c * k + t)).to_f32(), s);
                }
                *y.add(r * n + c) = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut r = frugal_formats::rng::SplitMix64(seed);
        (0..len).map(|_| r.next_f64() as f32 * 2.0 - 1.0).collect()
    }

    /// Every path against the f64 sum of the same (rounded) operands: within the f32 rounding
    /// of a sum of `k` terms. Shapes cover every tile edge and the k tails.
    #[test]
    fn every_path_and_type_matches_the_exact_sum() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 17),
            (5, 13, 33),
            (9, 25, 64),
            (4, 6, 576),
            (13, 31, 1000),
            (2, 50, 4103),
        ] {
            let x = data(m * k, 1 + m as u64);
            let w32 = data(n * k, 2 + n as u64);
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
            let exact = |wf: &dyn Fn(usize) -> f32| -> Vec<f64> {
                let mut out = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        out[i * n + j] = (0..k)
                            .map(|t| f64::from(x[i * k + t]) * f64::from(wf(j * k + t)))
                            .sum();
                    }
                }
                out
            };
            let cases: [(Rows, Vec<f64>); 3] = [
                (Rows::F32(&w32), exact(&|i| w32[i])),
                (Rows::F16(&w16), exact(&|i| w16[i].to_f32())),
                (Rows::Bf16(&wb), exact(&|i| wb[i].to_f32())),
            ];
            for (w, want) in &cases {
                for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
                    if !isa.available() {
                        continue;
                    }
                    let mut y = vec![f32::NAN; m * n];
                    matmul_t_with(isa, &x, k, *w, &mut y);
                    for (g, e) in y.iter().zip(want) {
                        // |x|, |w| ≤ 1: each partial sum is at most k in magnitude.
                        let tol = k as f64 * 1e-6 + 1e-6;
                        assert!(
                            (f64::from(*g) - e).abs() <= tol,
                            "{isa:?} {w:?} [{m}×{k}]·[{n}×{k}]ᵀ: {g} vs {e}",
                            w = std::mem::discriminant(w)
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "output of")]
    fn a_wrong_output_length_is_refused() {
        let mut y = vec![0f32; 3];
        matmul_t(&[1.0; 8], 4, Rows::F32(&[1.0; 8]), &mut y);
    }
}
