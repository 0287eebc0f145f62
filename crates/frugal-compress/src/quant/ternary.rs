//! llama.cpp's ternary types TQ1_0 (1.69 bpw) and TQ2_0 (2.06 bpw): super-blocks of 256 values
//! in {−d, 0, d} with d the block's largest magnitude, written from `quantize_row_tq1_0_ref` and
//! `quantize_row_tq2_0_ref` in `ggml/src/ggml-quants.c` (llama.cpp ignores importance weights
//! for them, and so does Frugal). Levels are 0, 1, 2 for −1, 0, 1 (offset 1); the packing is in
//! `frugal_models::iq`.

use super::kquants::f16_bits;
use frugal_models::iq::{tq1_trits, tq2_levels};
pub use frugal_models::iq::{TQ1_0_BYTES, TQ2_0_BYTES};

/// Each value's level: round(x / amax) + 1, with ggml's `lroundf` (ties away from zero).
fn levels(x: &[f32], l: &mut [u8; 256]) -> f32 {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    for (o, &v) in l.iter_mut().zip(x) {
        *o = ((v * id).round() as i32 + 1) as u8;
    }
    amax
}

/// Five trits (most significant first) as a byte: the fraction Σ tₙ·3⁻ⁿ⁻¹ rounded up in 1/256.
fn pack5(t: impl Iterator<Item = u8>) -> u8 {
    let q = t.fold(0u16, |q, t| q * 3 + t as u16);
    (q * 256).div_ceil(243) as u8
}

fn set_tq1(y: &mut [u8], l: &[u8]) {
    for m in 0..32 {
        y[m] = pack5((0..5).map(|n| l[m + 32 * n]));
    }
    for m in 0..16 {
        y[32 + m] = pack5((0..5).map(|n| l[160 + m + 16 * n]));
    }
    for j in 0..4 {
        // Four trits, the fifth zero.
        y[48 + j] = pack5((0..4).map(|n| l[240 + j + 4 * n]).chain([0]));
    }
}

fn set_tq2(y: &mut [u8], l: &[u8]) {
    for c in 0..2 {
        for m in 0..32 {
            y[32 * c + m] = (0..4).fold(0u8, |q, n| q | ((l[128 * c + 32 * n + m] & 3) << (2 * n)));
        }
    }
}

/// One super-block of 256 into 54 bytes of TQ1_0.
pub fn tq1_0_block(x: &[f32], _qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; 256];
    let d = levels(x, &mut l);
    set_tq1(y, &l);
    y[52..54].copy_from_slice(&f16_bits(d));
}

/// One super-block of 256 into 66 bytes of TQ2_0.
pub fn tq2_0_block(x: &[f32], _qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; 256];
    let d = levels(x, &mut l);
    set_tq2(y, &l);
    y[64..66].copy_from_slice(&f16_bits(d));
}

/// Scales and levels, for GPTQ ([`super::codec::LevelAccess`]).
pub(crate) mod access {
    use super::*;

    pub fn tq1_0_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (half::f16::from_le_bytes([y[52], y[53]]).to_f32(), 0.0);
    }
    pub fn tq1_0_levels(y: &[u8], q: &mut [u8]) {
        tq1_trits(y, q)
    }
    pub fn tq1_0_set_levels(y: &mut [u8], q: &[u8]) {
        set_tq1(y, q)
    }
    pub fn tq2_0_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (half::f16::from_le_bytes([y[64], y[65]]).to_f32(), 0.0);
    }
    pub fn tq2_0_levels(y: &[u8], q: &mut [u8]) {
        tq2_levels(y, q)
    }
    pub fn tq2_0_set_levels(y: &mut [u8], q: &[u8]) {
        set_tq2(y, q)
    }
}
