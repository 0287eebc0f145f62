//! Numeric building blocks shared by the hand-written forward passes ([`crate::cnn_kernels`],
//! [`crate::bert_kernels`], and the decoder's gated units in [`crate::llama`]): a strided matrix
//! product on `gemm` (the kernels candle's own matmul uses), and `exp`/`erf`/GELU/SiLU
//! approximations written branch-free so the compiler vectorises the loops that call them (the
//! standard library's are scalar calls).

use gemm::Parallelism;

/// The integer-product kernels (8-bit codes times 8-bit activations) a CPU runs, narrowest
/// first: [`crate::relu_int8`]'s and [`crate::qmatmul`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Plain loops (the reference).
    Portable,
    /// AVX2 `vpmaddubsw`/`vpmaddwd`.
    Avx2,
    /// AVX-512 VNNI `vpdpbusd`.
    Vnni,
}

impl Kernel {
    /// Every kernel, narrowest first.
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2, Kernel::Vnni];

    /// The best this CPU has, within what `FRUGAL_ISA` allows (`scalar`, `avx2`; see
    /// [`crate::gemm::Isa`]).
    pub fn detected() -> Kernel {
        use crate::gemm::Isa;
        match Isa::detected() {
            Isa::Scalar => Kernel::Portable,
            Isa::Avx512 if vnni() => Kernel::Vnni,
            _ => Kernel::Avx2,
        }
    }

    /// Whether this CPU can run this kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2 => crate::gemm::Isa::Avx2.available(),
            Kernel::Vnni => crate::gemm::Isa::Avx512.available() && vnni(),
        }
    }
}

fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled twice, for baseline x86-64 and for AVX2, and picks
/// by CPU at run time (the detection is cached). The copies do the same operations in the same
/// order (Rust never fuses a multiply and an add on its own), so they give the same results; the
/// AVX2 one runs loops 8 lanes wide instead of 4. Arguments must be plain names. See also
/// [`avx512_dispatch!`].
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd_dispatch!(@ ["avx2"] $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? $body);
    };
}

/// [`avx2_dispatch!`] with a third copy for AVX-512F, preferred where present. Worth it for long
/// element-wise loops (16 lanes); for the k-quant searches, whose arrays of 8 or 9 candidates
/// fit AVX2 registers, it measured slower (masked 512-bit operations), so they use the AVX2 one.
#[macro_export]
macro_rules! avx512_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd_dispatch!(@ ["avx512f", "avx2"] $(#[$m])* $vis fn $name($($arg: $ty),*) $(-> $ret)? $body);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! simd_dispatch {
    (@ [$($feat:tt),*] $(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                $crate::simd_dispatch!(@try [$($feat),*] body ($($arg: $ty),*) $(-> $ret)?);
            }
            body($($arg),*)
        }
    };
    (@try [$feat:tt $(, $rest:tt)*] $body:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        if std::arch::is_x86_feature_detected!($feat) {
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            // SAFETY: the CPU has the feature (checked just above).
            return unsafe { wide($($arg),*) };
        }
        $crate::simd_dispatch!(@try [$($rest),*] $body ($($arg: $ty),*) $(-> $ret)?);
    };
    (@try [] $body:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {};
}

/// `dst[m×n]` (row-major, rows `dst_rs` apart) `= (dst if acc) + lhs[m×k] · rhs[k×n]`, where
/// `lhs` and `rhs` are given with their (row, column) strides, so transposes and column slices
/// cost nothing. Large products are spread over rayon's threads, small ones run on the caller's.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    let parallel = mnk.0 * mnk.1 * mnk.2 >= 1 << 16;
    gemm_checked(
        mnk,
        dst,
        dst_rs,
        acc,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        parallel,
    );
}

/// [`matmul`] on the caller's thread whatever its size (a single query served: waking other
/// threads costs more than the product).
#[allow(clippy::too_many_arguments)]
pub fn matmul_on_caller(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    gemm_checked(
        mnk,
        dst,
        mnk.1,
        acc,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        false,
    );
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    (lrs, lcs): (usize, usize),
    rhs: &[f32],
    (rrs, rcs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_rs >= n, "matmul: destination rows overlap");
    assert!(
        dst.len() >= (m - 1) * dst_rs + n,
        "matmul: destination too small"
    );
    if k == 0 {
        if !acc {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // The last element each operand is read at must lie inside it.
    assert!(
        (m - 1) * lrs + (k - 1) * lcs < lhs.len(),
        "matmul: lhs too small"
    );
    assert!(
        (k - 1) * rrs + (n - 1) * rcs < rhs.len(),
        "matmul: rhs too small"
    );
    let threads = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: every index gemm touches is `row·rs + col·cs` within the extents checked above;
    // `dst` is exclusively borrowed and does not alias the shared operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
}

/// [`matmul_strided`] into a contiguous `dst[m×n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    matmul_strided(mnk, dst, mnk.1, acc, lhs, lhs_strides, rhs, rhs_strides);
}

/// `op`-reduction of `map(v)` in eight interleaved partial results, combined at the end, so
/// the compiler can vectorise it (a plain float reduction must keep its order and stays scalar).
#[inline(always)]
fn reduce8(v: &[f32], init: f32, op: impl Fn(f32, f32) -> f32, map: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = op(*a, map(*x));
        }
    }
    let r = acc.iter().fold(init, |r, &a| op(r, a));
    tail.iter().fold(r, |r, &x| op(r, map(x)))
}

/// `Σ f(v)` over `v`, vectorisable ([`reduce8`]).
#[inline(always)]
pub fn sum_by(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    reduce8(v, 0.0, |a, b| a + b, f)
}

/// The largest value of `v` (−∞ when empty), vectorisable.
#[inline(always)]
pub fn max(v: &[f32]) -> f32 {
    reduce8(v, f32::NEG_INFINITY, f32::max, |x| x)
}

/// The largest `|v|` (0 when empty), vectorisable.
#[inline(always)]
pub fn max_abs(v: &[f32]) -> f32 {
    reduce8(v, 0.0, f32::max, f32::abs)
}

/// The first value of `v` with the largest magnitude (0 when all are 0 or `v` is empty; NaNs
/// skipped): ggml's Q8_K scale comes from it, sign included.
#[inline(always)]
pub fn signed_max_abs(v: &[f32]) -> f32 {
    let amax = max_abs(v);
    if amax == 0.0 {
        return 0.0;
    }
    v.iter().copied().find(|x| x.abs() == amax).unwrap_or(0.0)
}

/// `Σ a·b` in sixteen partial sums, vectorisable (one running sum is a chain the compiler
/// keeps scalar: a plain sum was 4 % of a small model's decoding, in one query's attention).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `eˣ` to a few ulp for `x` in [-87, 88] (clamped outside): `x = n·ln2 + r` with `n` an
/// integer (built in the exponent bits) and `|r| ≤ ln2/2` found in two steps (Cody & Waite), then
/// a degree-7 polynomial for `eʳ`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 with its last 12 bits zero: n·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (exact for |t| < 2²²): the sum's low
    // mantissa bits then hold n itself, so 2ⁿ is built with integer operations. (`round` is a
    // library call on baseline x86-64 and `as i32` checks for NaN; either stops vectorisation.)
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let y = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + y * (1.0
            + y * (0.5
                + y * (1.0 / 6.0
                    + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y / 5040.0))))));
    let bits = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(127)
        << 23;
    p * f32::from_bits(bits)
}

/// The error function to a few ulp, without branches or calls: on `x` clamped to [−4, 4]
/// (beyond which erf is ±1 in f32), an odd degree-13 polynomial over an even degree-8 one
/// (the rational fit Eigen and XLA use for `erf` on float).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

/// Exact (erf) GELU, `x·Φ(x)`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU by its tanh approximation (ggml's and candle's `gelu`),
/// `½x(1 + tanh(y))` with `y = √(2/π)(x + 0.044715x³)`, written as `x·σ(2y)` on [`exp`]: the
/// same function, without `1 + tanh`'s cancellation where `tanh` is near −1.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = x / (1.0 + exp(-2.0 * SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)));
    // Below −20 the value is under 1e-300: zero (the clamped exponential would leave x/e⁸⁸).
    if x < -20.0 {
        -0.0
    } else {
        y
    }
}

/// `x·σ(x)` on [`exp`].
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let y = x / (1.0 + exp(-x));
    // Below −100 the value is under 1e-40: zero (the clamped exponential would leave x/e⁸⁸).
    if x < -100.0 {
        -0.0
    } else {
        y
    }
}

crate::avx512_dispatch! {
    /// A gated unit in place: `g ← f(g) · u`, with `f` GELU (tanh form) if `gelu`, else SiLU.
    /// Vectorised (candle's `gelu` and `silu` call the library's `tanh` and `exp` per value:
    /// a tenth of Gemma 3's prompt).
    pub fn glu_in_place(g: &mut [f32], u: &[f32], gelu: bool) {
        if gelu {
            g.iter_mut().zip(u).for_each(|(g, u)| *g = gelu_tanh(*g) * u);
        } else {
            g.iter_mut().zip(u).for_each(|(g, u)| *g = silu(*g) * u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.004; // [-80, 80]
            let e = f64::from(exp(x));
            let r = f64::from(x).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            let z = i as f32 * 0.0004; // [-8, 8]
            let r = candle_core::cpu::erf::erf_f64(f64::from(z));
            worst_erf = worst_erf.max((f64::from(erf(z)) - r).abs());
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(-87.0) < 1e-37);
    }

    #[test]
    fn gated_units_match_the_exact_formulas() {
        let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 * 0.001).collect();
        let u: Vec<f32> = xs.iter().map(|x| 1.0 + x.abs()).collect();
        for gelu in [true, false] {
            let mut g = xs.clone();
            glu_in_place(&mut g, &u, gelu);
            for ((x, u), y) in xs.iter().zip(&u).zip(&g) {
                let x = f64::from(*x);
                let f = if gelu {
                    0.5 * x
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                                .tanh())
                } else {
                    x / (1.0 + (-x).exp())
                };
                let want = f * f64::from(*u);
                let err = (f64::from(*y) - want).abs();
                assert!(
                    err <= 1e-6 * want.abs() + 1e-9,
                    "gelu {gelu} x {x}: {y} vs {want}"
                );
            }
        }
        // Far tails: the identity and zero, no NaN from the clamped exponential.
        assert_eq!(gelu_tanh(60.0), 60.0);
        for x in [-60.0, -1e30, -1e38, f32::NEG_INFINITY] {
            assert_eq!((gelu_tanh(x), silu(x.min(-101.0))), (0.0, 0.0), "{x}");
        }
        assert_eq!(
            (gelu_tanh(f32::INFINITY), silu(1e30)),
            (f32::INFINITY, 1e30)
        );
        assert!(gelu_tanh(f32::NAN).is_nan() && silu(f32::NAN).is_nan());
    }

    #[test]
    fn strided_product_writes_only_its_columns() {
        // [2×3] · [3×2] into columns 1..3 of a [2×4] buffer.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut d = vec![-1.0f32; 8];
        matmul_strided((2, 2, 3), &mut d[1..], 4, false, &a, (3, 1), &b, (2, 1));
        assert_eq!(d, vec![-1.0, 4.0, 5.0, -1.0, -1.0, 10.0, 11.0, -1.0]);
    }
}
