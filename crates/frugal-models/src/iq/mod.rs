//! Decoding of llama.cpp's types that candle does not read: the non-linear 4-bit IQ4_NL (blocks
//! of 32: an f16 scale and 16 packed nibbles indexing a 16-value table) and IQ4_XS (super-blocks
//! of 256: an f16 scale, eight 6-bit sub-block scales biased by 32, the same table), the lattice
//! types IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M (points of 4 or 8 values from
//! [`grids`], signs, 4-bit or 3-bit sub-block scales), and the ternary TQ1_0 and TQ2_0
//! (super-blocks of 256 values in {−d, 0, d}). Written from the `dequantize_row_*` functions of
//! llama.cpp's `ggml-quants.c`: the same products in the same order, so the values are ggml's
//! bit for bit. One table, [`DECODERS`], names each type's block and decoder.
//!
//! Layouts (little-endian, bytes): IQ4_NL (18) `d`, `qs[16]` (value j in the low nibble of
//! byte j, value j+16 in its high nibble); IQ4_XS (136) `d`, `scales_h` (u16: two high bits of
//! each sub-block scale), `scales_l[4]` (low nibbles), `qs[128]` (16 bytes per sub-block of 32,
//! packed as IQ4_NL's); IQ2_XXS (66) `d`, per 32 values four point indices and a u32 of four
//! 7-bit sign groups and a 4-bit scale; IQ2_XS (74) `d`, 32 u16 (9-bit point, 7 sign bits),
//! `scales[8]` (two 4-bit scales per 32); IQ2_S (82) `d`, 32 low index bytes, 32 sign bytes,
//! `qh[8]` (two high bits per point), `scales[8]`; IQ1_S (50) `d`, 32 low index bytes, 8 u16
//! (3 high bits per point, a 3-bit scale, the shift's sign); IQ1_M (56) 32 low index bytes,
//! `qh[16]` (3 high bits and the shift's sign per point), four u16 of 3-bit scales per 16 whose
//! top nibbles make the f16 scale; TQ1_0 (54) `qs[48]` (five trits a byte, as a fixed-point
//! fraction of 3⁵: elements `m + 32n` of the first 160 from byte m, then `160 + m + 16n` from
//! byte 32 + m), `qh[4]` (four trits a byte: element `240 + j + 4n`), `d`; TQ2_0 (66) `qs[64]`
//! (2 bits: element `128c + 32n + m` in bits 2n of byte 32c + m), `d`.

use frugal_formats::gguf::GgmlType;

pub mod grids;
pub use grids::*;

/// The 16 values a 4-bit index stands for (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

pub const IQ4_NL_BYTES: usize = 18;
pub const IQ3_XXS_BYTES: usize = 98;
pub const IQ3_S_BYTES: usize = 110;

/// What IQ3_XXS's decoder multiplies for level `l` (four times `2l + 1`, the top level 62).
pub const IQ3XXS_DECODED: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];

/// The four levels of lattice point `code`.
#[inline]
pub fn lattice_levels(code: u16) -> [u8; 4] {
    std::array::from_fn(|i| ((code >> (3 * i)) & 7) as u8)
}

/// Seven sign bits and their parity as the eighth (`ksigns_iq2xs`).
#[inline]
pub fn signs_with_parity(s7: u32) -> u8 {
    let s = (s7 & 127) as u8;
    s | (((s.count_ones() & 1) as u8) << 7)
}

fn decode_iq3_xxs(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    let qs = &y[2..66];
    for ib in 0..8 {
        let aux = u32::from_le_bytes(y[66 + 4 * ib..70 + 4 * ib].try_into().expect("4 bytes"));
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for l in 0..4 {
            let signs = signs_with_parity(aux >> (7 * l));
            for half in 0..2 {
                let g = lattice_levels(KGRID_IQ3XXS[qs[8 * ib + 2 * l + half] as usize]);
                for j in 0..4 {
                    let neg = signs & (1 << (j + 4 * half)) != 0;
                    o[32 * ib + 8 * l + 4 * half + j] =
                        db * IQ3XXS_DECODED[g[j] as usize] as f32 * if neg { -1.0 } else { 1.0 };
                }
            }
        }
    }
}

fn decode_iq3_s(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    let (qs, qh, signs, scales) = (&y[2..66], &y[66..74], &y[74..106], &y[106..110]);
    for ib in 0..8 {
        let sc = (scales[ib / 2] >> (4 * (ib % 2))) & 0xF;
        let db = d * (1 + 2 * sc as i32) as f32;
        for l in 0..4 {
            for half in 0..2 {
                let k = 8 * ib + 2 * l + half;
                let hi = ((qh[ib] >> (2 * l + half)) & 1) as usize;
                let g = lattice_levels(KGRID_IQ3S[qs[k] as usize | (hi << 8)]);
                for j in 0..4 {
                    let neg = signs[4 * ib + l] & (1 << (j + 4 * half)) != 0;
                    o[32 * ib + 8 * l + 4 * half + j] =
                        db * (2 * g[j] + 1) as f32 * if neg { -1.0 } else { 1.0 };
                }
            }
        }
    }
}
pub const IQ4_XS_BYTES: usize = 136;
pub const IQ2_XXS_BYTES: usize = 66;
pub const IQ2_XS_BYTES: usize = 74;
pub const IQ2_S_BYTES: usize = 82;
pub const IQ1_S_BYTES: usize = 50;
pub const IQ1_M_BYTES: usize = 56;

/// What the IQ2 types' decoders multiply for level `l` of a lattice point.
pub const IQ2_DECODED: [u8; 3] = [8, 25, 43];

/// The shift of the IQ1 types' levels: `l − 1 ± δ` (`IQ1S_DELTA`, `IQ1M_DELTA`).
pub const IQ1_DELTA: f32 = 0.125;

/// The eight 2-bit levels of an IQ2/IQ1 lattice point `code`.
#[inline]
pub fn grid8_levels(code: u16) -> [u8; 8] {
    std::array::from_fn(|i| ((code >> (2 * i)) & 3) as u8)
}
pub const TQ1_0_BYTES: usize = 54;
pub const TQ2_0_BYTES: usize = 66;

/// The trit at position `n` (0..5, most significant first) of a TQ1_0 byte.
#[inline]
pub fn tq1_trit(b: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = b.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as u8
}

/// The 256 trits (0, 1, 2 for −1, 0, 1) of a TQ1_0 block, in element order.
pub fn tq1_trits(y: &[u8], out: &mut [u8]) {
    for m in 0..32 {
        for n in 0..5 {
            out[m + 32 * n] = tq1_trit(y[m], n);
        }
    }
    for m in 0..16 {
        for n in 0..5 {
            out[160 + m + 16 * n] = tq1_trit(y[32 + m], n);
        }
    }
    for j in 0..4 {
        for n in 0..4 {
            out[240 + j + 4 * n] = tq1_trit(y[48 + j], n);
        }
    }
}

/// The 256 two-bit values of a TQ2_0 block, in element order.
pub fn tq2_levels(y: &[u8], out: &mut [u8]) {
    for c in 0..2 {
        for n in 0..4 {
            for m in 0..32 {
                out[128 * c + 32 * n + m] = (y[32 * c + m] >> (2 * n)) & 3;
            }
        }
    }
}

/// The f16 at byte `at` of a block, as f32.
#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The eight sub-block scales of an IQ4_XS block, `ls − 32` (−32..=31).
pub fn iq4_xs_sub_scales(y: &[u8]) -> [i32; 8] {
    let h = u16::from_le_bytes([y[2], y[3]]);
    std::array::from_fn(|ib| {
        let l = (y[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
        let hi = (h >> (2 * ib)) & 3;
        (l as i32 | ((hi as i32) << 4)) - 32
    })
}

/// Unpacks 32 four-bit indices from 16 bytes.
#[inline]
pub fn unpack_nibbles(qs: &[u8], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = qs[j] & 0xF;
        out[j + 16] = qs[j] >> 4;
    }
}

fn decode_32(d: f32, qs: &[u8], out: &mut [f32]) {
    for j in 0..16 {
        out[j] = d * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
        out[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
    }
}

/// One row of the decoders' table: a type, its block of values and bytes, and the block's
/// decoder.
struct Decoder {
    ty: GgmlType,
    block: usize,
    bytes: usize,
    decode: fn(&[u8], &mut [f32]),
}

const DECODERS: &[Decoder] = &[
    Decoder {
        ty: GgmlType::IQ4_NL,
        block: 32,
        bytes: IQ4_NL_BYTES,
        decode: decode_iq4_nl,
    },
    Decoder {
        ty: GgmlType::IQ4_XS,
        block: 256,
        bytes: IQ4_XS_BYTES,
        decode: decode_iq4_xs,
    },
    Decoder {
        ty: GgmlType::IQ3_XXS,
        block: 256,
        bytes: IQ3_XXS_BYTES,
        decode: decode_iq3_xxs,
    },
    Decoder {
        ty: GgmlType::IQ3_S,
        block: 256,
        bytes: IQ3_S_BYTES,
        decode: decode_iq3_s,
    },
    Decoder {
        ty: GgmlType::IQ2_XXS,
        block: 256,
        bytes: IQ2_XXS_BYTES,
        decode: decode_iq2_xxs,
    },
    Decoder {
        ty: GgmlType::IQ2_XS,
        block: 256,
        bytes: IQ2_XS_BYTES,
        decode: decode_iq2_xs,
    },
    Decoder {
        ty: GgmlType::IQ2_S,
        block: 256,
        bytes: IQ2_S_BYTES,
        decode: decode_iq2_s,
    },
    Decoder {
        ty: GgmlType::IQ1_S,
        block: 256,
        bytes: IQ1_S_BYTES,
        decode: decode_iq1_s,
    },
    Decoder {
        ty: GgmlType::IQ1_M,
        block: 256,
        bytes: IQ1_M_BYTES,
        decode: decode_iq1_m,
    },
    Decoder {
        ty: GgmlType::TQ1_0,
        block: 256,
        bytes: TQ1_0_BYTES,
        decode: decode_tq1_0,
    },
    Decoder {
        ty: GgmlType::TQ2_0,
        block: 256,
        bytes: TQ2_0_BYTES,
        decode: decode_tq2_0,
    },
];

fn decode_iq4_nl(y: &[u8], o: &mut [f32]) {
    decode_32(f16_at(y, 0), &y[2..], o);
}

fn decode_iq4_xs(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    let ls = iq4_xs_sub_scales(y);
    for (ib, o) in o.chunks_exact_mut(32).enumerate() {
        decode_32(d * ls[ib] as f32, &y[8 + 16 * ib..8 + 16 * (ib + 1)], o);
    }
}

fn decode_tq1_0(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, TQ1_0_BYTES - 2);
    let mut l = [0u8; 256];
    tq1_trits(y, &mut l);
    for (o, &l) in o.iter_mut().zip(&l) {
        *o = (l as i32 - 1) as f32 * d;
    }
}

fn decode_tq2_0(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, TQ2_0_BYTES - 2);
    let mut l = [0u8; 256];
    tq2_levels(y, &mut l);
    for (o, &l) in o.iter_mut().zip(&l) {
        *o = (l as i32 - 1) as f32 * d;
    }
}

/// Eight values of an IQ2 lattice point at scale `db`, negated where `signs` has a bit.
#[inline]
fn iq2_eight(db: f32, code: u16, signs: u8, o: &mut [f32]) {
    let g = grid8_levels(code);
    for j in 0..8 {
        let v = db * IQ2_DECODED[g[j] as usize] as f32;
        o[j] = if signs & (1 << j) != 0 { -v } else { v };
    }
}

fn decode_iq2_xxs(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    for ib in 0..8 {
        let at = 2 + 8 * ib;
        let aux = u32::from_le_bytes(y[at + 4..at + 8].try_into().expect("4 bytes"));
        let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for l in 0..4 {
            let signs = signs_with_parity(aux >> (7 * l));
            let code = KGRID_IQ2XXS[y[at + l] as usize];
            iq2_eight(
                db,
                code,
                signs,
                &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8],
            );
        }
    }
}

fn decode_iq2_xs(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    for ib in 0..8 {
        let sc = y[66 + ib];
        let db = [
            d * (0.5 + (sc & 0xF) as f32) * 0.25,
            d * (0.5 + (sc >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let q = u16::from_le_bytes([y[2 + 8 * ib + 2 * l], y[3 + 8 * ib + 2 * l]]);
            let signs = signs_with_parity((q >> 9) as u32);
            let code = KGRID_IQ2XS[(q & 511) as usize];
            iq2_eight(
                db[l / 2],
                code,
                signs,
                &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8],
            );
        }
    }
}

fn decode_iq2_s(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    let (qs, signs, qh, scales) = (&y[2..34], &y[34..66], &y[66..74], &y[74..82]);
    for ib in 0..8 {
        let sc = scales[ib];
        let db = [
            d * (0.5 + (sc & 0xF) as f32) * 0.25,
            d * (0.5 + (sc >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let hi = ((qh[ib] as usize) << (8 - 2 * l)) & 0x300;
            let code = KGRID_IQ2S[qs[4 * ib + l] as usize | hi];
            iq2_eight(
                db[l / 2],
                code,
                signs[4 * ib + l],
                &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8],
            );
        }
    }
}

/// Eight values of an IQ1 lattice point (levels −1, 0, 1) shifted by `delta`, at scale `dl`.
#[inline]
fn iq1_eight(dl: f32, code: u16, delta: f32, o: &mut [f32]) {
    let g = grid8_levels(code);
    for j in 0..8 {
        o[j] = dl * ((g[j] as i32 - 1) as f32 + delta);
    }
}

fn decode_iq1_s(y: &[u8], o: &mut [f32]) {
    let d = f16_at(y, 0);
    for ib in 0..8 {
        let qh = u16::from_le_bytes([y[34 + 2 * ib], y[35 + 2 * ib]]);
        let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
        let delta = if qh & 0x8000 != 0 {
            -IQ1_DELTA
        } else {
            IQ1_DELTA
        };
        for l in 0..4 {
            let code =
                KGRID_IQ1S[y[2 + 4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8)];
            iq1_eight(
                dl,
                code,
                delta,
                &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8],
            );
        }
    }
}

/// IQ1_M's super-block scale: an f16 whose four nibbles are the top nibbles of the four u16
/// scale words.
pub fn iq1_m_scale(y: &[u8]) -> f32 {
    let sc = |i: usize| u16::from_le_bytes([y[48 + 2 * i], y[49 + 2 * i]]);
    let bits = (sc(0) >> 12) | ((sc(1) >> 8) & 0x00F0) | ((sc(2) >> 4) & 0x0F00) | (sc(3) & 0xF000);
    half::f16::from_bits(bits).to_f32()
}

fn decode_iq1_m(y: &[u8], o: &mut [f32]) {
    let d = iq1_m_scale(y);
    let (qs, qh) = (&y[..32], &y[32..48]);
    for ib in 0..8 {
        let sc = u16::from_le_bytes([y[48 + 2 * (ib / 2)], y[49 + 2 * (ib / 2)]]);
        let dl1 = d * (2 * ((sc >> (6 * (ib % 2))) & 7) + 1) as f32;
        let dl2 = d * (2 * ((sc >> (6 * (ib % 2) + 3)) & 7) + 1) as f32;
        for l in 0..4 {
            let h = qh[2 * ib + l / 2] as usize;
            let hi = if l % 2 == 0 {
                (h << 8) & 0x700
            } else {
                (h << 4) & 0x700
            };
            let neg = h & if l % 2 == 0 { 0x08 } else { 0x80 } != 0;
            let delta = if neg { -IQ1_DELTA } else { IQ1_DELTA };
            let dl = if l < 2 { dl1 } else { dl2 };
            let code = KGRID_IQ1S[qs[4 * ib + l] as usize | hi];
            iq1_eight(
                dl,
                code,
                delta,
                &mut o[32 * ib + 8 * l..32 * ib + 8 * l + 8],
            );
        }
    }
}

/// Whether [`decode_row`] reads `t`.
pub fn decodes(t: GgmlType) -> bool {
    DECODERS.iter().any(|d| d.ty == t)
}

/// Decodes whole blocks of `t` (a type [`decodes`] reads) into `out` (one value per element);
/// `None` for another type or a length that is not whole blocks of `out.len()` values.
pub fn decode_row(t: GgmlType, q: &[u8], out: &mut [f32]) -> Option<()> {
    let d = DECODERS.iter().find(|d| d.ty == t)?;
    if !out.len().is_multiple_of(d.block) || q.len() != out.len() / d.block * d.bytes {
        return None;
    }
    for (y, o) in q.chunks_exact(d.bytes).zip(out.chunks_exact_mut(d.block)) {
        (d.decode)(y, o);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_hand_made_block_of_each_type() {
        // IQ4_NL: d = 0.5, index j%16 in both nibbles.
        let mut y = vec![0u8; IQ4_NL_BYTES];
        y[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            y[2 + j] = (j as u8) | (((15 - j) as u8) << 4);
        }
        let mut out = [0f32; 32];
        decode_row(GgmlType::IQ4_NL, &y, &mut out).unwrap();
        assert_eq!(out[0], -63.5);
        assert_eq!(out[15], 56.5);
        assert_eq!(out[16], 56.5);
        // IQ4_XS: d = 1, sub-block 3's scale 5 (37 = 0b10_0101: low nibble 5, high bits 2).
        let mut y = vec![0u8; IQ4_XS_BYTES];
        y[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        let h: u16 = 2 << 6;
        y[2..4].copy_from_slice(&h.to_le_bytes());
        y[4 + 1] = 5 << 4;
        y[8 + 16 * 3] = 0x0F; // element 96: index 15; element 112: index 0
        let mut out = vec![0f32; 256];
        decode_row(GgmlType::IQ4_XS, &y, &mut out).unwrap();
        assert_eq!(iq4_xs_sub_scales(&y)[3], 5);
        assert_eq!(iq4_xs_sub_scales(&y)[0], -32);
        assert_eq!(out[96], 5.0 * 113.0);
        assert_eq!(out[112], 5.0 * -127.0);
        assert_eq!(out[0], -32.0 * -127.0);
        assert!(decode_row(GgmlType::IQ4_XS, &y[..100], &mut out).is_none());
        assert!(decode_row(GgmlType::Q4_0, &y, &mut out).is_none());
    }
}
