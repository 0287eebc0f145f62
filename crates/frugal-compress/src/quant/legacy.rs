//! Round-to-nearest quantization into ggml's legacy 32-element block formats, bit-identical to
//! llama.cpp's reference quantizers (`quantize_row_q{4_0,4_1,5_0,5_1,8_0}_ref` in
//! `ggml/src/ggml-quants.c`, which `llama-quantize` uses when no importance matrix is given):
//! the same scale choice, the same f32 operations in the same order, the same truncations, and
//! scales stored as IEEE f16 rounded to nearest even.
//!
//! Layouts (little-endian): Q8_0 `{d: f16, qs: [i8; 32]}`; Q4_0 `{d, qs: [u8; 16]}` (low nibbles
//! hold elements 0–15, high nibbles 16–31, stored as q + 8); Q4_1 `{d, m: f16, qs: [u8; 16]}`;
//! Q5_0 `{d, qh: u32, qs: [u8; 16]}` (bit j of qh is the fifth bit of element j); Q5_1
//! `{d, m, qh, qs}`.
//!
//! With an importance matrix the `*_weighted` functions follow ggml's `quantize_row_q*_impl`:
//! a weighted search for the scale (and offset), weights `qw · sqrt(σ²_row + x²)`.

use super::kquants::{f16_at, make_qkx_quants, make_qx_quants};

pub const QK: usize = 32;

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// The value with the largest magnitude (the first one on ties), keeping its sign.
pub(crate) fn signed_absmax(b: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in b {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(b: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in b {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// C's `(int8_t)(x)` for the values that arise here (0 ≤ x < 128): truncation toward zero.
/// (`as` truncates in one instruction; `f32::trunc` would be a libm call.)
fn trunc_i8(x: f32) -> i32 {
    x as i32
}

/// One block of 32 values into 34 bytes of Q8_0.
pub fn q8_0_block(b: &[f32], y: &mut [u8]) {
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    for (o, &v) in y[2..34].iter_mut().zip(b) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// One block into 18 bytes of Q4_0.
pub fn q4_0_block(b: &[f32], y: &mut [u8]) {
    let d = signed_absmax(b) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    for j in 0..QK / 2 {
        let x0 = trunc_i8(b[j] * id + 8.5).min(15) as u8;
        let x1 = trunc_i8(b[j + QK / 2] * id + 8.5).min(15) as u8;
        y[2 + j] = x0 | (x1 << 4);
    }
}

/// One block into 20 bytes of Q4_1.
pub fn q4_1_block(b: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(b);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(min));
    for j in 0..QK / 2 {
        let x0 = trunc_i8((b[j] - min) * id + 0.5).min(15) as u8;
        let x1 = trunc_i8((b[j + QK / 2] - min) * id + 0.5).min(15) as u8;
        y[4 + j] = x0 | (x1 << 4);
    }
}

/// Writes 32 five-bit levels as `qh: u32` (fifth bits) then 16 bytes of nibbles.
fn put_q5(y: &mut [u8], q: &[u8]) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from((v & 0x10) >> 4) << j;
    }
    y[..4].copy_from_slice(&qh.to_le_bytes());
    for j in 0..QK / 2 {
        y[4 + j] = (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4);
    }
}

fn get_q5(y: &[u8], q: &mut [u8]) {
    let qh = u32::from_le_bytes([y[0], y[1], y[2], y[3]]);
    for j in 0..QK / 2 {
        q[j] = (y[4 + j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (y[4 + j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
}

fn put_q4(y: &mut [u8], q: &[u8]) {
    for j in 0..QK / 2 {
        y[j] = q[j] | (q[j + QK / 2] << 4);
    }
}

fn get_q4(y: &[u8], q: &mut [u8]) {
    for j in 0..QK / 2 {
        q[j] = y[j] & 0xF;
        q[j + 16] = y[j] >> 4;
    }
}

/// One block into 22 bytes of Q5_0.
pub fn q5_0_block(b: &[f32], y: &mut [u8]) {
    let d = signed_absmax(b) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(b) {
        *qj = trunc_i8(v * id + 16.5).min(31) as u8;
    }
    put_q5(&mut y[2..], &q);
}

/// One block into 24 bytes of Q5_1.
pub fn q5_1_block(b: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(b);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(min));
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(b) {
        // C's `(uint8_t)(x0 + 0.5f)`: truncation of a value in [0.5, 31.5].
        *qj = ((v - min) * id + 0.5) as u8;
    }
    put_q5(&mut y[4..], &q);
}

/// The row statistic σ² = mean(x²) that ggml's weighted legacy quantizers use.
pub fn row_sigma2(row: &[f32]) -> f32 {
    row.iter().fold(0f32, |s, &v| s + v * v) / row.len() as f32
}

fn weights(b: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    std::array::from_fn(|j| qw[j] * (sigma2 + b[j] * b[j]).sqrt())
}

/// Q4_0 with importance weights `qw` (one per element) and the row's σ².
pub fn q4_0_weighted(b: &[f32], qw: &[f32], sigma2: f32, y: &mut [u8]) {
    let w = weights(b, qw, sigma2);
    let mut l = [0i8; QK];
    let d = make_qx_quants(b, 8, &mut l, 1, Some(&w));
    y[..2].copy_from_slice(&f16_bytes(d));
    put_q4(&mut y[2..], &l.map(|v| v as u8));
}

/// Q5_0 with importance weights.
pub fn q5_0_weighted(b: &[f32], qw: &[f32], sigma2: f32, y: &mut [u8]) {
    let w = weights(b, qw, sigma2);
    let mut l = [0i8; QK];
    let d = make_qx_quants(b, 16, &mut l, 1, Some(&w));
    y[..2].copy_from_slice(&f16_bytes(d));
    put_q5(&mut y[2..], &l.map(|v| v as u8));
}

/// Q4_1 with importance weights.
pub fn q4_1_weighted(b: &[f32], qw: &[f32], sigma2: f32, y: &mut [u8]) {
    let w = weights(b, qw, sigma2);
    let mut l = [0u8; QK];
    let (d, min) = make_qkx_quants(b, 15, &w, &mut l, -0.9, 0.05, 36, false);
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(-min));
    put_q4(&mut y[4..], &l);
}

/// Q5_1 with importance weights.
pub fn q5_1_weighted(b: &[f32], qw: &[f32], sigma2: f32, y: &mut [u8]) {
    let w = weights(b, qw, sigma2);
    let mut l = [0u8; QK];
    let (d, min) = make_qkx_quants(b, 31, &w, &mut l, -0.9, 0.05, 36, false);
    y[..2].copy_from_slice(&f16_bytes(d));
    y[2..4].copy_from_slice(&f16_bytes(-min));
    put_q5(&mut y[4..], &l);
}

/// Sub-block scales `(d, bias)` (value = d·(level − offset) + bias) and level access, for GPTQ.
pub(crate) mod access {
    use super::*;

    pub fn q8_0_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y, 0), 0.0);
    }
    pub fn q8_0_levels(y: &[u8], q: &mut [u8]) {
        for (l, &b) in q.iter_mut().zip(&y[2..34]) {
            *l = (b as i8 as i32 + 128) as u8;
        }
    }
    pub fn q8_0_set_levels(y: &mut [u8], q: &[u8]) {
        for (b, &l) in y[2..34].iter_mut().zip(q) {
            *b = (l as i32 - 128) as i8 as u8;
        }
    }
    pub fn q4_0_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y, 0), 0.0);
    }
    pub fn q4_0_levels(y: &[u8], q: &mut [u8]) {
        get_q4(&y[2..], q)
    }
    pub fn q4_0_set_levels(y: &mut [u8], q: &[u8]) {
        put_q4(&mut y[2..], q)
    }
    pub fn q4_1_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y, 0), f16_at(y, 2));
    }
    pub fn q4_1_levels(y: &[u8], q: &mut [u8]) {
        get_q4(&y[4..], q)
    }
    pub fn q4_1_set_levels(y: &mut [u8], q: &[u8]) {
        put_q4(&mut y[4..], q)
    }
    pub fn q5_0_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y, 0), 0.0);
    }
    pub fn q5_0_levels(y: &[u8], q: &mut [u8]) {
        get_q5(&y[2..], q)
    }
    pub fn q5_0_set_levels(y: &mut [u8], q: &[u8]) {
        put_q5(&mut y[2..], q)
    }
    pub fn q5_1_scales(y: &[u8], o: &mut [(f32, f32)]) {
        o[0] = (f16_at(y, 0), f16_at(y, 2));
    }
    pub fn q5_1_levels(y: &[u8], q: &mut [u8]) {
        get_q5(&y[4..], q)
    }
    pub fn q5_1_set_levels(y: &mut [u8], q: &[u8]) {
        put_q5(&mut y[4..], q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequant_q4_0(bytes: &[u8]) -> Vec<f32> {
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        let mut v = vec![0f32; 32];
        for j in 0..16 {
            v[j] = ((bytes[2 + j] & 0x0F) as f32 - 8.0) * d;
            v[j + 16] = ((bytes[2 + j] >> 4) as f32 - 8.0) * d;
        }
        v
    }

    #[test]
    fn block_sizes_match_the_type_table() {
        use frugal_formats::gguf::GgmlType;
        let b: Vec<f32> = (0..32).map(|i| (i as f32 * 0.7).sin()).collect();
        for (f, t) in [
            (q8_0_block as fn(&[f32], &mut [u8]), GgmlType::Q8_0),
            (q4_0_block, GgmlType::Q4_0),
            (q4_1_block, GgmlType::Q4_1),
            (q5_0_block, GgmlType::Q5_0),
            (q5_1_block, GgmlType::Q5_1),
        ] {
            // Every byte is written: a block quantized over a dirty buffer equals one over zeros.
            let n = t.bytes_for(32).unwrap() as usize;
            let (mut a, mut c) = (vec![0u8; n], vec![0xAAu8; n]);
            f(&b, &mut a);
            f(&b, &mut c);
            assert_eq!(a, c, "{t}");
        }
    }

    #[test]
    fn q4_0_error_is_within_half_a_step() {
        let b: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
        let mut out = vec![0u8; 18];
        q4_0_block(&b, &mut out);
        let d = (signed_absmax(&b) / -8.0).abs();
        // Q4_0's grid is −8d … 7d with the block's extreme at −8d: values on the far side beyond
        // 7|d| are clamped, elsewhere the error is at most half a step.
        for (x, y) in b.iter().zip(dequant_q4_0(&out)) {
            let bound = (0.5 * d).max(x.abs() - 7.0 * d);
            assert!((x - y).abs() <= bound * 1.01 + 1e-3, "{x} {y}");
        }
        // The extreme value maps exactly to −8·d.
        let mut z = vec![0u8; 18];
        q4_0_block(&[0.0; 32], &mut z);
        assert_eq!(&z[2..], &[0x88; 16], "zeros quantize to the midpoint 8");
    }
}
