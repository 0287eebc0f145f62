//! One-row products straight from the stored k-quant blocks (AVX2, and AVX-512 where the CPU
//! has it): each super-block's codes unpacked in registers and multiplied at once, without
//! [`super::prepare`]'s pass through memory — for decoding a token, where a weight row meets a
//! single input row and unpacking it first costs more than the product. The integer arithmetic
//! is [`super::dot::k_reference`]'s; tested against it. The AVX-512 kernel takes 64 values per
//! instruction (two 32-value sub-blocks of Q4_K/Q5_K, four 16-value groups of Q6_K, their
//! scales spread over the lanes by one permute), where AVX2 takes 32.

#![cfg(target_arch = "x86_64")]

use super::dot::avx2::hsum_ps;
use super::dot::ActRow;
use super::prepare::{f16_at, f16_table, scale_min_k4};
use super::BlockType;
use std::arch::x86_64::*;

/// Whether `ty` has a fused one-row kernel here.
pub fn has(ty: BlockType) -> bool {
    matches!(ty, BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K)
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The product of one row of `ty` blocks (`row`, whole super-blocks) with one Q8_K row.
///
/// # Safety
/// The CPU has AVX2 and FMA; `has(ty)`; `x` holds as many super-blocks as `row`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn row(ty: BlockType, row: &[u8], x: ActRow<'_>) -> f32 {
    let bb = ty.block_bytes();
    let nb = row.len() / bb;
    assert!(x.q.len() >= 256 * nb && x.d.len() >= nb && x.bsums.len() >= 16 * nb);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let t = f16_table();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
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
            _ => unreachable!("{ty:?} has no fused kernel"),
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
    for (b, blk) in row.chunks_exact(bb).enumerate() {
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
