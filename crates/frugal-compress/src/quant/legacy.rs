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

pub const QK: usize = 32;

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// The value with the largest magnitude (the first one on ties), keeping its sign.
fn signed_absmax(b: &[f32]) -> f32 {
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
pub fn q8_0_block(b: &[f32], out: &mut Vec<u8>) {
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bytes(d));
    out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
}

/// One block into 18 bytes of Q4_0.
pub fn q4_0_block(b: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(b) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bytes(d));
    for j in 0..QK / 2 {
        let x0 = trunc_i8(b[j] * id + 8.5).min(15) as u8;
        let x1 = trunc_i8(b[j + QK / 2] * id + 8.5).min(15) as u8;
        out.push(x0 | (x1 << 4));
    }
}

/// One block into 20 bytes of Q4_1.
pub fn q4_1_block(b: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(b);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bytes(d));
    out.extend_from_slice(&f16_bytes(min));
    for j in 0..QK / 2 {
        let x0 = trunc_i8((b[j] - min) * id + 0.5).min(15) as u8;
        let x1 = trunc_i8((b[j + QK / 2] - min) * id + 0.5).min(15) as u8;
        out.push(x0 | (x1 << 4));
    }
}

fn push_q5(out: &mut Vec<u8>, q: &[u8; QK]) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from((v & 0x10) >> 4) << j;
    }
    out.extend_from_slice(&qh.to_le_bytes());
    for j in 0..QK / 2 {
        out.push((q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4));
    }
}

/// One block into 22 bytes of Q5_0.
pub fn q5_0_block(b: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(b) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bytes(d));
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(b) {
        *qj = trunc_i8(v * id + 16.5).min(31) as u8;
    }
    push_q5(out, &q);
}

/// One block into 24 bytes of Q5_1.
pub fn q5_1_block(b: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(b);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16_bytes(d));
    out.extend_from_slice(&f16_bytes(min));
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(b) {
        // C's `(uint8_t)(x0 + 0.5f)`: truncation of a value in [0.5, 31.5].
        *qj = ((v - min) * id + 0.5) as u8;
    }
    push_q5(out, &q);
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
            (q8_0_block as fn(&[f32], &mut Vec<u8>), GgmlType::Q8_0),
            (q4_0_block, GgmlType::Q4_0),
            (q4_1_block, GgmlType::Q4_1),
            (q5_0_block, GgmlType::Q5_0),
            (q5_1_block, GgmlType::Q5_1),
        ] {
            let mut out = Vec::new();
            f(&b, &mut out);
            assert_eq!(out.len() as u64, t.bytes_for(32).unwrap(), "{t}");
        }
    }

    #[test]
    fn q4_0_error_is_within_half_a_step() {
        let b: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
        let mut out = Vec::new();
        q4_0_block(&b, &mut out);
        let d = (signed_absmax(&b) / -8.0).abs();
        // Q4_0's grid is −8d … 7d with the block's extreme at −8d: values on the far side beyond
        // 7|d| are clamped, elsewhere the error is at most half a step.
        for (x, y) in b.iter().zip(dequant_q4_0(&out)) {
            let bound = (0.5 * d).max(x.abs() - 7.0 * d);
            assert!((x - y).abs() <= bound * 1.01 + 1e-3, "{x} {y}");
        }
        // The extreme value maps exactly to −8·d.
        let mut z = Vec::new();
        q4_0_block(&[0.0; 32], &mut z);
        assert_eq!(&z[2..], &[0x88; 16], "zeros quantize to the midpoint 8");
    }
}
