//! Weight rows packed in panels of sixteen for the AVX-512 VNNI product of many input rows
//! (a prompt): each `vpdpbusd` multiplies four codes of sixteen weight rows with four bytes of
//! one input row (broadcast), so the sixteen outputs of a panel grow side by side in one
//! register and every block's scales are vectors over the panel's rows — no per-block scalar
//! work per output, which is what bounds [`super::dot::avx512`]'s one-row-at-a-time products.
//!
//! The packing is [`avx512::pack_blocks32`] and [`avx512::pack_k`] from the stored blocks
//! (gathers of sixteen rows at a time), equal to [`Panels::fill`] from the unpacked rows
//! ([`Prepared`]), the plain form: codes as unsigned
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

/// `v` at `n` entries whose last `pad` are zero (the rest are about to be written).
fn size<T: Copy + Default>(v: &mut Vec<T>, n: usize, pad: usize) {
    v.resize(n, T::default());
    v[n - pad.min(n)..].fill(T::default());
}

impl Panels {
    /// Sized for `rows` rows of `n_in` values of `ty`, the last panel's padding rows zero
    /// (every live row's entries are left for the caller to write).
    pub(super) fn shape(&mut self, ty: BlockType, rows: usize, n_in: usize) {
        let np = rows.div_ceil(PANEL);
        let nb = n_in / ty.scale_block();
        let ng = if ty.is_k() { n_in / 16 } else { 0 };
        // The padded last panel is zeroed whole (its live rows are written after).
        let last = if rows.is_multiple_of(PANEL) { 0 } else { 1 };
        size(&mut self.q, np * PANEL * n_in, last * PANEL * n_in);
        size(&mut self.d, np * nb * PANEL, last * nb * PANEL);
        size(&mut self.m, np * nb * PANEL, last * nb * PANEL);
        size(&mut self.sc, np * ng * PANEL, last * ng * PANEL);
        size(&mut self.corr, np * ng * PANEL, last * ng * PANEL);
    }

    /// Packs the first `rows` rows of `p` (`n_in` values each, of type `ty`): the plain
    /// packing from unpacked rows, which [`avx512::pack_blocks32`] and [`avx512::pack_k`]
    /// (the products' own, straight from the stored blocks) are tested against.
    pub fn fill(&mut self, ty: BlockType, p: &Prepared, rows: usize, n_in: usize) {
        let nb = n_in / ty.scale_block();
        let ng = if ty.is_k() { n_in / 16 } else { 0 };
        self.shape(ty, rows, n_in);
        let flip = if ty.is_signed() { 0x80 } else { 0 };
        let corr = if ty.zero_point() != 0 { &p.zsc } else { &p.mn };
        // Four codes at a time as one 32-bit word: a panel's sixteen rows side by side.
        let flip4 = u32::from_ne_bytes([flip; 4]);
        for (pi, q) in self.q.chunks_exact_mut(PANEL * n_in).enumerate() {
            let live = (rows - pi * PANEL).min(PANEL);
            let src = &p.w[pi * PANEL * n_in..(pi * PANEL + live) * n_in];
            for (s, out) in q.chunks_exact_mut(PANEL * 4).enumerate() {
                for (l, o) in out.chunks_exact_mut(4).take(live).enumerate() {
                    let at = l * n_in + s * 4;
                    let c = u32::from_ne_bytes(src[at..at + 4].try_into().expect("four codes"));
                    o.copy_from_slice(&(c ^ flip4).to_ne_bytes());
                }
            }
        }
        for r in 0..rows {
            let (pi, l) = (r / PANEL, r % PANEL);
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
    use super::{ActRow, BlockType, Panels, PANEL};
    use std::arch::x86_64::*;

    /// One panel's rows in the stored blocks, for the packers: where the first starts, each
    /// one's byte offset from it, and which of the sixteen are live (the last panel's padding
    /// rows are not).
    #[derive(Clone, Copy)]
    struct Rows16 {
        base: *const u8,
        offsets: __m512i,
        live: __mmask16,
    }

    impl Rows16 {
        /// Panel `pi` of `n` rows of `row_bytes` bytes each in `rows`.
        #[inline(always)]
        unsafe fn of(rows: &[u8], row_bytes: usize, n: usize, pi: usize) -> Rows16 {
            let live = (n - pi * PANEL).min(PANEL);
            let step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            Rows16 {
                base: rows.as_ptr().add(pi * PANEL * row_bytes),
                offsets: _mm512_mullo_epi32(_mm512_set1_epi32(row_bytes as i32), step),
                live: (((1u32 << live) - 1) & 0xFFFF) as u16,
            }
        }

        /// The dword at byte `off` of each live row (0 in the padding rows, which read
        /// nothing).
        #[inline(always)]
        unsafe fn dword(self, off: usize) -> __m512i {
            let idx = _mm512_add_epi32(self.offsets, _mm512_set1_epi32(off as i32));
            _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), self.live, idx, self.base as _)
        }

        /// The live rows' lanes of `v` stored at `at` (the padding rows' zero).
        #[inline(always)]
        unsafe fn store(self, at: *mut u8, v: __m512i) {
            _mm512_storeu_si512(at as *mut _, _mm512_maskz_mov_epi32(self.live, v));
        }
    }

    /// Sixteen f16 values in the low halves of 32-bit lanes, widened.
    #[inline(always)]
    unsafe fn f16s(v: __m512i) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
    }

    /// Bits `sh..` of every byte of `v` under `mask` (32-bit lanes shifted, then masked).
    #[inline(always)]
    unsafe fn bits(v: __m512i, sh: u32, mask: __m512i) -> __m512i {
        _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(sh as i32)), mask)
    }

    /// Packs `n` rows of a blocks-of-32 type (`rows`: whole blocks of `ty`, IQ4_XS whole
    /// super-blocks; `n_in` values a row) into `pn` straight from the stored blocks: the bytes
    /// and scales [`Panels::fill`] packs from [`super::Prepared`]'s unpacked copy (tested).
    /// Sixteen rows at a time: one gather takes the same four stored bytes of a block from
    /// each row of the panel — for the 4-bit types the low nibbles are four codes of one
    /// group and the high nibbles four of the group sixteen values on, each a panel row's
    /// four bytes already in place — and each block's `d` (and `m`) are gathered and widened
    /// from f16 sixteen at a time. No unpacked copy of the rows is written, and no code
    /// moves on its own: unpacking a row and repacking it byte by byte cost more than the
    /// prompt's products (BENCHMARKS.md, "Prefilling a prompt").
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `ty` is one of the blocks-of-32 types.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pack_blocks32(
        ty: BlockType,
        rows: &[u8],
        n: usize,
        n_in: usize,
        pn: &mut Panels,
    ) {
        let bb = ty.block_bytes();
        let row_bytes = n_in / ty.block_values() * bb;
        assert!(!ty.is_k() && n_in.is_multiple_of(ty.block_values()));
        assert!(rows.len() == n * row_bytes && row_bytes * PANEL < i32::MAX as usize);
        pn.shape(ty, n, n_in);
        let nb = n_in / 32;
        assert!(pn.q.len() >= n.div_ceil(PANEL) * PANEL * n_in);
        assert!(pn.d.len() >= n.div_ceil(PANEL) * nb * PANEL && pn.m.len() == pn.d.len());
        let m4 = _mm512_set1_epi8(0x0F);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(
            crate::iq::KVALUES_IQ4NL.as_ptr() as *const __m128i
        ));
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        for pi in 0..n.div_ceil(PANEL) {
            let panel = Rows16::of(rows, row_bytes, n, pi);
            let gather = |off: usize| panel.dword(off);
            let q = pn.q.as_mut_ptr().add(pi * PANEL * n_in);
            let put = |g: usize, v: __m512i| panel.store(q.add(64 * g), v);
            let (d, m) = (
                pn.d.as_mut_ptr().add(pi * nb * PANEL),
                pn.m.as_mut_ptr().add(pi * nb * PANEL),
            );
            for b in 0..nb {
                // The block's bytes: its scales' dword, the fifth bits' (Q5), the codes'.
                let (at, qh_at, qs_at) = match ty {
                    BlockType::Q4_0 | BlockType::IQ4_NL => (b * bb, 0, b * bb + 2),
                    BlockType::Q4_1 => (b * bb, 0, b * bb + 4),
                    BlockType::Q5_0 => (b * bb, b * bb + 2, b * bb + 6),
                    BlockType::Q5_1 => (b * bb, b * bb + 4, b * bb + 8),
                    BlockType::Q8_0 => (b * bb, 0, b * bb + 2),
                    BlockType::IQ4_XS => ((b / 8) * bb, 0, (b / 8) * bb + 8 + 16 * (b % 8)),
                    _ => unreachable!("{ty:?} is not a block of 32"),
                };
                let sd = gather(at);
                let (dv, mv) = match ty {
                    BlockType::Q4_1 | BlockType::Q5_1 => {
                        (f16s(sd), f16s(_mm512_srli_epi32(sd, 16)))
                    }
                    BlockType::IQ4_XS => {
                        // ggml's `dl = d · (ls − 32)`, ls from 4 low and 2 high bits.
                        let s = (b % 8) as u32;
                        let lo = bits(gather(at + 4), 4 * s, _mm512_set1_epi32(0xF));
                        let hi = bits(sd, 16 + 2 * s, _mm512_set1_epi32(3));
                        let ls = _mm512_sub_epi32(
                            _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)),
                            _mm512_set1_epi32(32),
                        );
                        (
                            _mm512_mul_ps(f16s(sd), _mm512_cvtepi32_ps(ls)),
                            _mm512_setzero_ps(),
                        )
                    }
                    _ => (f16s(sd), _mm512_setzero_ps()),
                };
                _mm512_storeu_ps(d.add(b * PANEL), dv);
                _mm512_storeu_ps(m.add(b * PANEL), mv);
                if ty == BlockType::Q8_0 {
                    for s in 0..8 {
                        put(8 * b + s, _mm512_xor_si512(gather(qs_at + 4 * s), flip));
                    }
                    continue;
                }
                let qh = if qh_at > 0 {
                    gather(qh_at)
                } else {
                    _mm512_setzero_si512()
                };
                for s in 0..4 {
                    let v = gather(qs_at + 4 * s);
                    let halves = [
                        (_mm512_and_si512(v, m4), 4 * s),
                        (_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), 16 + 4 * s),
                    ];
                    for (j, (nib, bit)) in halves.into_iter().enumerate() {
                        let code = match ty {
                            BlockType::Q4_0 => _mm512_add_epi8(nib, _mm512_set1_epi8(120)),
                            BlockType::Q4_1 => nib,
                            BlockType::IQ4_NL | BlockType::IQ4_XS => {
                                _mm512_xor_si512(_mm512_shuffle_epi8(table, nib), flip)
                            }
                            _ => {
                                // Q5: bits `bit..bit + 4` of qh, each to 0x10 of its byte
                                // (bit t to bit 8t by one multiply, no carries).
                                let four = bits(qh, bit as u32, _mm512_set1_epi32(0xF));
                                let spread = _mm512_and_si512(
                                    _mm512_mullo_epi32(four, _mm512_set1_epi32(0x0020_4081)),
                                    _mm512_set1_epi32(0x0101_0101),
                                );
                                let w = _mm512_or_si512(nib, _mm512_slli_epi32(spread, 4));
                                if ty == BlockType::Q5_0 {
                                    // −16 as the signed code, +128 as the panel's byte.
                                    _mm512_add_epi8(w, _mm512_set1_epi8(112))
                                } else {
                                    w
                                }
                            }
                        };
                        put(8 * b + s + 4 * j, code);
                    }
                }
            }
        }
    }

    /// [`pack_blocks32`] for the k-quants: each super-block's 64 groups of four codes
    /// gathered from sixteen rows at once (a 4-bit type's dword holds two groups, a 2-bit
    /// type's four; Q5_K's, Q6_K's and Q3_K's high bits gathered beside them); Q4_K's, Q5_K's
    /// and Q6_K's scales gathered and unpacked sixteen rows at a time too, Q2_K's and Q3_K's
    /// row by row ([`super::super::prepare::k_scales`], once per 256 values).
    /// The bytes and scales of [`Panels::fill`] (tested).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `ty` is a k-quant.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pack_k(ty: BlockType, rows: &[u8], n: usize, n_in: usize, pn: &mut Panels) {
        let bb = ty.block_bytes();
        let nb = n_in / 256;
        let ng = n_in / 16;
        let row_bytes = nb * bb;
        assert!(ty.is_k() && n_in.is_multiple_of(256));
        assert!(rows.len() == n * row_bytes && row_bytes * PANEL < i32::MAX as usize);
        pn.shape(ty, n, n_in);
        let np = n.div_ceil(PANEL);
        assert!(pn.q.len() >= np * PANEL * n_in && pn.d.len() >= np * nb * PANEL);
        assert!(pn.sc.len() >= np * ng * PANEL && pn.corr.len() >= np * ng * PANEL);
        let (m4, ones, threes) = (
            _mm512_set1_epi8(0x0F),
            _mm512_set1_epi8(1),
            _mm512_set1_epi8(3),
        );
        let t = super::super::prepare::f16_table();
        let z = ty.zero_point();
        for pi in 0..np {
            let panel = Rows16::of(rows, row_bytes, n, pi);
            let live = (n - pi * PANEL).min(PANEL);
            let q = pn.q.as_mut_ptr().add(pi * PANEL * n_in);
            for b in 0..nb {
                let gather = |off: usize| panel.dword(b * bb + off);
                let put = |g: usize, v: __m512i| panel.store(q.add(64 * (64 * b + g)), v);
                match ty {
                    BlockType::Q4_K | BlockType::Q5_K => {
                        let five = ty == BlockType::Q5_K;
                        let qs = if five { 48 } else { 16 };
                        for s in 0..8 {
                            let qh = if five {
                                gather(16 + 4 * s)
                            } else {
                                _mm512_setzero_si512()
                            };
                            for c in 0..4 {
                                let v = gather(qs + 32 * c + 4 * s);
                                let mut lo = _mm512_and_si512(v, m4);
                                let mut hi = bits(v, 4, m4);
                                if five {
                                    let c = c as u32;
                                    lo = _mm512_or_si512(
                                        lo,
                                        _mm512_slli_epi32(bits(qh, 2 * c, ones), 4),
                                    );
                                    hi = _mm512_or_si512(
                                        hi,
                                        _mm512_slli_epi32(bits(qh, 2 * c + 1, ones), 4),
                                    );
                                }
                                put(16 * c + s, lo);
                                put(16 * c + 8 + s, hi);
                            }
                        }
                    }
                    BlockType::Q6_K => {
                        for h in 0..2 {
                            for s in 0..8 {
                                let a = gather(64 * h + 4 * s);
                                let c = gather(64 * h + 32 + 4 * s);
                                let qh = gather(128 + 32 * h + 4 * s);
                                let top = |sh: u32| _mm512_slli_epi32(bits(qh, sh, threes), 4);
                                let g = 32 * h + s;
                                put(g, _mm512_or_si512(_mm512_and_si512(a, m4), top(0)));
                                put(g + 8, _mm512_or_si512(_mm512_and_si512(c, m4), top(2)));
                                put(g + 16, _mm512_or_si512(bits(a, 4, m4), top(4)));
                                put(g + 24, _mm512_or_si512(bits(c, 4, m4), top(6)));
                            }
                        }
                    }
                    BlockType::Q2_K | BlockType::Q3_K => {
                        let three = ty == BlockType::Q3_K;
                        let qs = if three { 32 } else { 16 };
                        for s in 0..8 {
                            let hm = if three {
                                gather(4 * s)
                            } else {
                                _mm512_setzero_si512()
                            };
                            for h in 0..2 {
                                let v = gather(qs + 32 * h + 4 * s);
                                for j in 0..4 {
                                    let mut code = bits(v, 2 * j as u32, threes);
                                    if three {
                                        let hb = bits(hm, (4 * h + j) as u32, ones);
                                        code = _mm512_or_si512(code, _mm512_slli_epi32(hb, 2));
                                    }
                                    put(32 * h + 8 * j + s, code);
                                }
                            }
                        }
                    }
                    _ => unreachable!("{ty:?} is not a k-quant"),
                }
                let (scp, corrp) = (pn.sc.as_mut_ptr(), pn.corr.as_mut_ptr());
                let sc_at = |g: usize| scp.add((pi * ng + 16 * b + g) * PANEL);
                let corr_at = |j: usize| corrp.add((pi * ng / 2 + 8 * b + j) * PANEL * 2);
                let put_i32 = |at: *mut i32, v: __m512i| _mm512_storeu_si512(at as *mut _, v);
                let put_pair = |at: *mut i16, v: __m512i| _mm512_storeu_si512(at as *mut _, v);
                let dm = pn.d.as_mut_ptr().add((pi * nb + b) * PANEL);
                let mm = pn.m.as_mut_ptr().add((pi * nb + b) * PANEL);
                let byte = |v: __m512i, i: usize| bits(v, 8 * i as u32, _mm512_set1_epi32(0xFF));
                match ty {
                    BlockType::Q4_K | BlockType::Q5_K => {
                        // [`super::super::prepare::scale_min_k4`], four sub-blocks per dword.
                        let sd = gather(0);
                        _mm512_storeu_ps(dm, f16s(sd));
                        _mm512_storeu_ps(mm, f16s(_mm512_srli_epi32(sd, 16)));
                        let (a0, a1, a2) = (gather(4), gather(8), gather(12));
                        let (m6, m2) = (_mm512_set1_epi8(0x3F), _mm512_set1_epi8(3));
                        let top = |a: __m512i| _mm512_slli_epi32(bits(a, 6, m2), 4);
                        let scs = [
                            _mm512_and_si512(a0, m6),
                            _mm512_or_si512(_mm512_and_si512(a2, m4), top(a0)),
                        ];
                        let mns = [
                            _mm512_and_si512(a1, m6),
                            _mm512_or_si512(bits(a2, 4, m4), top(a1)),
                        ];
                        for j in 0..8 {
                            let (sc, mn) = (byte(scs[j / 4], j % 4), byte(mns[j / 4], j % 4));
                            put_i32(sc_at(2 * j), sc);
                            put_i32(sc_at(2 * j + 1), sc);
                            put_pair(corr_at(j), _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16)));
                        }
                        continue;
                    }
                    BlockType::Q6_K => {
                        // `d` is the block's last two bytes (read as the high half of the
                        // dword before them: nothing past the block is read).
                        _mm512_storeu_ps(dm, f16s(_mm512_srli_epi32(gather(206), 16)));
                        _mm512_storeu_ps(mm, _mm512_setzero_ps());
                        for w in 0..4 {
                            let v = gather(192 + 4 * w);
                            // The four signed scales of the dword, and z · sc of each.
                            let sc: [__m512i; 4] = std::array::from_fn(|t| {
                                let up = _mm512_sll_epi32(v, _mm_cvtsi32_si128(24 - 8 * t as i32));
                                _mm512_srai_epi32(up, 24)
                            });
                            for (t, v) in sc.iter().enumerate() {
                                put_i32(sc_at(4 * w + t), *v);
                            }
                            for h in 0..2 {
                                let zv = _mm512_set1_epi32(i32::from(z));
                                let (e, o) = (
                                    _mm512_mullo_epi32(sc[2 * h], zv),
                                    _mm512_mullo_epi32(sc[2 * h + 1], zv),
                                );
                                let pair = _mm512_or_si512(
                                    _mm512_and_si512(e, _mm512_set1_epi32(0xFFFF)),
                                    _mm512_slli_epi32(o, 16),
                                );
                                put_pair(corr_at(2 * w + h), pair);
                            }
                        }
                        continue;
                    }
                    _ => {}
                }
                // Q2_K and Q3_K: the scales row by row.
                for l in 0..live {
                    let blk = &rows[(pi * PANEL + l) * row_bytes + b * bb..][..bb];
                    let (mut sc, mut mn) = ([0i16; 16], [0i16; 16]);
                    let (d, dmin) = super::super::prepare::k_scales(ty, t, blk, &mut sc, &mut mn);
                    pn.d[(pi * nb + b) * PANEL + l] = d;
                    pn.m[(pi * nb + b) * PANEL + l] = dmin;
                    for g in 0..16 {
                        let gg = 16 * b + g;
                        pn.sc[(pi * ng + gg) * PANEL + l] = i32::from(sc[g]);
                        let corr = if z != 0 { z * sc[g] } else { mn[g] };
                        pn.corr[((pi * ng / 2 + gg / 2) * PANEL + l) * 2 + gg % 2] = corr;
                    }
                }
            }
        }
    }

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
