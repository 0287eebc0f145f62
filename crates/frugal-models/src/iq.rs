//! Decoding of llama.cpp's types that candle does not read: the non-linear 4-bit IQ4_NL (blocks
//! of 32: an f16 scale and 16 packed nibbles indexing a 16-value table) and IQ4_XS (super-blocks
//! of 256: an f16 scale, eight 6-bit sub-block scales biased by 32, the same table), and the
//! ternary TQ1_0 and TQ2_0 (super-blocks of 256 values in {−d, 0, d}). Written from
//! `dequantize_row_iq4_nl`/`_iq4_xs`/`_tq1_0`/`_tq2_0` in llama.cpp's `ggml-quants.c`: the same
//! products, so the values are ggml's bit for bit.
//!
//! Layouts (little-endian, bytes): IQ4_NL (18) `d`, `qs[16]` (value j in the low nibble of
//! byte j, value j+16 in its high nibble); IQ4_XS (136) `d`, `scales_h` (u16: two high bits of
//! each sub-block scale), `scales_l[4]` (low nibbles), `qs[128]` (16 bytes per sub-block of 32,
//! packed as IQ4_NL's); TQ1_0 (54) `qs[48]` (five trits a byte, as a fixed-point fraction of
//! 3⁵: elements `m + 32n` of the first 160 from byte m, then `160 + m + 16n` from byte 32 + m),
//! `qh[4]` (four trits a byte: element `240 + j + 4n`), `d`; TQ2_0 (66) `qs[64]` (2 bits:
//! element `128c + 32n + m` in bits 2n of byte 32c + m), `d`.

use frugal_formats::gguf::GgmlType;

/// The 16 values a 4-bit index stands for (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

pub const IQ4_NL_BYTES: usize = 18;
pub const IQ4_XS_BYTES: usize = 136;
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

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
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

/// Whether [`decode_row`] reads `t`.
pub fn decodes(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::TQ1_0 | GgmlType::TQ2_0
    )
}

/// Decodes whole blocks of `t` (a type [`decodes`] reads) into `out` (one value per element);
/// `None` for another type or a length that is not whole blocks of `out.len()` values.
pub fn decode_row(t: GgmlType, q: &[u8], out: &mut [f32]) -> Option<()> {
    let (block, bytes) = match t {
        GgmlType::IQ4_NL => (32, IQ4_NL_BYTES),
        GgmlType::IQ4_XS => (256, IQ4_XS_BYTES),
        GgmlType::TQ1_0 => (256, TQ1_0_BYTES),
        GgmlType::TQ2_0 => (256, TQ2_0_BYTES),
        _ => return None,
    };
    if !out.len().is_multiple_of(block) || q.len() != out.len() / block * bytes {
        return None;
    }
    for (y, o) in q.chunks_exact(bytes).zip(out.chunks_exact_mut(block)) {
        if matches!(t, GgmlType::TQ1_0 | GgmlType::TQ2_0) {
            let d = f16_at(y, bytes - 2);
            let mut l = [0u8; 256];
            if t == GgmlType::TQ1_0 {
                tq1_trits(y, &mut l);
            } else {
                tq2_levels(y, &mut l);
            }
            for (o, &l) in o.iter_mut().zip(&l) {
                *o = (l as i32 - 1) as f32 * d;
            }
            continue;
        }
        let d = f16_at(y, 0);
        if t == GgmlType::IQ4_NL {
            decode_32(d, &y[2..], o);
        } else {
            let ls = iq4_xs_sub_scales(y);
            for (ib, o) in o.chunks_exact_mut(32).enumerate() {
                decode_32(d * ls[ib] as f32, &y[8 + 16 * ib..8 + 16 * (ib + 1)], o);
            }
        }
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
