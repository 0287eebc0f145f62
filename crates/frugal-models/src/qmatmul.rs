//! Products with the ggml block types that candle 0.11's CPU backend multiplies with scalar
//! code — Q4_1, Q5_0 and Q5_1, the types SmolLM2's 576-wide rows fall back to (no k-quant tiles
//! 576) and the type SmolLM2 ships in — measured 4–6× slower per product than its SIMD Q4_0 and
//! Q8_0 (BENCHMARKS.md, "The energy objective"). Here each weight row is decoded to f32 and
//! multiplied with every input row, in loops the compiler vectorises (AVX2 or AVX-512 chosen at
//! run time), the weight rows spread over rayon's threads.
//!
//! The input is used as given, in f32: ggml (and candle) round it to 8-bit blocks first; Frugal's
//! [`crate::linear::ActRounding`] already rounds it to the same grid where the model is loaded
//! to reproduce ggml, so the two differ only in summation order and in the f16 rounding of the
//! `_1` types' block sums that ggml adds.

use rayon::prelude::*;

/// A block type these kernels multiply: its name for ggml, its block bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    Q4_1,
    Q5_0,
    Q5_1,
}

/// Values per block (all three types).
pub const BLOCK: usize = 32;

/// Whether the environment asks for candle's kernels instead (`FRUGAL_CANDLE_QMATMUL=1`; read
/// once): for benchmarks that compare the two in one build.
pub fn candle_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("FRUGAL_CANDLE_QMATMUL").is_ok_and(|v| v == "1"))
}

impl BlockType {
    /// The kernels' type for candle's, `None` where candle's own kernels are the fast ones.
    pub fn of(t: candle_core::quantized::GgmlDType) -> Option<BlockType> {
        use candle_core::quantized::GgmlDType as D;
        match t {
            D::Q4_1 => Some(BlockType::Q4_1),
            D::Q5_0 => Some(BlockType::Q5_0),
            D::Q5_1 => Some(BlockType::Q5_1),
            _ => None,
        }
    }

    /// Bytes of one block: f16 scale (and f16 minimum for the `_1` types), the fifth bits of
    /// the Q5 types (32 bits), 16 bytes of nibbles.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
        }
    }
}

/// Every f16 as f32, as ggml keeps it: a table lookup instead of a conversion per block.
fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect()
    })
}

#[inline(always)]
fn f16_at(t: &[f32], b: &[u8], at: usize) -> f32 {
    t[usize::from(u16::from_le_bytes([b[at], b[at + 1]]))]
}

/// Decodes one row of blocks into `out` (`out.len()` values, a multiple of [`BLOCK`]), the
/// formulas of ggml's `dequantize_row_*`. Inlined into the vectorised callers.
#[inline(always)]
pub fn decode_row(ty: BlockType, blocks: &[u8], out: &mut [f32]) {
    let bb = ty.block_bytes();
    let t = f16_table();
    let pairs = blocks.chunks_exact(bb).zip(out.chunks_exact_mut(BLOCK));
    match ty {
        BlockType::Q4_1 => {
            for (b, o) in pairs {
                let (d, m) = (f16_at(t, b, 0), f16_at(t, b, 2));
                let qs: &[u8; 16] = b[4..20].try_into().expect("16 bytes");
                let (lo, hi) = o.split_at_mut(BLOCK / 2);
                for ((l, h), q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
                    *l = f32::from(q & 0x0F) * d + m;
                    *h = f32::from(q >> 4) * d + m;
                }
            }
        }
        BlockType::Q5_0 | BlockType::Q5_1 => {
            let one = ty == BlockType::Q5_1;
            let (at, off) = if one { (4, 0.0) } else { (2, 16.0) };
            for (b, o) in pairs {
                let d = f16_at(t, b, 0);
                // ggml's q − 16 for Q5_0, q·d + m for Q5_1: one multiply-add either way.
                let m = if one { f16_at(t, b, 2) } else { -off * d };
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let qs: &[u8; 16] = b[at + 4..at + 20].try_into().expect("16 bytes");
                // The fifth bits spread to one byte per value first (a loop that vectorises).
                let mut h = [0u8; 32];
                for (j, v) in h.iter_mut().enumerate() {
                    *v = (((qh >> j) & 1) << 4) as u8;
                }
                let (lo, hi) = o.split_at_mut(BLOCK / 2);
                for (j, ((l, hv), q)) in lo.iter_mut().zip(hi.iter_mut()).zip(qs).enumerate() {
                    *l = f32::from((q & 0x0F) | h[j]) * d + m;
                    *hv = f32::from((q >> 4) | h[j + 16]) * d + m;
                }
            }
        }
    }
}

crate::avx512_dispatch! {
    /// Decodes weight rows `rows` (blocks of `n_in` values each) and multiplies each with every
    /// input row of `x`: `out[o * m + r] = w_o · x_r` for the `m = x.len() / n_in` input rows.
    fn rows_times_inputs(
        ty: BlockType,
        rows: &[u8],
        n_in: usize,
        x: &[f32],
        out: &mut [f32],
        w: &mut Vec<f32>,
    ) {
        let row_bytes = n_in / BLOCK * ty.block_bytes();
        let m = x.len() / n_in;
        w.resize(n_in, 0.0);
        for (wr, o) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
            decode_row(ty, wr, w);
            for (xr, y) in x.chunks_exact(n_in).zip(o.iter_mut()) {
                // Eight partial sums, so the loop runs in vector lanes.
                let mut acc = [0f32; 8];
                for (a, b) in w.chunks_exact(8).zip(xr.chunks_exact(8)) {
                    for ((s, a), b) in acc.iter_mut().zip(a).zip(b) {
                        *s += a * b;
                    }
                }
                *y = acc.iter().sum();
            }
        }
    }
}

/// `y = x · Wᵀ` for `x` `[m, n_in]` and the block-quantized `W` `[n_out, n_in]` given by its
/// blocks (row-major, `n_in` a multiple of [`BLOCK`]); returns `y` `[m, n_out]`.
pub fn matmul(ty: BlockType, w: &[u8], n_out: usize, n_in: usize, x: &[f32]) -> Vec<f32> {
    assert!(
        n_in.is_multiple_of(BLOCK) && n_in > 0,
        "rows of whole blocks"
    );
    let row_bytes = n_in / BLOCK * ty.block_bytes();
    assert_eq!(w.len(), n_out * row_bytes, "weight bytes");
    assert!(x.len().is_multiple_of(n_in), "input rows");
    let m = x.len() / n_in;
    // Output rows in chunks: enough of them to balance the threads, each long enough to
    // amortise a task (a chunk of 16 rows of 576 is ~6 KB of Q4_1 weights).
    let chunk = (n_out / (8 * rayon::current_num_threads())).clamp(4, 64);
    let mut yt = vec![0f32; n_out * m];
    yt.par_chunks_mut(chunk * m)
        .zip(w.par_chunks(chunk * row_bytes))
        .for_each_init(Vec::new, |buf, (o, rows)| {
            rows_times_inputs(ty, rows, n_in, x, o, buf)
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
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// For each type: the rows decode to exactly what candle decodes, and the product matches
    /// candle's own quantized kernel (which rounds the input to 8 bits: within that rounding)
    /// and the product with the decoded weight (to f32 summation order).
    #[test]
    fn products_match_candle_and_the_decoded_weight() {
        let dev = Device::Cpu;
        let mut rng = frugal_formats::rng::SplitMix64(7);
        let (n_out, n_in, m) = (37, 128, 3);
        let w: Vec<f32> = (0..n_out * n_in)
            .map(|_| rng.next_f64() as f32 - 0.4)
            .collect();
        let x: Vec<f32> = (0..m * n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let wt = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, n_in), &dev).unwrap();
        let flat = |t: candle_core::Result<Tensor>| -> Vec<f32> {
            t.unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        for dt in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1] {
            let ty = BlockType::of(dt).unwrap();
            let q = QTensor::quantize(&wt, dt).unwrap();
            let bytes = q.data().unwrap().into_owned();
            let dq = q.dequantize(&dev).unwrap();
            let decoded = flat(Ok(dq.clone()));
            let mut mine = vec![0f32; n_out * n_in];
            for (r, o) in bytes
                .chunks_exact(n_in / BLOCK * ty.block_bytes())
                .zip(mine.chunks_exact_mut(n_in))
            {
                decode_row(ty, r, o);
            }
            assert_eq!(mine, decoded, "{dt:?}: decoding");
            let y = matmul(ty, &bytes, n_out, n_in, &x);
            let exact = flat(xt.matmul(&dq.t().unwrap()));
            let theirs = flat(QMatMul::from_qtensor(q).unwrap().forward(&xt));
            for ((a, b), c) in y.iter().zip(&exact).zip(&theirs) {
                assert!((a - b).abs() < 1e-4, "{dt:?}: {a} vs decoded {b}");
                assert!((a - c).abs() < 0.05, "{dt:?}: {a} vs candle {c}");
            }
            // Through the linear-layer seam: these kernels, and a wrong input width refused.
            let lin = crate::linear::Linear::quantized(
                "t",
                std::sync::Arc::new(QTensor::quantize(&wt, dt).unwrap()),
                None,
            )
            .unwrap();
            // (Unless FRUGAL_CANDLE_QMATMUL=1 is set for the test run.)
            assert_eq!(
                flat(
                    lin.forward(&xt)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                ),
                y,
                "{dt:?}: Linear::forward"
            );
            let narrow = xt.narrow(1, 0, n_in - BLOCK).unwrap();
            assert!(lin.forward(&narrow).is_err(), "{dt:?}: a narrower input");
            // One input row at a time: the same values as in the batch, bit for bit.
            for r in 0..m {
                let y1 = matmul(ty, &bytes, n_out, n_in, &x[r * n_in..(r + 1) * n_in]);
                assert_eq!(y1, y[r * n_out..(r + 1) * n_out], "{dt:?}: input row {r}");
            }
        }
    }
}
