//! One-row products straight from the stored blocks (AVX2, and AVX-512 where the CPU has it):
//! each block's codes unpacked in registers and multiplied at once, without
//! [`super::prepare`]'s pass through memory — for decoding a token, where a weight row meets a
//! single input row and unpacking it first costs more than the product.
//!
//! The k-quants ([`row`], [`row_avx512`]): the integer arithmetic is
//! [`super::dot::k_reference`]'s, and [`row`]'s values are the AVX2 tiled kernel's bit for bit
//! (tested through the one-row-vs-batch check). The AVX-512 kernel takes 64 values per
//! instruction (two 32-value sub-blocks of Q4_K/Q5_K, four 16-value groups of Q6_K, their
//! scales spread over the lanes by one permute), where AVX2 takes 32; Q2_K and Q3_K have the
//! AVX2 form only.
//!
//! Every kernel here prefetches its row [`prefetch_distance`] bytes ahead: decoding reads each
//! weight once per token from memory, and without it the kernels waited on memory (Q4_0
//! streamed at 7-8 GB/s instead of 17-20).
//!
//! The blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, and IQ4_XS's sub-blocks:
//! [`legacy_row`]): a block's 32 codes land in a register byte for byte as [`super::prepare`]
//! writes them, and the products that follow are [`super::dot::avx2::legacy`]'s for one input
//! row, operation for operation, so the values are its bit for bit (tested through the
//! one-row-vs-batch check). Under VNNI they stay 256 bits wide (one `vpdpbusd` per block, the
//! same integers): measured at 7B shapes, the 512-bit form of [`super::dot::avx512::legacy`]
//! (two blocks per register) was 0.3–1.0× the 256-bit AVX2 one for a single row.
//! [`products`] takes their rows two at a time ([`legacy_rows`]) where rows hold at most
//! [`PAIRED_MAX_IN`] values: the input's codes and scales loaded once for both, and two
//! independent accumulator chains in flight instead of one (each row's value still bit for
//! bit its own).

#![cfg(target_arch = "x86_64")]

use super::dot::avx2::hsum_ps;
use super::dot::ActRow;
use super::prepare::{f16_at, f16_table, scale_min_k4};
use super::BlockType;
use std::arch::x86_64::*;

/// How far ahead of the block being multiplied its row is prefetched, in bytes. Decoding
/// streams every weight from memory once per token; without prefetching, the one-row kernels
/// read Q4_0 and IQ4_XS at 7-8 GB/s and with it at 19-20 (2048 chosen among 256 to 4096 on the
/// 7B gate/up shape, checked on the other shapes: `bench/qmatmul-cold.sh`; BENCHMARKS.md,
/// "Decoding at 7B"). `FRUGAL_PREFETCH=0` turns it off (read once), for that benchmark.
pub fn prefetch_distance() -> usize {
    static DIST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DIST.get_or_init(|| {
        if std::env::var("FRUGAL_PREFETCH").is_ok_and(|v| v == "0") {
            0
        } else {
            2048
        }
    })
}

/// Prefetches the bytes `dist` past each cache line of `blk` (nothing when `dist` is 0; a
/// prefetch past the end of the weight is harmless: it never faults).
#[inline(always)]
unsafe fn prefetch(blk: &[u8], dist: usize) {
    if dist == 0 {
        return;
    }
    let mut o = 0;
    while o < blk.len() {
        _mm_prefetch::<_MM_HINT_T0>(blk.as_ptr().wrapping_add(dist + o) as *const i8);
        o += 64;
    }
}

/// The product of one row of `ty` blocks with one activation row of `ty`'s format, by the
/// fused kernel for AVX2 or (with `vnni`) for AVX-512 VNNI — Q2_K and Q3_K, which have no
/// AVX-512 form, by the AVX2 one.
///
/// # Safety
/// The CPU has AVX2 and FMA, and with `vnni` AVX-512 F, BW, VL and VNNI; `x` holds as many
/// values as `row`.
#[inline]
pub unsafe fn product(ty: BlockType, vnni: bool, row: &[u8], x: ActRow<'_>) -> f32 {
    let low = matches!(ty, BlockType::Q2_K | BlockType::Q3_K);
    match (ty.is_k(), vnni && !low) {
        (true, false) => self::row(ty, row, x),
        (true, true) => row_avx512(ty, row, x),
        (false, _) => legacy_row(ty, vnni, row, x),
    }
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The product of one row of `ty` blocks (`row`, whole super-blocks of a k-quant) with one
/// Q8_K row.
///
/// # Safety
/// The CPU has AVX2 and FMA; `ty` is a k-quant; `x` holds as many super-blocks as `row`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn row(ty: BlockType, row: &[u8], x: ActRow<'_>) -> f32 {
    let bb = ty.block_bytes();
    let nb = row.len() / bb;
    assert!(x.q.len() >= 256 * nb && x.d.len() >= nb && x.bsums.len() >= 16 * nb);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let t = f16_table();
    let dist = prefetch_distance();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        prefetch(blk, dist);
        let xq = x.q.as_ptr().add(256 * b) as *const u8;
        let bs = &x.bsums[16 * b..16 * (b + 1)];
        let dx = x.d[b];
        let mut ai = _mm256_setzero_si256();
        let d = match ty {
            BlockType::Q4_K | BlockType::Q5_K => {
                let s = &blk[4..16];
                let five = ty == BlockType::Q5_K;
                let qs = blk.as_ptr().add(if five { 48 } else { 16 });
                let qh = if five {
                    load(blk.as_ptr().add(16))
                } else {
                    _mm256_setzero_si256()
                };
                let mut imin = 0i32;
                for c in 0..4 {
                    let (s0, m0) = scale_min_k4(2 * c, s);
                    let (s1, m1) = scale_min_k4(2 * c + 1, s);
                    imin += i32::from(m0) * (i32::from(bs[4 * c]) + i32::from(bs[4 * c + 1]))
                        + i32::from(m1) * (i32::from(bs[4 * c + 2]) + i32::from(bs[4 * c + 3]));
                    let q = load(qs.add(32 * c));
                    let mut lo = _mm256_and_si256(q, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if five {
                        let sixteen = _mm256_set1_epi8(16);
                        let bl = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
                        let bh = _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8);
                        let hl = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bl), bl);
                        let hh = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bh), bh);
                        lo = _mm256_or_si256(lo, _mm256_and_si256(hl, sixteen));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(hh, sixteen));
                    }
                    let plo = _mm256_maddubs_epi16(lo, load(xq.add(64 * c)));
                    let phi = _mm256_maddubs_epi16(hi, load(xq.add(64 * c + 32)));
                    ai = _mm256_add_epi32(
                        ai,
                        _mm256_madd_epi16(plo, _mm256_set1_epi16(i16::from(s0))),
                    );
                    ai = _mm256_add_epi32(
                        ai,
                        _mm256_madd_epi16(phi, _mm256_set1_epi16(i16::from(s1))),
                    );
                }
                mins += (f16_at(t, blk, 2) * dx) * imin as f32;
                f16_at(t, blk, 0)
            }
            BlockType::Q6_K => {
                let (ql, qh, sc) = (blk.as_ptr(), blk.as_ptr().add(128), &blk[192..208]);
                let m3 = _mm256_set1_epi8(3);
                for h in 0..2 {
                    let l0 = load(ql.add(64 * h));
                    let l1 = load(ql.add(64 * h + 32));
                    let hb = load(qh.add(32 * h));
                    let top = |shift: i32| -> __m256i {
                        let v = match shift {
                            0 => hb,
                            2 => _mm256_srli_epi16(hb, 2),
                            4 => _mm256_srli_epi16(hb, 4),
                            _ => _mm256_srli_epi16(hb, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(v, m3), 4)
                    };
                    let codes = [
                        _mm256_or_si256(_mm256_and_si256(l0, m4), top(0)),
                        _mm256_or_si256(_mm256_and_si256(l1, m4), top(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), top(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), top(6)),
                    ];
                    for (k, code) in codes.into_iter().enumerate() {
                        let g = 8 * h + 2 * k;
                        let s = _mm256_set_m128i(
                            _mm_set1_epi16(i16::from(sc[g + 1] as i8)),
                            _mm_set1_epi16(i16::from(sc[g] as i8)),
                        );
                        let p = _mm256_maddubs_epi16(code, load(xq.add(128 * h + 32 * k)));
                        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(p, s));
                    }
                }
                // The zero point: 32 · Σ_g sc_g · Σq_g.
                let scv = _mm256_slli_epi16(
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr() as *const __m128i)),
                    5,
                );
                let bsv = _mm256_loadu_si256(bs.as_ptr() as *const __m256i);
                ai = _mm256_sub_epi32(ai, _mm256_madd_epi16(bsv, scv));
                f16_at(t, blk, 208)
            }
            BlockType::Q2_K | BlockType::Q3_K => {
                // Two halves of 128 values, each 32 bytes of 2-bit codes: chunk 4h + j (32
                // values, groups 8h + 2j and 8h + 2j + 1) is bits 2j of the half's bytes; Q3_K's
                // third bit is bit 4h + j of `hmask`, its codes centred on 4 (the zero point's
                // share subtracted through the activation's sums of 16, as the tiled kernel
                // does); Q2_K's 4-bit minima make the offset term.
                let three = ty == BlockType::Q3_K;
                let (qs, sc): (*const u8, [i16; 16]) = if three {
                    (
                        blk.as_ptr().add(32),
                        super::prepare::q3k_scales(&blk[96..108]),
                    )
                } else {
                    (
                        blk.as_ptr().add(16),
                        std::array::from_fn(|g| i16::from(blk[g] & 0x0F)),
                    )
                };
                let hm = load(blk.as_ptr());
                let m2 = _mm256_set1_epi8(3);
                for h in 0..2 {
                    let q = load(qs.add(32 * h));
                    for j in 0..4 {
                        let c = 4 * h + j;
                        let mut code = _mm256_and_si256(
                            match j {
                                0 => q,
                                1 => _mm256_srli_epi16(q, 2),
                                2 => _mm256_srli_epi16(q, 4),
                                _ => _mm256_srli_epi16(q, 6),
                            },
                            m2,
                        );
                        if three {
                            let bit = _mm256_set1_epi8((1u8 << c) as i8);
                            let on = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                            code = _mm256_or_si256(code, _mm256_and_si256(on, _mm256_set1_epi8(4)));
                        }
                        let s = _mm256_set_m128i(
                            _mm_set1_epi16(sc[2 * c + 1]),
                            _mm_set1_epi16(sc[2 * c]),
                        );
                        let p = _mm256_maddubs_epi16(code, load(xq.add(32 * c)));
                        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(p, s));
                    }
                }
                let bsv = _mm256_loadu_si256(bs.as_ptr() as *const __m256i);
                if three {
                    // The zero point: 4 · Σ_g sc_g · Σq_g.
                    let zsc =
                        _mm256_slli_epi16(_mm256_loadu_si256(sc.as_ptr() as *const __m256i), 2);
                    ai = _mm256_sub_epi32(ai, _mm256_madd_epi16(bsv, zsc));
                    f16_at(t, blk, 108)
                } else {
                    let mn = _mm256_cvtepu8_epi16(_mm_srli_epi16(
                        _mm_and_si128(
                            _mm_loadu_si128(blk.as_ptr() as *const __m128i),
                            _mm_set1_epi8(0xF0u8 as i8),
                        ),
                        4,
                    ));
                    let imin = super::dot::avx2::hsum_epi32(_mm256_madd_epi16(bsv, mn));
                    mins += (f16_at(t, blk, 82) * dx) * imin as f32;
                    f16_at(t, blk, 80)
                }
            }
            _ => unreachable!("{ty:?} is not a k-quant"),
        };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(ai), acc);
    }
    hsum_ps(acc) - mins
}

/// [`row`] with 512-bit registers.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `has(ty)`; `x` holds as many super-blocks as `row`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn row_avx512(ty: BlockType, row: &[u8], x: ActRow<'_>) -> f32 {
    let bb = ty.block_bytes();
    let nb = row.len() / bb;
    assert!(x.q.len() >= 256 * nb && x.d.len() >= nb && x.bsums.len() >= 16 * nb);
    let m4 = _mm512_set1_epi8(0x0F);
    let m3 = _mm512_set1_epi8(3);
    let mut acc = _mm512_setzero_ps();
    let t = f16_table();
    // The i16 lanes' scale index: pairs of sub-blocks (Q4_K/Q5_K: lanes 0–15 the first, 16–31
    // the second) or runs of four groups (Q6_K: eight lanes each).
    let pair_idx: [__m512i; 4] = std::array::from_fn(|c| {
        let v: [i16; 32] = std::array::from_fn(|l| (2 * c + l / 16) as i16);
        _mm512_loadu_si512(v.as_ptr() as *const _)
    });
    let quad_idx: [__m512i; 4] = std::array::from_fn(|c| {
        let v: [i16; 32] = std::array::from_fn(|l| (4 * c + l / 8) as i16);
        _mm512_loadu_si512(v.as_ptr() as *const _)
    });
    // Q5_K's fifth bit of value 64c + j (lower half) and 64c + 32 + j (upper half).
    let hbit: [__m512i; 4] = std::array::from_fn(|c| {
        _mm512_inserti64x4(
            _mm512_set1_epi8((1u8 << (2 * c)) as i8),
            _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8),
            1,
        )
    });
    // Q6_K's top two bits: shifts of the lower and upper halves.
    let top_shift = [
        _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1),
        _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1),
    ];
    let sixteen = _mm512_set1_epi8(16);
    let mut minv = _mm_setzero_ps();
    let dist = prefetch_distance();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        prefetch(blk, dist);
        let xq = x.q.as_ptr().add(256 * b);
        let bs = &x.bsums[16 * b..16 * (b + 1)];
        let dx = x.d[b];
        let mut ai = _mm512_setzero_si512();
        let d = match ty {
            BlockType::Q4_K | BlockType::Q5_K => {
                let five = ty == BlockType::Q5_K;
                let qs = blk.as_ptr().add(if five { 48 } else { 16 });
                let qh = _mm512_broadcast_i64x4(load(blk.as_ptr().add(16)));
                // The eight 6-bit scales and minima ([`scale_min_k4`], four at a time in
                // 32-bit words).
                let w =
                    |i: usize| u32::from_le_bytes(blk[4 + 4 * i..8 + 4 * i].try_into().unwrap());
                let (a0, a1, a2) = (w(0), w(1), w(2));
                let (m6, m4w, m2) = (0x3F3F_3F3Fu32, 0x0F0F_0F0Fu32, 0x0303_0303u32);
                let sc8 =
                    u64::from(a0 & m6) | u64::from((a2 & m4w) | (((a0 >> 6) & m2) << 4)) << 32;
                let mn8 = u64::from(a1 & m6)
                    | u64::from(((a2 >> 4) & m4w) | (((a1 >> 6) & m2) << 4)) << 32;
                let scv = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc8 as i64)));
                // Σ_j mn_j · (Σq of the sub-block's two groups).
                let bsv = _mm256_loadu_si256(bs.as_ptr() as *const __m256i);
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsv),
                    _mm256_extracti128_si256(bsv, 1),
                );
                let mprod = _mm_madd_epi16(pairs, _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn8 as i64)));
                minv = _mm_fmadd_ps(
                    _mm_set1_ps(f16_at(t, blk, 2) * dx),
                    _mm_cvtepi32_ps(mprod),
                    minv,
                );
                for c in 0..4 {
                    let q = load(qs.add(32 * c));
                    let mut codes = _mm512_and_si512(
                        _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1),
                        m4,
                    );
                    if five {
                        let k = _mm512_test_epi8_mask(qh, hbit[c]);
                        codes = _mm512_or_si512(codes, _mm512_maskz_mov_epi8(k, sixteen));
                    }
                    let xv = _mm512_loadu_si512(xq.add(64 * c) as *const _);
                    let p = _mm512_maddubs_epi16(codes, xv);
                    let s2 = _mm512_permutexvar_epi16(pair_idx[c], scv);
                    ai = _mm512_add_epi32(ai, _mm512_madd_epi16(p, s2));
                }
                f16_at(t, blk, 0)
            }
            BlockType::Q6_K => {
                let (ql, qh, sc) = (blk.as_ptr(), blk.as_ptr().add(128), &blk[192..208]);
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr() as *const __m128i));
                let scv = _mm512_castsi256_si512(sc16);
                for h in 0..2 {
                    let l = _mm512_loadu_si512(ql.add(64 * h) as *const _);
                    let hb = _mm512_broadcast_i64x4(load(qh.add(32 * h)));
                    let top = |k: usize| {
                        _mm512_slli_epi16(
                            _mm512_and_si512(_mm512_srlv_epi16(hb, top_shift[k]), m3),
                            4,
                        )
                    };
                    let codes = [
                        _mm512_or_si512(_mm512_and_si512(l, m4), top(0)),
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), top(1)),
                    ];
                    for (k, code) in codes.into_iter().enumerate() {
                        let xv = _mm512_loadu_si512(xq.add(128 * h + 64 * k) as *const _);
                        let p = _mm512_maddubs_epi16(code, xv);
                        let s4 = _mm512_permutexvar_epi16(quad_idx[2 * h + k], scv);
                        ai = _mm512_add_epi32(ai, _mm512_madd_epi16(p, s4));
                    }
                }
                // The zero point: 32 · Σ_g sc_g · Σq_g.
                let bsv = _mm256_loadu_si256(bs.as_ptr() as *const __m256i);
                let corr = _mm256_madd_epi16(bsv, _mm256_slli_epi16(sc16, 5));
                ai = _mm512_sub_epi32(ai, _mm512_zextsi256_si512(corr));
                f16_at(t, blk, 208)
            }
            _ => unreachable!("{ty:?} has no fused kernel"),
        };
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d * dx), _mm512_cvtepi32_ps(ai), acc);
    }
    let mut m = [0f32; 4];
    _mm_storeu_ps(m.as_mut_ptr(), minv);
    _mm512_reduce_add_ps(acc) - ((m[0] + m[1]) + (m[2] + m[3]))
}

/// The 32 values of block `s` of a legacy or IQ4 block `blk` (IQ4_XS: sub-block `s` of the
/// super-block; the others have one) as [`super::prepare`] unpacks them — two's-complement
/// codes for the signed types, unsigned for Q4_1/Q5_1 — with the block's `d` and `m`
/// (`dl`: IQ4_XS's sub-block scales, [`sub_blocks`]).
///
/// # Safety
/// AVX2; `blk` is one whole block of `T`'s type.
#[inline(always)]
unsafe fn block32<const T: usize>(
    t: &[f32],
    blk: &[u8],
    s: usize,
    dl: &[f32; 8],
    table: __m256i,
) -> (__m256i, f32, f32) {
    const fn is(t: usize, ty: BlockType) -> bool {
        t == ty as usize
    }
    let p = blk.as_ptr();
    if is(T, BlockType::Q8_0) {
        (load(p.add(2)), f16_at(t, blk, 0), 0.0)
    } else if is(T, BlockType::Q4_0) {
        let w = _mm256_sub_epi8(nib(p.add(2)), _mm256_set1_epi8(8));
        (w, f16_at(t, blk, 0), 0.0)
    } else if is(T, BlockType::Q4_1) {
        (nib(p.add(4)), f16_at(t, blk, 0), f16_at(t, blk, 2))
    } else if is(T, BlockType::Q5_0) || is(T, BlockType::Q5_1) {
        let one = is(T, BlockType::Q5_1);
        let at = if one { 4 } else { 2 };
        let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
        // Byte j: 0x10 where bit j of qh is set (ggml's bytes_from_bits_32: each byte of qh
        // spread over eight bytes, every bit but one forced on, compared with all ones).
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let bit = _mm256_cmpeq_epi8(
            _mm256_or_si256(spread, _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFE)),
            _mm256_set1_epi64x(-1),
        );
        let w = _mm256_or_si256(
            nib(p.add(at + 4)),
            _mm256_and_si256(bit, _mm256_set1_epi8(0x10)),
        );
        if one {
            (w, f16_at(t, blk, 0), f16_at(t, blk, 2))
        } else {
            (
                _mm256_sub_epi8(w, _mm256_set1_epi8(16)),
                f16_at(t, blk, 0),
                0.0,
            )
        }
    } else if is(T, BlockType::IQ4_NL) {
        (
            _mm256_shuffle_epi8(table, nib(p.add(2))),
            f16_at(t, blk, 0),
            0.0,
        )
    } else if is(T, BlockType::IQ4_XS) {
        (
            _mm256_shuffle_epi8(table, nib(p.add(8 + 16 * s))),
            dl[s],
            0.0,
        )
    } else {
        unreachable!("type {T} is not a block of 32")
    }
}

/// Sixteen bytes of nibbles at `q` as 32 values: the low nibbles, then the high ones.
#[inline(always)]
unsafe fn nib(q: *const u8) -> __m256i {
    let q = _mm_loadu_si128(q as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

/// The IQ4 types' sixteen values in both 128-bit lanes (for `pshufb`).
#[inline(always)]
unsafe fn iq4_table() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(
        crate::iq::KVALUES_IQ4NL.as_ptr() as *const __m128i
    ))
}

/// Sub-blocks of 32 per block of `T`'s type (IQ4_XS: eight), and IQ4_XS's sub-block scales
/// `dl = d · (ls − 32)` ([`crate::iq::iq4_xs_sub_scales`]'s `ls`, the eight unpacked at once;
/// the products exact in f32, so [`super::prepare`]'s values).
///
/// # Safety
/// AVX2; `blk` is one whole block of `T`'s type.
#[inline(always)]
unsafe fn sub_blocks<const T: usize>(t: &[f32], blk: &[u8]) -> (usize, [f32; 8]) {
    if T != BlockType::IQ4_XS as usize {
        return (1, [0.0; 8]);
    }
    let h = _mm256_set1_epi32(i32::from(u16::from_le_bytes([blk[2], blk[3]])));
    let l = _mm256_set1_epi32(i32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]));
    let lo = _mm256_and_si256(
        _mm256_srlv_epi32(l, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
        _mm256_set1_epi32(0xF),
    );
    let hi = _mm256_and_si256(
        _mm256_srlv_epi32(h, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm256_set1_epi32(3),
    );
    let ls = _mm256_sub_epi32(
        _mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)),
        _mm256_set1_epi32(32),
    );
    let mut dl = [0f32; 8];
    _mm256_storeu_ps(
        dl.as_mut_ptr(),
        _mm256_mul_ps(_mm256_set1_ps(f16_at(t, blk, 0)), _mm256_cvtepi32_ps(ls)),
    );
    (8, dl)
}

/// The product of one row of blocks of 32 (`row`, whole blocks of `ty`; IQ4_XS whole
/// super-blocks) with one activation row of `ty`'s format: [`super::dot::avx2::legacy`]'s
/// arithmetic on codes unpacked in registers. With `vnni`, each lane's four products are
/// summed by one 256-bit `vpdpbusd` where AVX2 takes `vpmaddubsw` and `vpmaddwd`: the same
/// integers (no 16-bit sum here can saturate: the unsigned operand is at most 128, the
/// activations at most 127), so the same values bit for bit.
///
/// # Safety
/// The CPU has AVX2 and FMA, and with `vnni` AVX-512 VL and VNNI; `ty` is one of the
/// blocks-of-32 types; `x` holds as many values as `row`.
pub unsafe fn legacy_row(ty: BlockType, vnni: bool, row: &[u8], x: ActRow<'_>) -> f32 {
    legacy_rows::<1>(ty, vnni, [row], x)[0]
}

/// The products of `R` rows of blocks of 32 (each as [`legacy_row`]'s `row`, all of one
/// length) with one activation row: each row's value bit for bit [`legacy_row`]'s, the
/// activations' codes and scales loaded once for all `R` rows. Each row is prefetched
/// [`prefetch_distance`] ahead, as alone: for the short rows [`products`] pairs that reaches
/// past the next pair's start (timed on SmolLM2: a pass 5.5 ms, against 6.1 with each row
/// half as far ahead into the same row of the next pair).
///
/// # Safety
/// As [`legacy_row`], for every row.
pub unsafe fn legacy_rows<const R: usize>(
    ty: BlockType,
    vnni: bool,
    rows: [&[u8]; R],
    x: ActRow<'_>,
) -> [f32; R] {
    macro_rules! by_type {
        ($($t:ident)*) => {
            match (ty, vnni) {
                $(
                    (BlockType::$t, false) => legacy_avx2::<{ BlockType::$t as usize }, R>(ty, rows, x),
                    (BlockType::$t, true) => legacy_vnni::<{ BlockType::$t as usize }, R>(ty, rows, x),
                )*
                _ => unreachable!("{ty:?} is not a block of 32"),
            }
        };
    }
    by_type!(Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL IQ4_XS)
}

/// The longest rows (in values) that [`products`] takes two at a time. Timed one input row
/// by one (`bench/qmatmul-kernels.sh … 1`, the same products with pairs and without): SmolLM2's
/// and the 1.5B model's shapes (rows of 576 and 1536) ran mostly 1.1–1.9× faster in pairs,
/// the 7B ones (4096 and 11008) no faster, and streamed from memory (`qmatmul-cold.sh`) Q4_0
/// and IQ4_XS up to 20 % slower (two streams per thread where one row at a time reads one);
/// BENCHMARKS.md, "Two weight rows at a time".
pub const PAIRED_MAX_IN: usize = 2048;

/// The products of consecutive rows of `row_bytes` in `rows` with one activation row, into
/// `out` (a value per row): the blocks-of-32 types two rows at a time ([`legacy_rows`]: one
/// load of the activations serves both, two accumulator chains in flight) where rows hold at
/// most [`PAIRED_MAX_IN`] values, else one at a time ([`product`]); each value bit for bit
/// [`product`]'s.
///
/// # Safety
/// As [`product`], for every row; `out` has a value per row.
pub unsafe fn products(
    ty: BlockType,
    vnni: bool,
    rows: &[u8],
    row_bytes: usize,
    x: ActRow<'_>,
    out: &mut [f32],
) {
    debug_assert_eq!(rows.len(), out.len() * row_bytes);
    let mut done = 0;
    let n_in = row_bytes / ty.block_bytes() * ty.block_values();
    if !ty.is_k() && n_in <= PAIRED_MAX_IN {
        for (pair, o) in rows
            .chunks_exact(2 * row_bytes)
            .zip(out.chunks_exact_mut(2))
        {
            let (a, b) = pair.split_at(row_bytes);
            o.copy_from_slice(&legacy_rows::<2>(ty, vnni, [a, b], x));
            done += 2;
        }
    }
    for (row, o) in rows[done * row_bytes..]
        .chunks_exact(row_bytes)
        .zip(&mut out[done..])
    {
        *o = product(ty, vnni, row, x);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn legacy_avx2<const T: usize, const R: usize>(
    ty: BlockType,
    rows: [&[u8]; R],
    x: ActRow<'_>,
) -> [f32; R] {
    legacy_body::<T, false, R>(ty, rows, x)
}

#[target_feature(enable = "avx512vnni,avx512vl,avx2,fma")]
unsafe fn legacy_vnni<const T: usize, const R: usize>(
    ty: BlockType,
    rows: [&[u8]; R],
    x: ActRow<'_>,
) -> [f32; R] {
    legacy_body::<T, true, R>(ty, rows, x)
}

#[inline(always)]
unsafe fn legacy_body<const T: usize, const VNNI: bool, const R: usize>(
    ty: BlockType,
    rows: [&[u8]; R],
    x: ActRow<'_>,
) -> [f32; R] {
    let bb = ty.block_bytes();
    let len = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == len));
    let nblk = len / bb;
    let nb = nblk * (ty.block_values() / 32);
    assert!(x.q.len() >= 32 * nb && x.d.len() >= nb && x.s.len() >= nb);
    let signed = ty.is_signed();
    let (t, table, ones) = (f16_table(), iq4_table(), _mm256_set1_epi16(1));
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offs = [0f32; R];
    let mut b = 0;
    let dist = prefetch_distance();
    for k in 0..nblk {
        let blks: [&[u8]; R] = std::array::from_fn(|r| rows[r].get_unchecked(k * bb..(k + 1) * bb));
        let mut dls = [[0f32; 8]; R];
        let mut subs = 1;
        for r in 0..R {
            prefetch(blks[r], dist);
            (subs, dls[r]) = sub_blocks::<T>(t, blks[r]);
        }
        for s in 0..subs {
            let xv = load(x.q.as_ptr().add(32 * b) as *const u8);
            let xd = *x.d.get_unchecked(b);
            let xsum = if signed { 0.0 } else { *x.s.get_unchecked(b) };
            for r in 0..R {
                let (wv, dw, mw) = block32::<T>(t, blks[r], s, &dls[r], table);
                let (uw, xs) = if signed {
                    (_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv))
                } else {
                    (wv, xv)
                };
                let p32 = if VNNI {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), uw, xs)
                } else {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(uw, xs), ones)
                };
                let scale = _mm256_set1_ps(dw * xd);
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p32), acc[r]);
                if !signed {
                    offs[r] += mw * xsum;
                }
            }
            b += 1;
        }
    }
    std::array::from_fn(|r| hsum_ps(acc[r]) + offs[r])
}
