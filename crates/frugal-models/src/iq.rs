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
pub const IQ3_XXS_BYTES: usize = 98;
pub const IQ3_S_BYTES: usize = 110;

/// The 3-bit lattices' points, four 3-bit levels `l` a point (`kgrid_256`/`kgrid_512` of
/// `iq3xs_init_impl`: IQ3_XXS's 256 points and IQ3_S's 512). A quantizer sees the values
/// `2l + 1`; the decoders' grids (`iq3xxs_grid`, `iq3s_grid` in ggml-common.h) are derived from
/// them: `2l + 1` for IQ3_S, [`IQ3XXS_DECODED`]`[l]` for IQ3_XXS (checked against ggml's tables
/// when the tables were written down).
pub const KGRID_IQ3XXS: [u16; 256] = [
    0, 2, 4, 9, 11, 15, 16, 18, 25, 34, 59, 61, 65, 67, 72, 74, 81, 85, 88, 90, 97, 108, 120, 128,
    130, 132, 137, 144, 146, 153, 155, 159, 169, 175, 189, 193, 199, 200, 202, 213, 248, 267, 287,
    292, 303, 315, 317, 321, 327, 346, 362, 413, 436, 456, 460, 462, 483, 497, 513, 515, 520, 522,
    529, 531, 536, 538, 540, 551, 552, 576, 578, 585, 592, 594, 641, 643, 648, 650, 657, 664, 698,
    704, 706, 720, 729, 742, 758, 769, 773, 808, 848, 852, 870, 889, 901, 978, 992, 1024, 1026,
    1033, 1035, 1040, 1042, 1046, 1049, 1058, 1089, 1091, 1093, 1096, 1098, 1105, 1112, 1139, 1143,
    1144, 1152, 1154, 1161, 1167, 1168, 1170, 1183, 1184, 1197, 1217, 1224, 1228, 1272, 1276, 1309,
    1323, 1347, 1367, 1377, 1404, 1473, 1475, 1486, 1509, 1537, 1544, 1546, 1553, 1555, 1576, 1589,
    1594, 1600, 1602, 1616, 1625, 1636, 1638, 1665, 1667, 1672, 1685, 1706, 1722, 1737, 1755, 1816,
    1831, 1850, 1856, 1862, 1874, 1901, 1932, 1950, 1971, 2011, 2032, 2052, 2063, 2077, 2079, 2091,
    2095, 2172, 2192, 2207, 2208, 2224, 2230, 2247, 2277, 2308, 2345, 2356, 2389, 2403, 2424, 2501,
    2504, 2506, 2520, 2570, 2593, 2616, 2624, 2630, 2646, 2669, 2700, 2714, 2746, 2754, 2795, 2824,
    2835, 2839, 2874, 2882, 2905, 2984, 3028, 3042, 3092, 3108, 3110, 3124, 3153, 3185, 3215, 3252,
    3288, 3294, 3364, 3397, 3434, 3483, 3523, 3537, 3587, 3589, 3591, 3592, 3610, 3626, 3670, 3680,
    3722, 3749, 3754, 3776, 3789, 3803, 3824, 3857, 3873, 3904, 3906, 3924, 3992,
];

/// IQ3_S's 512 points (see [`KGRID_IQ3XXS`]).
pub const KGRID_IQ3S: [u16; 512] = [
    0, 1, 2, 5, 7, 8, 9, 10, 12, 14, 16, 17, 21, 27, 32, 34, 37, 39, 41, 43, 48, 50, 57, 60, 63,
    64, 65, 66, 68, 72, 73, 77, 80, 83, 87, 89, 93, 100, 113, 117, 122, 128, 129, 133, 135, 136,
    139, 142, 145, 149, 152, 156, 162, 165, 167, 169, 171, 184, 187, 195, 201, 205, 208, 210, 217,
    219, 222, 228, 232, 234, 247, 249, 253, 256, 267, 271, 273, 276, 282, 288, 291, 297, 312, 322,
    324, 336, 338, 342, 347, 353, 357, 359, 374, 379, 390, 393, 395, 409, 426, 441, 448, 450, 452,
    464, 466, 470, 475, 488, 492, 512, 513, 514, 516, 520, 521, 523, 525, 527, 528, 530, 537, 540,
    542, 556, 558, 561, 570, 576, 577, 579, 582, 584, 588, 593, 600, 603, 609, 616, 618, 632, 638,
    640, 650, 653, 655, 656, 660, 666, 672, 675, 685, 688, 698, 705, 708, 711, 712, 715, 721, 727,
    728, 732, 737, 754, 760, 771, 773, 778, 780, 793, 795, 802, 806, 808, 812, 833, 840, 843, 849,
    856, 858, 873, 912, 916, 919, 932, 934, 961, 963, 968, 970, 977, 989, 993, 1010, 1016, 1024,
    1025, 1027, 1029, 1031, 1032, 1034, 1036, 1038, 1041, 1043, 1047, 1048, 1050, 1057, 1059, 1061,
    1064, 1066, 1079, 1080, 1083, 1085, 1088, 1090, 1096, 1099, 1103, 1106, 1109, 1113, 1116, 1122,
    1129, 1153, 1156, 1159, 1169, 1171, 1176, 1183, 1185, 1195, 1199, 1209, 1212, 1216, 1218, 1221,
    1225, 1234, 1236, 1241, 1243, 1250, 1256, 1270, 1281, 1287, 1296, 1299, 1306, 1309, 1313, 1338,
    1341, 1348, 1353, 1362, 1375, 1376, 1387, 1400, 1408, 1410, 1415, 1425, 1453, 1457, 1477, 1481,
    1494, 1496, 1507, 1512, 1538, 1545, 1547, 1549, 1551, 1554, 1561, 1563, 1565, 1570, 1572, 1575,
    1577, 1587, 1593, 1601, 1603, 1605, 1612, 1617, 1619, 1632, 1648, 1658, 1662, 1664, 1674, 1680,
    1690, 1692, 1704, 1729, 1736, 1740, 1745, 1747, 1751, 1752, 1761, 1763, 1767, 1773, 1787, 1795,
    1801, 1806, 1810, 1817, 1834, 1840, 1844, 1857, 1864, 1866, 1877, 1882, 1892, 1902, 1915, 1934,
    1953, 1985, 1987, 2000, 2002, 2013, 2048, 2052, 2058, 2064, 2068, 2071, 2074, 2081, 2088, 2104,
    2114, 2119, 2121, 2123, 2130, 2136, 2141, 2147, 2153, 2157, 2177, 2179, 2184, 2189, 2193, 2203,
    2208, 2223, 2226, 2232, 2244, 2249, 2251, 2256, 2258, 2265, 2269, 2304, 2306, 2324, 2335, 2336,
    2361, 2373, 2375, 2385, 2418, 2443, 2460, 2480, 2504, 2509, 2520, 2531, 2537, 2562, 2568, 2572,
    2578, 2592, 2596, 2599, 2602, 2614, 2620, 2625, 2627, 2629, 2634, 2641, 2650, 2682, 2688, 2697,
    2707, 2712, 2718, 2731, 2754, 2759, 2760, 2775, 2788, 2793, 2805, 2811, 2817, 2820, 2832, 2842,
    2854, 2890, 2902, 2921, 2923, 2978, 3010, 3012, 3026, 3081, 3083, 3085, 3097, 3099, 3120, 3136,
    3152, 3159, 3188, 3210, 3228, 3234, 3245, 3250, 3256, 3264, 3276, 3281, 3296, 3349, 3363, 3378,
    3392, 3395, 3420, 3440, 3461, 3488, 3529, 3531, 3584, 3588, 3591, 3600, 3602, 3614, 3616, 3628,
    3634, 3650, 3657, 3668, 3683, 3685, 3713, 3716, 3720, 3726, 3729, 3736, 3753, 3778, 3802, 3805,
    3819, 3841, 3845, 3851, 3856, 3880, 3922, 3938, 3970, 3993, 4032,
];

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
        GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::IQ3_XXS
            | GgmlType::IQ3_S
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0
    )
}

/// Decodes whole blocks of `t` (a type [`decodes`] reads) into `out` (one value per element);
/// `None` for another type or a length that is not whole blocks of `out.len()` values.
pub fn decode_row(t: GgmlType, q: &[u8], out: &mut [f32]) -> Option<()> {
    let (block, bytes) = match t {
        GgmlType::IQ4_NL => (32, IQ4_NL_BYTES),
        GgmlType::IQ4_XS => (256, IQ4_XS_BYTES),
        GgmlType::IQ3_XXS => (256, IQ3_XXS_BYTES),
        GgmlType::IQ3_S => (256, IQ3_S_BYTES),
        GgmlType::TQ1_0 => (256, TQ1_0_BYTES),
        GgmlType::TQ2_0 => (256, TQ2_0_BYTES),
        _ => return None,
    };
    if !out.len().is_multiple_of(block) || q.len() != out.len() / block * bytes {
        return None;
    }
    for (y, o) in q.chunks_exact(bytes).zip(out.chunks_exact_mut(block)) {
        if t == GgmlType::IQ3_XXS {
            decode_iq3_xxs(y, o);
            continue;
        }
        if t == GgmlType::IQ3_S {
            decode_iq3_s(y, o);
            continue;
        }
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
