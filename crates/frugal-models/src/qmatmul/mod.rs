//! Products of block-quantized weights with 8-bit activations, as ggml computes them: the
//! input rows are rounded to ggml's activation blocks (Q8_0, Q8_1 or Q8_K, see
//! [`dot::ActFormat`]) and multiplied with the weight's integer codes in integer arithmetic, each
//! block's sum scaled in f32 — llama.cpp's arithmetic up to the order of the f32 sums. Every
//! type ggml's legacy and k-quant families have: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K.
//!
//! A weight row is unpacked once ([`prepare::Prepared`]: a byte per value and the block
//! scales) and multiplied with every input row, rows taken in chunks that stay in a core's L2
//! cache while the input rows stream past; the products are an AVX-512 VNNI or AVX2 kernel
//! (the widest the CPU has, chosen at run time: [`Kernel::detected`]) or the plain reference,
//! tested against each other ([`dot`]). With VNNI, many input rows (a prompt) meet the weight
//! rows repacked in panels of sixteen ([`panel`]), each instruction then serving sixteen
//! outputs; one to three rows take the fused row kernels ([`fused`]: codes unpacked in
//! registers, no prepared copy) — whose values differ from
//! the panels' only in the order of f32 steps (with AVX2 and the reference, bit for bit the
//! batch's).

pub use crate::kernels::Kernel;

pub mod dot;
pub mod fused;
pub mod panel;
pub mod prepare;

use dot::{ActFormat, ActRow, Activations, WeightRow};
use panel::{Panels, PANEL};
use prepare::Prepared;
use rayon::prelude::*;

/// One row per type: candle's name for it (none for the IQ4 types, which candle cannot hold),
/// bytes per block, values per block, the activation blocks ggml multiplies it with (IQ4_XS:
/// Q8_K's rounding, its scale repeated per 32 values), whether its codes are signed (the `_0`
/// types, and the IQ4 types' table values), whether it is a k-quant (scales and minima per 16),
/// the zero point the unsigned k-quant codes carry, and whether Frugal's kernel is the faster
/// one for a single input row (a decoded token) and for many (a prompt), on a CPU whose widest
/// kernel is AVX2 and on one with AVX-512 VNNI (where candle's repacked VNNI products of Q8_0,
/// Q4_K and Q6_K are the faster), as measured by `bench/qmatmul-kernels.sh` (BENCHMARKS.md,
/// "Quantized products with 8-bit activations", "AVX-512 VNNI: panels of sixteen weight rows"
/// and "Decoding at 7B"; the IQ4 types have no kernel of candle's to lose to).
macro_rules! block_types {
    ($($t:ident: [$($candle:ident)?], $bytes:expr, $values:expr, $act:ident, $signed:expr,
       $k:expr, $zero:expr, ours avx2 $one:expr, $many:expr, vnni $vone:expr, $vmany:expr;)*) => {
        /// A block type these kernels multiply.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum BlockType {
            $($t,)*
        }

        impl BlockType {
            /// Every type, in the table's order.
            pub const ALL: &'static [BlockType] = &[$(BlockType::$t),*];

            /// The kernels' type for candle's.
            pub fn of(t: candle_core::quantized::GgmlDType) -> Option<BlockType> {
                use candle_core::quantized::GgmlDType as D;
                match t {
                    $($(D::$candle => Some(BlockType::$t),)?)*
                    _ => None,
                }
            }
            /// The kernels' type for a GGUF type.
            pub fn of_ggml(t: frugal_formats::gguf::GgmlType) -> Option<BlockType> {
                use frugal_formats::gguf::GgmlType as G;
                match t {
                    $(G::$t => Some(BlockType::$t),)*
                    _ => None,
                }
            }
            /// candle's type, where candle has it.
            pub fn candle(self) -> Option<candle_core::quantized::GgmlDType> {
                #[allow(unused_imports)]
                use candle_core::quantized::GgmlDType as D;
                match self { $(BlockType::$t => None$(.or(Some(D::$candle)))?,)* }
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
            /// Whether the codes are signed (the `_0` legacy types, the IQ4 types).
            pub fn is_signed(self) -> bool {
                match self { $(BlockType::$t => $signed,)* }
            }
            /// A k-quant (super-blocks of 256 with scales per 16 values); the others are
            /// multiplied as blocks of 32 with one f32 scale each.
            pub fn is_k(self) -> bool {
                match self { $(BlockType::$t => $k,)* }
            }
            /// The value the unsigned k-quant codes are centred on (Q3_K 4, Q6_K 32).
            pub fn zero_point(self) -> i16 {
                match self { $(BlockType::$t => $zero,)* }
            }
            /// Whether a layer multiplies `rows` input rows with Frugal's kernel (the faster
            /// one there, on this CPU's widest kernel) rather than candle's; never when
            /// `FRUGAL_CANDLE_QMATMUL=1`.
            pub fn ours_for(self, rows: usize) -> bool {
                let (one, many): (bool, bool) = if Kernel::detected() == Kernel::Vnni {
                    match self { $(BlockType::$t => ($vone, $vmany),)* }
                } else {
                    match self { $(BlockType::$t => ($one, $many),)* }
                };
                !candle_forced() && if rows <= 1 { one } else { many }
            }
        }
    };
}

block_types! {
    Q4_0: [Q4_0], 18, 32, Q8_0, true, false, 0, ours avx2 true, true, vnni true, true;
    Q4_1: [Q4_1], 20, 32, Q8_1, false, false, 0, ours avx2 true, true, vnni true, true;
    Q5_0: [Q5_0], 22, 32, Q8_0, true, false, 0, ours avx2 true, true, vnni true, true;
    Q5_1: [Q5_1], 24, 32, Q8_1, false, false, 0, ours avx2 true, true, vnni true, true;
    Q8_0: [Q8_0], 34, 32, Q8_0, true, false, 0, ours avx2 true, true, vnni false, false;
    Q2_K: [Q2K], 84, 256, Q8K, false, true, 0, ours avx2 false, false, vnni false, true;
    Q3_K: [Q3K], 110, 256, Q8K, false, true, 4, ours avx2 false, true, vnni false, true;
    Q4_K: [Q4K], 144, 256, Q8K, false, true, 0, ours avx2 false, false, vnni false, false;
    Q5_K: [Q5K], 176, 256, Q8K, false, true, 0, ours avx2 false, true, vnni false, true;
    Q6_K: [Q6K], 210, 256, Q8K, false, true, 32, ours avx2 false, false, vnni false, false;
    IQ4_NL: [], 18, 32, Q8_0, true, false, 0, ours avx2 true, true, vnni true, true;
    IQ4_XS: [], 136, 256, Q8K32, true, false, 0, ours avx2 true, true, vnni true, true;
}

impl BlockType {
    /// Values per f32 scale of the prepared rows ([`Prepared::d`]): 256 for the k-quants, 32
    /// for the others (IQ4_XS's super-block scale times each sub-block's).
    pub fn scale_block(self) -> usize {
        if self.is_k() {
            256
        } else {
            32
        }
    }
}

/// Whether the environment asks for candle's kernels instead (`FRUGAL_CANDLE_QMATMUL=1`; read
/// once): for benchmarks that compare the two in one build.
pub fn candle_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("FRUGAL_CANDLE_QMATMUL").is_ok_and(|v| v == "1"))
}

/// `w`'s row `r` of `n_in` values.
fn weight_row(p: &Prepared, ty: BlockType, r: usize, n_in: usize) -> WeightRow<'_> {
    let nb = n_in / ty.scale_block();
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

/// Products of one weight row with `R` input rows, by `kernel` (the values do not depend on
/// `R`).
#[inline]
fn dot<const R: usize>(
    ty: BlockType,
    kernel: Kernel,
    w: WeightRow<'_>,
    x: [ActRow<'_>; R],
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `matmul_with` checked that the CPU has the kernel's instructions; the rows
        // are whole blocks of one count (checked by the kernels' asserts).
        Kernel::Vnni => {
            return unsafe {
                if ty.is_k() {
                    dot::avx512::k(w, x)
                } else {
                    dot::avx512::legacy(ty.is_signed(), w, x)
                }
            }
        }
        // SAFETY: as above.
        Kernel::Avx2 => {
            return unsafe {
                if ty.is_k() {
                    dot::avx2::k(w, x)
                } else {
                    dot::avx2::legacy(ty.is_signed(), w, x)
                }
            }
        }
        Kernel::Portable => {}
    }
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

/// Input rows taken together by the panel kernels: eight independent sums per panel keep the
/// VNNI unit busy through its latency.
const PANEL_TILE: usize = 8;

/// One chunk of `n` weight rows packed in `pn` times the `m` rows of `acts`, into `o`
/// (`[n][m]`), the input rows [`PANEL_TILE`] at a time.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `pn` holds `n` rows of `n_in` values and `acts` `m`
/// rows of `n_in` values.
#[cfg(target_arch = "x86_64")]
unsafe fn panel_chunk(
    ty: BlockType,
    pn: &Panels,
    n: usize,
    n_in: usize,
    acts: &Activations,
    m: usize,
    o: &mut [f32],
) {
    let fmt = ty.act();
    for pi in 0..n.div_ceil(PANEL) {
        let live = (n - pi * PANEL).min(PANEL);
        let mut r = 0;
        while r < m {
            let take = (m - r).min(PANEL_TILE);
            let xs = |t: usize| act_row(acts, fmt, r + t, n_in);
            let mut y = [[0f32; PANEL]; PANEL_TILE];
            macro_rules! rows {
                ($($n:literal)*) => {
                    match take {
                        $($n => {
                            let x: [ActRow<'_>; $n] = std::array::from_fn(xs);
                            y[..$n].copy_from_slice(&panel_rows(ty, pn, pi, n_in, x));
                        })*
                        _ => unreachable!("a tile of 1 to {PANEL_TILE} rows"),
                    }
                };
            }
            rows!(1 2 3 4 5 6 7 8);
            for (t, yr) in y[..take].iter().enumerate() {
                for (l, v) in yr[..live].iter().enumerate() {
                    o[(pi * PANEL + l) * m + r + t] = *v;
                }
            }
            r += take;
        }
    }
}

/// Panel `pi` times `R` input rows by the VNNI panel kernels.
///
/// # Safety
/// As [`panel::avx512::legacy`].
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn panel_rows<const R: usize>(
    ty: BlockType,
    pn: &Panels,
    pi: usize,
    n_in: usize,
    x: [ActRow<'_>; R],
) -> [[f32; PANEL]; R] {
    if ty.is_k() {
        panel::avx512::k(ty.zero_point() != 0, pn, pi, n_in, x)
    } else {
        panel::avx512::legacy(ty.is_signed(), pn, pi, n_in, x)
    }
}

/// Whether [`matmul_with`]'s value for an input row is the same bit for bit however many rows
/// it is multiplied with: not for VNNI, whose panel kernels (four rows or more) take a block's
/// f32 steps in another order than its one-row kernel (the integer sums are the same), so a
/// prompt and a token-by-token decode of it differ by float noise.
pub fn batch_is_exact(kernel: Kernel) -> bool {
    kernel != Kernel::Vnni
}

/// `y = x · Wᵀ` for `x` `[m, n_in]` (f32) and the block-quantized `W` `[n_out, n_in]` given by
/// its blocks (row-major, `n_in` a multiple of the type's block); returns `y` `[m, n_out]`.
pub fn matmul(ty: BlockType, w: &[u8], n_out: usize, n_in: usize, x: &[f32]) -> Vec<f32> {
    matmul_with(ty, Kernel::detected(), w, n_out, n_in, x)
}

/// [`matmul`] with the kernel named (which this CPU must have).
pub fn matmul_with(
    ty: BlockType,
    kernel: Kernel,
    w: &[u8],
    n_out: usize,
    n_in: usize,
    x: &[f32],
) -> Vec<f32> {
    let part = Part { ty, w, n_out };
    matmul_group(kernel, &[part], n_in, x)
        .pop()
        .expect("one part, one output")
}

/// One weight of a group that reads the same input: its type, its blocks (row-major) and its
/// rows.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub ty: BlockType,
    pub w: &'a [u8],
    pub n_out: usize,
}

/// Whether [`matmul_group`] can take these parts together: one rounding of the input serves
/// all their kernels ([`ActFormat::shared`]).
pub fn groups(types: &[BlockType]) -> bool {
    group_format(types).is_some()
}

fn group_format(types: &[BlockType]) -> Option<ActFormat> {
    let (first, rest) = types.split_first()?;
    rest.iter().try_fold(first.act(), |f, t| f.shared(t.act()))
}

/// `y_i = x · W_iᵀ` for every part (all `n_in` wide, one rounding of the input serving all
/// their kernels: [`groups`]): the input rounded once, and the rows of all the parts shared out over the
/// threads in one parallel pass (a layer's q, k and v, or its gate and up, are one hand-off
/// instead of three or two). Returns each part's `y` `[m, n_out]`.
pub fn matmul_group(kernel: Kernel, parts: &[Part<'_>], n_in: usize, x: &[f32]) -> Vec<Vec<f32>> {
    assert!(!parts.is_empty(), "a group has parts");
    assert!(x.len().is_multiple_of(n_in), "input rows");
    assert!(kernel.available(), "qmatmul: {kernel:?} is not on this CPU");
    let types: Vec<BlockType> = parts.iter().map(|p| p.ty).collect();
    let fmt = group_format(&types).expect("parts whose inputs one rounding serves");
    let m = x.len() / n_in;
    let acts = Activations::quantize(fmt, x, n_in);
    let panels = kernel == Kernel::Vnni && m >= TILE;
    let mut yts: Vec<Vec<f32>> = parts.iter().map(|p| vec![0f32; p.n_out * m]).collect();
    // Every part's rows in chunks, one list of tasks over the group.
    let mut tasks = Vec::new();
    for (part, yt) in parts.iter().zip(yts.iter_mut()) {
        let (ty, n_out) = (part.ty, part.n_out);
        let bv = ty.block_values();
        assert!(n_in.is_multiple_of(bv) && n_in > 0, "rows of whole blocks");
        let row_bytes = n_in / bv * ty.block_bytes();
        assert_eq!(part.w.len(), n_out * row_bytes, "weight bytes");
        // Weight rows in chunks: unpacked, a chunk is about 64 KiB (a core's L2 holds it while
        // every input row passes over it), and there are enough chunks to balance the threads.
        let by_cache = (65_536 / n_in).max(1);
        let by_threads = n_out.div_ceil(4 * rayon::current_num_threads()).max(1);
        let mut chunk = by_cache.min(by_threads).clamp(1, 64);
        if panels {
            // Whole panels, as many as fit the cache (one at the least).
            chunk = chunk.max(PANEL) / PANEL * PANEL;
        }
        for (o, rows) in yt
            .chunks_mut(chunk * m)
            .zip(part.w.chunks(chunk * row_bytes))
        {
            tasks.push((ty, row_bytes, o, rows));
        }
    }
    tasks.into_par_iter().for_each_init(
        <(Prepared, Panels)>::default,
        |(p, pn), (ty, row_bytes, o, rows)| {
            chunk_product(kernel, ty, rows, row_bytes, n_in, &acts, m, o, p, pn)
        },
    );
    if m == 1 {
        return yts;
    }
    yts.into_iter()
        .zip(parts)
        .map(|(yt, part)| transposed(&yt, part.n_out, m))
        .collect()
}

/// One chunk of weight rows (`rows`, whole rows of `row_bytes`) times every input row: `o`
/// `[rows][m]`.
#[allow(clippy::too_many_arguments)]
fn chunk_product(
    kernel: Kernel,
    ty: BlockType,
    rows: &[u8],
    row_bytes: usize,
    n_in: usize,
    acts: &Activations,
    m: usize,
    o: &mut [f32],
    p: &mut Prepared,
    pn: &mut Panels,
) {
    let fmt = ty.act();
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Vnni && m >= TILE {
        let n = rows.len() / row_bytes;
        // SAFETY: the VNNI kernel comes with AVX-512 F and BW.
        unsafe {
            if ty.is_k() {
                panel::avx512::pack_k(ty, rows, n, n_in, pn);
            } else {
                panel::avx512::pack_blocks32(ty, rows, n, n_in, pn);
            }
        }
        // SAFETY: `kernel` is VNNI and available (asserted by the caller); `pn` holds `n` rows
        // of `n_in` values, `acts` `m` rows of `n_in` values.
        unsafe { panel_chunk(ty, pn, n, n_in, acts, m, o) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m == 1 && kernel >= Kernel::Avx2 {
        // SAFETY: `kernel` is available and at least AVX2's (AVX2 and FMA; AVX-512 VL and VNNI
        // with the VNNI kernel); the input row has a weight row's count of values, and `o` a
        // value per weight row.
        unsafe {
            fused::products(
                ty,
                kernel == Kernel::Vnni,
                rows,
                row_bytes,
                act_row(acts, fmt, 0, n_in),
                o,
            )
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m < TILE && kernel >= Kernel::Avx2 {
        for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
            for r in 0..m {
                // SAFETY: the CPU has AVX2 and FMA (`kernel` is available and at least
                // AVX2's; AVX-512 F, BW, VL and VNNI come with the VNNI kernel), and the
                // input row has the weight row's count of values.
                o[i * m + r] = unsafe {
                    fused::product(ty, kernel == Kernel::Vnni, row, act_row(acts, fmt, r, n_in))
                };
            }
        }
        return;
    }
    if m < TILE {
        // Few input rows, the plain reference: each weight row unpacked just before
        // its products, so the unpacked bytes are still in L1 when they are read.
        for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
            p.fill(ty, row, n_in);
            for r in 0..m {
                let xr = [act_row(acts, fmt, r, n_in)];
                o[i * m + r] = dot(ty, kernel, weight_row(p, ty, 0, n_in), xr)[0];
            }
        }
        return;
    }
    p.fill(ty, rows, n_in);
    let n = rows.len() / row_bytes;
    let mut r = 0;
    while r + TILE <= m {
        let xs: [ActRow<'_>; TILE] = std::array::from_fn(|t| act_row(acts, fmt, r + t, n_in));
        for i in 0..n {
            let y = dot(ty, kernel, weight_row(p, ty, i, n_in), xs);
            o[i * m + r..i * m + r + TILE].copy_from_slice(&y);
        }
        r += TILE;
    }
    for r in r..m {
        let xr = [act_row(acts, fmt, r, n_in)];
        for i in 0..n {
            o[i * m + r] = dot(ty, kernel, weight_row(p, ty, i, n_in), xr)[0];
        }
    }
}

/// `[n_out][m]` to `[m][n_out]` in runs of 64 outputs: the run's columns stay in L1 while
/// each input row's 64 values are written in order (a plain transpose wrote every value to
/// another cache line: 6 % of a small model's prompt).
fn transposed(yt: &[f32], n_out: usize, m: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n_out];
    for o0 in (0..n_out).step_by(64) {
        let run = &yt[o0 * m..(o0 + 64).min(n_out) * m];
        for (r, out) in y.chunks_exact_mut(n_out).enumerate() {
            for (v, col) in out[o0..].iter_mut().zip(run.chunks_exact(m)) {
                *v = col[r];
            }
        }
    }
    y
}

/// `w` (rows of `n_in` values) as blocks of `ty`, for tests and benchmarks: candle's
/// quantization where candle has the type; for the IQ4 types a plain encoder (each scale from
/// the block's largest magnitude, each value the nearest of the sixteen), not llama.cpp's search.
pub fn sample_blocks(ty: BlockType, w: &[f32], n_in: usize) -> Vec<u8> {
    if let Some(d) = ty.candle() {
        let t =
            candle_core::Tensor::from_slice(w, (w.len() / n_in, n_in), &candle_core::Device::Cpu)
                .and_then(|t| candle_core::quantized::QTensor::quantize(&t, d))
                .and_then(|q| Ok(q.data()?.into_owned()));
        return t.expect("candle quantizes whole blocks");
    }
    let amax = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let codes = |v: &[f32], d: f32, out: &mut [u8]| {
        let k = crate::iq::KVALUES_IQ4NL;
        let near = |x: f32| {
            (0..16u8)
                .min_by(|&a, &b| {
                    let da = (x - d * f32::from(k[usize::from(a)])).abs();
                    let db = (x - d * f32::from(k[usize::from(b)])).abs();
                    da.total_cmp(&db)
                })
                .expect("sixteen values")
        };
        for j in 0..16 {
            out[j] = near(v[j]) | (near(v[j + 16]) << 4);
        }
    };
    let f16 = |v: f32| half::f16::from_f32(v);
    let mut out = Vec::with_capacity(w.len() / ty.block_values() * ty.block_bytes());
    for b in w.chunks_exact(ty.block_values()) {
        let at = out.len();
        out.resize(at + ty.block_bytes(), 0);
        let o = &mut out[at..];
        if ty == BlockType::IQ4_XS {
            let d = f16(amax(b) / (127.0 * 31.0));
            o[..2].copy_from_slice(&d.to_le_bytes());
            for (s, v) in b.chunks_exact(32).enumerate() {
                let ls = if d.to_f32() > 0.0 {
                    (amax(v) / (127.0 * d.to_f32())).round().clamp(-32.0, 31.0) as i32
                } else {
                    0
                };
                let u = (ls + 32) as u8;
                o[4 + s / 2] |= (u & 15) << (4 * (s % 2));
                let h = u16::from_le_bytes([o[2], o[3]]) | (u16::from(u >> 4) << (2 * s));
                o[2..4].copy_from_slice(&h.to_le_bytes());
                codes(v, d.to_f32() * ls as f32, &mut o[8 + 16 * s..24 + 16 * s]);
            }
        } else {
            let d = f16(amax(b) / 127.0);
            o[..2].copy_from_slice(&d.to_le_bytes());
            codes(b, d.to_f32(), &mut o[2..18]);
        }
    }
    out
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
    /// the activations are [`ActRounding`]'s values; the AVX2 and AVX-512 VNNI products (where
    /// the CPU has them) equal the reference to
    /// f32 summation order, and both equal the product of the decoded weight with the rounded
    /// input; candle's own kernel agrees to its 8-bit rounding; one input row at a time gives
    /// the batch's values bit for bit.
    #[test]
    fn every_type_against_ggml_decoding_the_reference_and_candle() {
        let dev = Device::Cpu;
        let (n_out, n_in, m) = (37, 768, 11);
        let w = values(7, n_out * n_in, true);
        let x = values(11, m * n_in, false);
        let wt = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, n_in), &dev).unwrap();
        // The types candle has (the IQ4 types: `iq4_types_against_ggml_decoding`).
        for (ty, cd) in BlockType::ALL
            .iter()
            .filter_map(|&t| Some((t, t.candle()?)))
        {
            let q = QTensor::quantize(&wt, cd).unwrap();
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
            let rounded = rounded_as_ggml(ty, &x, n_in);
            let reference = matmul_with(ty, Kernel::Portable, &bytes, n_out, n_in, &x);
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
            for kernel in [Kernel::Avx2, Kernel::Vnni] {
                if !kernel.available() {
                    continue;
                }
                let fast = matmul_with(ty, kernel, &bytes, n_out, n_in, &x);
                for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{ty:?} [{i}]: {kernel:?} {a} vs reference {b}"
                    );
                }
            }
            // Through the linear-layer seam: these kernels where the table says so (unless
            // FRUGAL_CANDLE_QMATMUL=1 is set for the test run), and a wrong width refused.
            let lin = crate::linear::Linear::quantized(
                "t",
                std::sync::Arc::new(QTensor::quantize(&wt, cd).unwrap()),
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
            // Rows one at a time: the batch's values bit for bit, but for VNNI's panels (their
            // f32 steps fused differently from the one-row kernel's).
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                let batch = matmul_with(ty, kernel, &bytes, n_out, n_in, &x);
                for r in 0..m {
                    let xr = &x[r * n_in..(r + 1) * n_in];
                    let y1 = matmul_with(ty, kernel, &bytes, n_out, n_in, xr);
                    let yb = &batch[r * n_out..(r + 1) * n_out];
                    if batch_is_exact(kernel) {
                        assert_eq!(y1, yb, "{ty:?} {kernel:?}: row {r}");
                    } else {
                        for (a, b) in y1.iter().zip(yb) {
                            assert!((a - b).abs() <= 1e-5 * scale, "{ty:?} {kernel:?} row {r}");
                        }
                    }
                }
            }
        }
    }

    /// A group of weights sharing an input gives each weight's own product bit for bit, for one
    /// input row and for a prompt's worth (every kernel the CPU has), Q8_0's kernel on Q8_1's
    /// rounding included; types whose inputs round differently are not grouped.
    #[test]
    fn a_group_is_each_weight_s_own_product() {
        let n_in = 512;
        let x = values(3, 40 * n_in, false);
        for kernel in Kernel::ALL.iter().copied().filter(|k| k.available()) {
            for types in [
                &[BlockType::Q4_K, BlockType::Q6_K, BlockType::Q5_K][..],
                // Q8_0's kernels read Q4_1's rounding (Q8_1).
                &[BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0],
            ] {
                assert!(groups(types));
                let ws: Vec<(BlockType, Vec<u8>, usize)> = types
                    .iter()
                    .zip([70, 9, 130])
                    .map(|(&ty, n_out)| {
                        let w = values(n_out as u64, n_out * n_in, false);
                        (ty, sample_blocks(ty, &w, n_in), n_out)
                    })
                    .collect();
                let parts: Vec<Part<'_>> = ws
                    .iter()
                    .map(|(ty, w, n_out)| Part {
                        ty: *ty,
                        w,
                        n_out: *n_out,
                    })
                    .collect();
                for m in [1, 40] {
                    let xs = &x[..m * n_in];
                    let ys = matmul_group(kernel, &parts, n_in, xs);
                    for (p, y) in parts.iter().zip(&ys) {
                        let own = matmul_with(p.ty, kernel, p.w, p.n_out, n_in, xs);
                        assert_eq!(y.len(), own.len());
                        for (a, b) in y.iter().zip(&own) {
                            assert_eq!(a.to_bits(), b.to_bits(), "{kernel:?} {:?} m {m}", p.ty);
                        }
                    }
                }
            }
        }
        assert!(!groups(&[BlockType::Q4_0, BlockType::Q4_K]));
        assert!(!groups(&[BlockType::Q4_K, BlockType::IQ4_XS]));
    }

    /// Every type packed into panels straight from the stored blocks gives the panels packed
    /// from the unpacked rows, byte for byte and scale for scale — into fresh panels and into
    /// panels a larger weight filled before (the padding rows zeroed again).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn panels_packed_from_the_blocks_are_the_unpacked_rows_panels() {
        if !Kernel::Vnni.available() {
            return;
        }
        let n_in = 512;
        let w = values(5, 48 * n_in, true);
        for &ty in BlockType::ALL {
            let bytes = sample_blocks(ty, &w, n_in);
            let row_bytes = bytes.len() / 48;
            let mut used = Panels::default();
            for n in [48, 37, 16, 5] {
                let rows = &bytes[..n * row_bytes];
                let mut p = Prepared::default();
                p.fill(ty, rows, n_in);
                let mut want = Panels::default();
                want.fill(ty, &p, n, n_in);
                // SAFETY: AVX-512 F and BW come with VNNI.
                unsafe {
                    if ty.is_k() {
                        panel::avx512::pack_k(ty, rows, n, n_in, &mut used);
                    } else {
                        panel::avx512::pack_blocks32(ty, rows, n, n_in, &mut used);
                    }
                }
                assert_eq!(used.q, want.q, "{ty:?}, {n} rows: codes");
                assert_eq!(used.d, want.d, "{ty:?}, {n} rows: d");
                assert_eq!(used.m, want.m, "{ty:?}, {n} rows: m");
                assert_eq!(used.sc, want.sc, "{ty:?}, {n} rows: sc");
                assert_eq!(used.corr, want.corr, "{ty:?}, {n} rows: corrections");
                assert!(want.q.len() == n.div_ceil(PANEL) * PANEL * n_in);
            }
        }
    }

    /// The input rows rounded as the layer seam rounds them for `ty`'s GGUF type
    /// ([`ActRounding::for_weight`]), checked equal to the kernels' activations `q · d`.
    fn rounded_as_ggml(ty: BlockType, x: &[f32], n_in: usize) -> Vec<f32> {
        let fmt = ty.act();
        let acts = Activations::quantize(fmt, x, n_in);
        let g = frugal_formats::gguf::GgmlType::from_name(&format!("{ty:?}")).unwrap();
        let rounding = ActRounding::for_weight(g);
        let expected = match fmt {
            ActFormat::Q8K | ActFormat::Q8K32 => ActRounding::Q8K,
            ActFormat::Q8_0 | ActFormat::Q8_1 => ActRounding::Q8_0,
        };
        assert_eq!(rounding, expected, "{ty:?}: activation format");
        let mut rounded = x.to_vec();
        rounded
            .chunks_exact_mut(n_in)
            .for_each(|r| rounding.round_row(r));
        for (j, r) in rounded.iter().enumerate() {
            let v = f32::from(acts.q[j]) * acts.d[j / fmt.block()];
            assert_eq!(v, *r, "{ty:?}: activation {j}");
        }
        rounded
    }

    /// The IQ4 types, which candle cannot hold: the unpacked values are llama.cpp's decoding
    /// ([`crate::iq`]) bit for bit, every kernel the CPU has gives the decoded weight's product
    /// with the input rounded as ggml rounds it (Q8_0 for IQ4_NL, Q8_K for IQ4_XS) to f32
    /// summation order, one input row at a time as in the batch, and a layer reading the
    /// weight in place gives the same.
    #[test]
    fn iq4_types_against_ggml_decoding_and_the_rounded_product() {
        use frugal_formats::gguf::{GgmlType, MappedBytes};
        let (n_out, n_in, m) = (37, 768, 11);
        let w = values(7, n_out * n_in, true);
        let x = values(11, m * n_in, false);
        for ty in [BlockType::IQ4_NL, BlockType::IQ4_XS] {
            let g = GgmlType::from_name(&format!("{ty:?}")).unwrap();
            assert_eq!(BlockType::of_ggml(g), Some(ty));
            let bytes = sample_blocks(ty, &w, n_in);
            let mut decoded = vec![0f32; n_out * n_in];
            crate::iq::decode_row(g, &bytes, &mut decoded).unwrap();
            let err: f32 = w.iter().zip(&decoded).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f32 = w.iter().map(|a| a * a).sum();
            assert!(
                err < 0.05 * norm,
                "{ty:?}: the sample encoder: {err} of {norm}"
            );
            let mut p = Prepared::default();
            p.fill(ty, &bytes, n_in);
            for (j, v) in decoded.iter().enumerate() {
                assert_eq!(p.value(ty, j).to_bits(), v.to_bits(), "{ty:?}: value {j}");
            }
            let rounded = rounded_as_ggml(ty, &x, n_in);
            let exact: Vec<f32> = (0..m * n_out)
                .map(|i| {
                    let (r, o) = (i / n_out, i % n_out);
                    let xr = &rounded[r * n_in..(r + 1) * n_in];
                    let wr = &decoded[o * n_in..(o + 1) * n_in];
                    xr.iter()
                        .zip(wr)
                        .map(|(a, b)| f64::from(a * b))
                        .sum::<f64>() as f32
                })
                .collect();
            let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                let batch = matmul_with(ty, kernel, &bytes, n_out, n_in, &x);
                for (i, (a, b)) in batch.iter().zip(&exact).enumerate() {
                    assert!(
                        (a - b).abs() <= 2e-5 * scale,
                        "{ty:?} {kernel:?} [{i}]: {a} vs {b}"
                    );
                }
                for r in 0..m {
                    let y1 = matmul_with(ty, kernel, &bytes, n_out, n_in, &x[r * n_in..][..n_in]);
                    let yb = &batch[r * n_out..(r + 1) * n_out];
                    if batch_is_exact(kernel) {
                        assert_eq!(y1, yb, "{ty:?} {kernel:?}: row {r}");
                    }
                }
            }
            let mapped = crate::linear::MappedWeight::new(
                g,
                MappedBytes::from_bytes(&bytes).unwrap(),
                n_out,
                n_in,
            )
            .expect("IQ4 weights are read in place");
            assert!(crate::linear::reads_in_place(g));
            let lin = crate::linear::Linear::mapped("t", mapped, None);
            let xt = Tensor::from_vec(x.clone(), (m, n_in), &Device::Cpu).unwrap();
            assert_eq!(
                flat(
                    lin.forward(&xt)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                ),
                matmul(ty, &bytes, n_out, n_in, &x),
                "{ty:?}: Linear"
            );
            assert_eq!(
                flat(
                    lin.weight_f32()
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                ),
                decoded
            );
        }
    }

    /// The fused one-row kernels for blocks of 32 under VNNI (256-bit `vpdpbusd`) give the
    /// AVX2 one's values bit for bit — the claim that lets a CPU with VNNI run either — on
    /// sampled weights and on every byte at its extreme; so do both taking two rows at a time.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fused_rows_under_vnni_are_the_avx2_values() {
        if !Kernel::Vnni.available() {
            return;
        }
        let n_in = 768;
        let x = values(11, n_in, false);
        for &ty in BlockType::ALL.iter().filter(|t| !t.is_k()) {
            let acts = Activations::quantize(ty.act(), &x, n_in);
            let xr = act_row(&acts, ty.act(), 0, n_in);
            let row_bytes = n_in / ty.block_values() * ty.block_bytes();
            let sampled = sample_blocks(ty, &values(7, 3 * n_in, true), n_in);
            let rows = sampled
                .chunks_exact(row_bytes)
                .map(<[u8]>::to_vec)
                .chain([0xFFu8, 0x80].map(|b| vec![b; row_bytes]));
            let rows: Vec<Vec<u8>> = rows.collect();
            let mut one = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                // SAFETY: the CPU has VNNI (checked), hence AVX2; whole rows of `n_in`.
                let (a, v) = unsafe {
                    (
                        fused::product(ty, false, row, xr),
                        fused::product(ty, true, row, xr),
                    )
                };
                // Extreme bytes make some f16 scales infinite or NaN: compare bits.
                assert_eq!(a.to_bits(), v.to_bits(), "{ty:?} row {i}: {a} vs {v}");
                one.push(a.to_bits());
            }
            // Two rows at a time (five rows: two pairs and one alone) give the same bits.
            let all = rows.concat();
            for vnni in [false, true] {
                let mut out = vec![0f32; rows.len()];
                // SAFETY: as above; a value per row.
                unsafe { fused::products(ty, vnni, &all, row_bytes, xr, &mut out) };
                let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, one, "{ty:?} vnni {vnni}: rows together");
            }
        }
    }

    /// The integer parts are exact: with every code and activation at its extreme (the sign
    /// trick's −128 codes of Q8_0 included) the AVX2 and VNNI sums are the reference's, for
    /// one input row and for a tile of them, and for an odd count of legacy blocks (VNNI's
    /// masked last pair).
    #[test]
    fn extreme_codes_do_not_overflow() {
        for &ty in BlockType::ALL {
            let n_in = if ty.block_values() == 256 { 512 } else { 544 };
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
                for (xv, rows) in [(1f32, 1), (-1.0, 1), (1.0, 5), (-1.0, 5)] {
                    let x = vec![xv; rows * n_in];
                    let r = matmul_with(ty, Kernel::Portable, &bytes, 1, n_in, &x);
                    for kernel in [Kernel::Avx2, Kernel::Vnni] {
                        if !kernel.available() {
                            continue;
                        }
                        let f = matmul_with(ty, kernel, &bytes, 1, n_in, &x);
                        for (a, b) in f.iter().zip(&r) {
                            assert!(
                                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                                "{ty:?} {kernel:?} fill {fill:#x} x {xv}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}
