//! Products of block-quantized weights with 8-bit activations, as ggml computes them: the
//! input rows are rounded to ggml's activation blocks (Q8_0, Q8_1 or Q8_K, see
//! [`dot::ActFormat`]) and multiplied with the weight's integer codes in integer arithmetic, each
//! block's sum scaled in f32 — llama.cpp's arithmetic up to the order of the f32 sums. Every
//! type ggml's legacy and k-quant families have: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K.
//!
//! A weight row is unpacked once ([`prepare::Prepared`]: a byte per value and the block
//! scales) and multiplied with every input row, rows taken in chunks that stay in a core's L2
//! cache while the input rows stream past; the products are an AVX2 kernel (`maddubs`, chosen
//! at run time) or the plain reference, tested against each other ([`dot`]).

pub mod dot;
pub mod fused;
pub mod prepare;

use dot::{ActFormat, ActRow, Activations, WeightRow};
use prepare::Prepared;
use rayon::prelude::*;

/// A block type these kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum BlockType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// One row per type: candle's name for it, bytes per block, values per block, the activation
/// blocks ggml multiplies it with, whether its codes are signed (the `_0` types), the zero
/// point the unsigned k-quant codes carry, and whether Frugal's kernel is the faster one for a
/// single input row (a decoded token) and for many (a prompt), as measured by
/// `bench/qmatmul-kernels.sh` (BENCHMARKS.md, "Quantized products with 8-bit activations").
macro_rules! block_types {
    ($($t:ident: $candle:ident, $bytes:expr, $values:expr, $act:ident, $signed:expr, $zero:expr,
       ours $one:expr, $many:expr;)*) => {
        impl BlockType {
            /// Every type, in the table's order.
            pub const ALL: &'static [BlockType] = &[$(BlockType::$t),*];

            /// The kernels' type for candle's.
            pub fn of(t: candle_core::quantized::GgmlDType) -> Option<BlockType> {
                use candle_core::quantized::GgmlDType as D;
                match t {
                    $(D::$candle => Some(BlockType::$t),)*
                    _ => None,
                }
            }
            /// candle's type.
            pub fn candle(self) -> candle_core::quantized::GgmlDType {
                use candle_core::quantized::GgmlDType as D;
                match self { $(BlockType::$t => D::$candle,)* }
            }
            /// Bytes of one block.
            pub fn block_bytes(self) -> usize {
                match self { $(BlockType::$t => $bytes,)* }
            }
            /// Values in one block.
            pub fn block_values(self) -> usize {
                match self { $(BlockType::$t => $values,)* }
            }
            /// The activation blocks ggml multiplies this type with (its `vec_dot_type`).
            pub fn act(self) -> ActFormat {
                match self { $(BlockType::$t => ActFormat::$act,)* }
            }
            /// Whether the codes are signed (the `_0` legacy types).
            pub fn is_signed(self) -> bool {
                match self { $(BlockType::$t => $signed,)* }
            }
            /// The value the unsigned k-quant codes are centred on (Q3_K 4, Q6_K 32).
            pub fn zero_point(self) -> i16 {
                match self { $(BlockType::$t => $zero,)* }
            }
            /// Whether a layer multiplies `rows` input rows with Frugal's kernel (the faster
            /// one there) rather than candle's; never when `FRUGAL_CANDLE_QMATMUL=1`.
            pub fn ours_for(self, rows: usize) -> bool {
                let (one, many): (bool, bool) = match self { $(BlockType::$t => ($one, $many),)* };
                !candle_forced() && if rows <= 1 { one } else { many }
            }
        }
    };
}

block_types! {
    Q4_0: Q4_0, 18, 32, Q8_0, true, 0, ours true, true;
    Q4_1: Q4_1, 20, 32, Q8_1, false, 0, ours true, true;
    Q5_0: Q5_0, 22, 32, Q8_0, true, 0, ours true, true;
    Q5_1: Q5_1, 24, 32, Q8_1, false, 0, ours true, true;
    Q8_0: Q8_0, 34, 32, Q8_0, true, 0, ours true, true;
    Q2_K: Q2K, 84, 256, Q8K, false, 0, ours false, false;
    Q3_K: Q3K, 110, 256, Q8K, false, 4, ours false, true;
    Q4_K: Q4K, 144, 256, Q8K, false, 0, ours false, false;
    Q5_K: Q5K, 176, 256, Q8K, false, 0, ours false, true;
    Q6_K: Q6K, 210, 256, Q8K, false, 32, ours false, false;
}

impl BlockType {
    /// A k-quant (super-blocks of 256 with scales per 16 values).
    pub fn is_k(self) -> bool {
        self.block_values() == 256
    }
}

/// Whether the environment asks for candle's kernels instead (`FRUGAL_CANDLE_QMATMUL=1`; read
/// once): for benchmarks that compare the two in one build.
pub fn candle_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("FRUGAL_CANDLE_QMATMUL").is_ok_and(|v| v == "1"))
}

/// Which product runs: the AVX2 kernel where the CPU has it (and `FRUGAL_ISA` does not ask
/// for `scalar`), else the reference.
fn use_avx2() -> bool {
    crate::gemm::Isa::detected() != crate::gemm::Isa::Scalar
}

/// `w`'s row `r` of `n_in` values.
fn weight_row(p: &Prepared, ty: BlockType, r: usize, n_in: usize) -> WeightRow<'_> {
    let nb = n_in / ty.block_values();
    let ng = if ty.is_k() { n_in / 16 } else { 0 };
    WeightRow {
        w: &p.w[r * n_in..(r + 1) * n_in],
        d: &p.d[r * nb..(r + 1) * nb],
        m: &p.m[r * nb..(r + 1) * nb],
        sc: &p.sc[r * ng..(r + 1) * ng],
        zsc: &p.zsc[r * ng..(r + 1) * ng],
        mn: &p.mn[r * ng..(r + 1) * ng],
    }
}

fn act_row(a: &Activations, fmt: ActFormat, r: usize, n_in: usize) -> ActRow<'_> {
    let nb = n_in / fmt.block();
    ActRow {
        q: &a.q[r * n_in..(r + 1) * n_in],
        d: &a.d[r * nb..(r + 1) * nb],
        s: &a.s[r * nb..(r + 1) * nb],
        bsums: &a.bsums[r * n_in / 16..(r + 1) * n_in / 16],
    }
}

/// Products of one weight row with `R` input rows, by the kernel `avx2` names (the values do
/// not depend on `R`).
#[inline]
fn dot<const R: usize>(
    ty: BlockType,
    avx2: bool,
    w: WeightRow<'_>,
    x: [ActRow<'_>; R],
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is set only where the CPU has AVX2 and FMA (`use_avx2`); the rows
        // are whole blocks of one count (checked by the kernels' asserts).
        return unsafe {
            if ty.is_k() {
                dot::avx2::k(w, x)
            } else {
                dot::avx2::legacy(ty.is_signed(), w, x)
            }
        };
    }
    let _ = avx2;
    x.map(|x| {
        if ty.is_k() {
            dot::k_reference(w, x)
        } else {
            dot::legacy_reference(ty.is_signed(), w, x)
        }
    })
}

/// Input rows taken together by the kernels (each weight row's bytes loaded once for them).
const TILE: usize = 4;

/// `y = x · Wᵀ` for `x` `[m, n_in]` (f32) and the block-quantized `W` `[n_out, n_in]` given by
/// its blocks (row-major, `n_in` a multiple of the type's block); returns `y` `[m, n_out]`.
pub fn matmul(ty: BlockType, w: &[u8], n_out: usize, n_in: usize, x: &[f32]) -> Vec<f32> {
    matmul_with(ty, use_avx2(), w, n_out, n_in, x)
}

/// [`matmul`] with the kernel named: the AVX2 one (`avx2`, where the CPU has it) or the
/// reference.
pub fn matmul_with(
    ty: BlockType,
    avx2: bool,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
) -> Vec<f32> {
    let bv = ty.block_values();
    assert!(n_in.is_multiple_of(bv) && n_in > 0, "rows of whole blocks");
    let row_bytes = n_in / bv * ty.block_bytes();
    assert_eq!(w.len(), n_out * row_bytes, "weight bytes");
    assert!(x.len().is_multiple_of(n_in), "input rows");
    let avx2 = avx2 && use_avx2();
    let m = x.len() / n_in;
    let fmt = ty.act();
    let acts = Activations::quantize(fmt, x, n_in);
    // Weight rows in chunks: unpacked, a chunk is about 64 KiB (a core's L2 holds it while
    // every input row passes over it), and there are enough chunks to balance the threads.
    let by_cache = (65_536 / n_in).max(1);
    let by_threads = n_out.div_ceil(4 * rayon::current_num_threads()).max(1);
    let chunk = by_cache.min(by_threads).clamp(1, 64);
    let mut yt = vec![0f32; n_out * m];
    yt.par_chunks_mut(chunk * m)
        .zip(w.par_chunks(chunk * row_bytes))
        .for_each_init(Prepared::default, |p, (o, rows)| {
            #[cfg(target_arch = "x86_64")]
            if m < TILE && avx2 && fused::has(ty) {
                for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
                    for r in 0..m {
                        // SAFETY: `avx2` (the CPU has AVX2 and FMA), `fused::has(ty)`, and the
                        // input row has the weight row's count of super-blocks.
                        o[i * m + r] = unsafe { fused::row(ty, row, act_row(&acts, fmt, r, n_in)) };
                    }
                }
                return;
            }
            if m < TILE {
                // Few input rows: each weight row unpacked just before its products, so the
                // unpacked bytes are still in L1 when they are read.
                for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
                    p.fill(ty, row, n_in);
                    for r in 0..m {
                        let xr = [act_row(&acts, fmt, r, n_in)];
                        o[i * m + r] = dot(ty, avx2, weight_row(p, ty, 0, n_in), xr)[0];
                    }
                }
                return;
            }
            p.fill(ty, rows, n_in);
            let n = rows.len() / row_bytes;
            let mut r = 0;
            while r + TILE <= m {
                let xs: [ActRow<'_>; TILE] =
                    std::array::from_fn(|t| act_row(&acts, fmt, r + t, n_in));
                for i in 0..n {
                    let y = dot(ty, avx2, weight_row(p, ty, i, n_in), xs);
                    o[i * m + r..i * m + r + TILE].copy_from_slice(&y);
                }
                r += TILE;
            }
            for r in r..m {
                let xr = [act_row(&acts, fmt, r, n_in)];
                for i in 0..n {
                    o[i * m + r] = dot(ty, avx2, weight_row(p, ty, i, n_in), xr)[0];
                }
            }
        });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n_out];
    for (o, col) in yt.chunks_exact(m).enumerate() {
        for (r, v) in col.iter().enumerate() {
            y[r * n_out + o] = *v;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::ActRounding;
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn flat(t: candle_core::Result<Tensor>) -> Vec<f32> {
        t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Seeded values with a few large ones (so blocks have outliers) and a zero block.
    fn values(seed: u64, n: usize, zero_block: bool) -> Vec<f32> {
        let mut rng = frugal_formats::rng::SplitMix64(seed);
        let mut v: Vec<f32> = (0..n)
            .map(|i| {
                let u = rng.next_f64() as f32 - 0.45;
                if i % 97 == 5 {
                    6.0 * u
                } else {
                    u
                }
            })
            .collect();
        if zero_block {
            v[256..512].fill(0.0);
        }
        v
    }

    /// For every type: the unpacked values are candle's (ggml's) dequantization bit for bit;
    /// the activations are [`ActRounding`]'s values; the AVX2 product equals the reference to
    /// f32 summation order, and both equal the product of the decoded weight with the rounded
    /// input; candle's own kernel agrees to its 8-bit rounding; one input row at a time gives
    /// the batch's values bit for bit.
    #[test]
    fn every_type_against_ggml_decoding_the_reference_and_candle() {
        let dev = Device::Cpu;
        let (n_out, n_in, m) = (37, 768, 6);
        let w = values(7, n_out * n_in, true);
        let x = values(11, m * n_in, false);
        let wt = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, n_in), &dev).unwrap();
        let have_avx2 = use_avx2();
        for &ty in BlockType::ALL {
            let q = QTensor::quantize(&wt, ty.candle()).unwrap();
            let bytes = q.data().unwrap().into_owned();
            let decoded = flat(q.dequantize(&dev));
            let mut p = Prepared::default();
            p.fill(ty, &bytes, n_in);
            let mine: Vec<f32> = (0..n_out * n_in).map(|j| p.value(ty, j)).collect();
            for (j, (a, b)) in mine.iter().zip(&decoded).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{ty:?}: value {j}: {a} vs {b}");
            }
            // The activations: q·d are ActRounding's values for the same format.
            let fmt = ty.act();
            let acts = Activations::quantize(fmt, &x, n_in);
            // The layer seam's table of ggml's activation rounding agrees with this one.
            let g = frugal_formats::gguf::GgmlType::from_name(&format!("{ty:?}")).unwrap();
            let rounding = ActRounding::for_weight(g);
            let expected = match fmt {
                ActFormat::Q8K => ActRounding::Q8K,
                ActFormat::Q8_0 | ActFormat::Q8_1 => ActRounding::Q8_0,
            };
            assert_eq!(rounding, expected, "{ty:?}: activation format");
            let mut rounded = x.clone();
            rounded
                .chunks_exact_mut(n_in)
                .for_each(|r| rounding.round_row(r));
            for (j, r) in rounded.iter().enumerate() {
                let v = f32::from(acts.q[j]) * acts.d[j / fmt.block()];
                assert_eq!(v, *r, "{ty:?}: activation {j}");
            }
            let reference = matmul_with(ty, false, &bytes, n_out, n_in, &x);
            let exact = flat(
                Tensor::from_vec(rounded, (m, n_in), &dev)
                    .unwrap()
                    .matmul(&q.dequantize(&dev).unwrap().t().unwrap()),
            );
            let theirs = flat(QMatMul::from_qtensor(q).unwrap().forward(&xt));
            let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, ((a, b), c)) in reference.iter().zip(&exact).zip(&theirs).enumerate() {
                // Q8_1's f16-rounded block sums are the one difference from the decoded
                // product's arithmetic (a 1e-3 relative rounding of the offset term).
                let tol = if fmt == ActFormat::Q8_1 { 2e-3 } else { 2e-5 } * scale;
                assert!((a - b).abs() <= tol, "{ty:?} [{i}]: {a} vs decoded {b}");
                assert!(
                    (a - c).abs() <= 2e-3 * scale,
                    "{ty:?} [{i}]: {a} vs candle {c}"
                );
            }
            if have_avx2 {
                let fast = matmul_with(ty, true, &bytes, n_out, n_in, &x);
                for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{ty:?} [{i}]: AVX2 {a} vs reference {b}"
                    );
                }
            }
            // Through the linear-layer seam: these kernels where the table says so (unless
            // FRUGAL_CANDLE_QMATMUL=1 is set for the test run), and a wrong width refused.
            let lin = crate::linear::Linear::quantized(
                "t",
                std::sync::Arc::new(QTensor::quantize(&wt, ty.candle()).unwrap()),
                None,
            )
            .unwrap();
            let through = flat(
                lin.forward(&xt)
                    .map_err(|e| candle_core::Error::Msg(e.to_string())),
            );
            if ty.ours_for(m) {
                assert_eq!(
                    through,
                    matmul(ty, &bytes, n_out, n_in, &x),
                    "{ty:?}: Linear"
                );
            }
            let narrow = xt.narrow(1, 0, n_in - 256).unwrap();
            assert!(lin.forward(&narrow).is_err(), "{ty:?}: a narrower input");
            let batch = matmul(ty, &bytes, n_out, n_in, &x);
            for r in 0..m {
                let y1 = matmul(ty, &bytes, n_out, n_in, &x[r * n_in..(r + 1) * n_in]);
                assert_eq!(y1, batch[r * n_out..(r + 1) * n_out], "{ty:?}: row {r}");
            }
        }
    }

    /// The integer parts are exact: with every code and activation at its extreme (the sign
    /// trick's −128 codes of Q8_0 included) the AVX2 sums are the reference's.
    #[test]
    fn extreme_codes_do_not_overflow() {
        if !use_avx2() {
            return;
        }
        let n_in = 512;
        for &ty in BlockType::ALL {
            // Every byte 0xFF (largest unsigned codes, scales, minima; Q8_0's −1), then
            // every byte 0x80 (Q8_0's −128), with f16 scales of 1.0 where the layout puts them.
            for fill in [0xFFu8, 0x80] {
                let mut bytes = vec![fill; n_in / ty.block_values() * ty.block_bytes()];
                let one = half::f16::from_f32(1.0).to_le_bytes();
                let at: &[usize] = match ty {
                    BlockType::Q2_K => &[80, 82],
                    BlockType::Q3_K => &[108],
                    BlockType::Q6_K => &[208],
                    BlockType::Q4_K | BlockType::Q5_K | BlockType::Q4_1 | BlockType::Q5_1 => {
                        &[0, 2]
                    }
                    _ => &[0],
                };
                for b in bytes.chunks_exact_mut(ty.block_bytes()) {
                    for &a in at {
                        b[a..a + 2].copy_from_slice(&one);
                    }
                }
                for xv in [1f32, -1.0] {
                    let x = vec![xv; n_in];
                    let r = matmul_with(ty, false, &bytes, 1, n_in, &x);
                    let f = matmul_with(ty, true, &bytes, 1, n_in, &x);
                    assert!(
                        (r[0] - f[0]).abs() <= 1e-6 * r[0].abs().max(1.0),
                        "{ty:?} fill {fill:#x} x {xv}: {} vs {}",
                        f[0],
                        r[0]
                    );
                }
            }
        }
    }
}
