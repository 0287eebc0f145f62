//! Integer weights for safetensors models (format: `frugal_models::int_weights`): int8 per
//! output channel (symmetric) and int4 in groups of 32/64/128 input columns (asymmetric, with
//! the scale and offset of each group searched for the least squared error, the search ggml's
//! k-quants use). Linear-layer weights are quantized; embeddings, norms and biases stay F32,
//! as PyTorch's dynamic quantization does.

use super::kquants::{make_qkx_quants, nearest_int};
use crate::{Error, Result};
use frugal_formats::output::AtomicDir;
use frugal_formats::safetensors::{
    write_safetensors_file, Dtype, SafetensorsFile, StTensorToWrite,
};
use frugal_models::int_weights::{min_name, packed_name, scale_name, META_KEY};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One integer scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntType {
    pub name: &'static str,
    pub bits: u8,
    /// Input columns per scale (None: one scale per output channel).
    pub group: Option<usize>,
    pub summary: &'static str,
}

/// Every scheme `frugal quantize --type` accepts for safetensors models.
pub const INT_TYPES: &[IntType] = &[
    IntType {
        name: "int8",
        bits: 8,
        group: None,
        summary: "int8 per output channel, symmetric (safetensors)",
    },
    IntType {
        name: "int4-g32",
        bits: 4,
        group: Some(32),
        summary: "int4 in groups of 32 columns, scale and offset (safetensors)",
    },
    IntType {
        name: "int4-g64",
        bits: 4,
        group: Some(64),
        summary: "int4 in groups of 64 columns, scale and offset (safetensors)",
    },
    IntType {
        name: "int4-g128",
        bits: 4,
        group: Some(128),
        summary: "int4 in groups of 128 columns, scale and offset (safetensors)",
    },
];

pub fn int_type(name: &str) -> Option<&'static IntType> {
    INT_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(name))
}

/// Whether a tensor is a linear-layer weight to quantize.
pub fn is_linear_weight(name: &str, shape: &[u64]) -> bool {
    shape.len() == 2
        && name.ends_with(".weight")
        && !name.contains("embeddings")
        && !name.contains("LayerNorm")
        && !name.contains("norm")
}

/// int8 per row: (q, scale per row).
pub fn int8_rows(w: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>) {
    let rows = w.len() / cols;
    let mut q = vec![0u8; w.len()];
    let mut s = vec![0f32; rows];
    q.par_chunks_mut(cols)
        .zip(s.par_iter_mut())
        .zip(w.par_chunks(cols))
        .for_each(|((qr, sr), wr)| {
            let amax = wr.iter().fold(0f32, |m, v| m.max(v.abs()));
            *sr = amax / 127.0;
            let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            for (o, &v) in qr.iter_mut().zip(wr) {
                *o = nearest_int(v * id).clamp(-127, 127) as i8 as u8;
            }
        });
    (q, s)
}

/// int4 in groups of `g` columns: (packed nibbles, scale, min) with W ≈ scale·q + min.
pub fn int4_groups(w: &[f32], cols: usize, g: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let rows = w.len() / cols;
    let groups = cols / g;
    let mut packed = vec![0u8; w.len() / 2];
    let mut scale = vec![0f32; rows * groups];
    let mut min = vec![0f32; rows * groups];
    packed
        .par_chunks_mut(cols / 2)
        .zip(scale.par_chunks_mut(groups))
        .zip(min.par_chunks_mut(groups))
        .zip(w.par_chunks(cols))
        .for_each(|(((pr, sr), mr), wr)| {
            let mut l = vec![0u8; g];
            let mut levels = vec![0u8; cols];
            let ones = vec![1f32; g];
            for (k, x) in wr.chunks_exact(g).enumerate() {
                // The k-quant search allows only offsets ≤ 0; shift the group so it can use it.
                let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
                let shifted: Vec<f32> = x.iter().map(|&v| v - lo).collect();
                let (d, neg_min) = make_qkx_quants_any(&shifted, 15, &ones, &mut l, -1.0, 0.1, 20);
                sr[k] = d;
                mr[k] = lo - neg_min;
                for (j, &v) in x.iter().enumerate() {
                    let q = if d > 0.0 {
                        nearest_int((v - mr[k]) / d).clamp(0, 15)
                    } else {
                        0
                    };
                    levels[k * g + j] = q as u8;
                }
            }
            for (b, pair) in pr.iter_mut().zip(levels.chunks_exact(2)) {
                *b = pair[0] | (pair[1] << 4);
            }
        });
    (packed, scale, min)
}

/// [`make_qkx_quants`] for groups longer than its 32-element scratch: split the search over
/// the same trial scales, done here on any length.
fn make_qkx_quants_any(
    x: &[f32],
    nmax: i32,
    w: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    if x.len() <= 32 {
        return make_qkx_quants(x, nmax, w, l, rmin, rdelta, nstep, false);
    }
    // Same algorithm without the fixed scratch: trial scales over [min, max], weighted least
    // squares for scale and offset on each trial's levels, keep the best.
    let (mut min, max) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l.iter_mut().for_each(|v| *v = 0);
        return (0.0, -min);
    }
    let err = |s: f32, m: f32, lv: &dyn Fn(usize) -> f32| -> f32 {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let d = s * lv(i) + m - v;
                w[i] * d * d
            })
            .sum()
    };
    let levels = |iscale: f32, m: f32| -> Vec<u8> {
        x.iter()
            .map(|&v| nearest_int(iscale * (v - m)).clamp(0, nmax) as u8)
            .collect()
    };
    let mut best_l = levels(nmax as f32 / (max - min), min);
    let mut scale = (max - min) / nmax as f32;
    let mut best = err(scale, min, &|i| best_l[i] as f32);
    let (sum_w, sum_x) = x
        .iter()
        .zip(w)
        .fold((0f32, 0f32), |(a, b), (&v, &wi)| (a + wi, b + wi * v));
    for is in 0..=nstep {
        let iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let aux = levels(iscale, min);
        let (mut sl, mut sl2, mut sxl) = (0f32, 0f32, 0f32);
        for i in 0..x.len() {
            let li = aux[i] as f32;
            sl += w[i] * li;
            sl2 += w[i] * li * li;
            sxl += w[i] * li * x[i];
        }
        let dd = sum_w * sl2 - sl * sl;
        if dd > 0.0 {
            let mut s = (sum_w * sxl - sum_x * sl) / dd;
            let mut m = (sl2 * sum_x - sl * sxl) / dd;
            if m > 0.0 {
                m = 0.0;
                s = sxl / sl2;
            }
            let e = err(s, m, &|i| aux[i] as f32);
            if e < best {
                best = e;
                scale = s;
                min = m;
                best_l = aux;
            }
        }
    }
    l.copy_from_slice(&best_l);
    (scale, -min)
}

/// What [`quantize_safetensors_dir`] did.
#[derive(Debug, Clone, Serialize)]
pub struct IntReport {
    pub input: String,
    pub output: String,
    pub scheme: &'static str,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub n_quantized: usize,
    pub quantized_parameters: u64,
    pub seconds: f64,
    /// Worst relative RMS error over the quantized weights, and its tensor.
    pub worst_rel_rmse: (f64, String),
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Quantizes the linear weights of a sentence-transformers folder (`model.safetensors` plus
/// its configuration and tokenizer files, copied as they are) into a new folder, atomically.
pub fn quantize_safetensors_dir(
    input: &Path,
    output: &Path,
    scheme: &'static IntType,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<IntReport> {
    let t0 = std::time::Instant::now();
    let model = input.join("model.safetensors");
    let f = SafetensorsFile::open(&model)?;
    let out = AtomicDir::create(output)?;
    // Every other file of the folder (configuration, tokenizer) as it is.
    let entries = std::fs::read_dir(input)
        .map_err(|e| frugal_formats::Error::io(input, "reading folder", e))?;
    for e in entries {
        let e = e.map_err(|e| frugal_formats::Error::io(input, "reading folder", e))?;
        let name = e.file_name();
        if name != "model.safetensors" && e.path().is_file() {
            std::fs::copy(e.path(), out.tmp_path().join(&name))
                .map_err(|err| frugal_formats::Error::io(&e.path(), "copying", err))?;
        }
    }
    let mut owned: Vec<(String, Dtype, Vec<u64>, Vec<u8>)> = Vec::new();
    let mut n_quantized = 0;
    let mut qparams = 0u64;
    let mut worst = (0f64, String::new());
    let n = f.header.tensors.len();
    for (i, t) in f.header.tensors.iter().enumerate() {
        let data = f.tensor_data(t);
        if !(t.dtype == Dtype::F32 && is_linear_weight(&t.name, &t.shape)) {
            owned.push((t.name.clone(), t.dtype, t.shape.clone(), data.to_vec()));
            progress(i + 1, n);
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1] as usize);
        let w = f32s(data);
        let back: Vec<f32> = match scheme.group {
            None => {
                let (q, s) = int8_rows(&w, cols);
                let back = q
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| s[k / cols] * v as i8 as f32)
                    .collect();
                owned.push((t.name.clone(), Dtype::I8, t.shape.clone(), q));
                owned.push((scale_name(&t.name), Dtype::F32, vec![rows], bytes_of(&s)));
                back
            }
            Some(g) => {
                if cols % g != 0 {
                    return Err(Error::BadOptions(format!(
                        "{}: {cols} columns are not a multiple of the group size {g}",
                        t.name
                    )));
                }
                let (p, s, m) = int4_groups(&w, cols, g);
                let groups = (cols / g) as u64;
                let back = (0..w.len())
                    .map(|k| {
                        let q = (p[k / 2] >> (4 * (k % 2))) & 0xF;
                        let gi = (k / cols) * (cols / g) + (k % cols) / g;
                        s[gi] * q as f32 + m[gi]
                    })
                    .collect();
                owned.push((
                    packed_name(&t.name),
                    Dtype::U8,
                    vec![rows, cols as u64 / 2],
                    p,
                ));
                owned.push((
                    scale_name(&t.name),
                    Dtype::F32,
                    vec![rows, groups],
                    bytes_of(&s),
                ));
                owned.push((
                    min_name(&t.name),
                    Dtype::F32,
                    vec![rows, groups],
                    bytes_of(&m),
                ));
                back
            }
        };
        let (num, den) = w.iter().zip(&back).fold((0f64, 0f64), |(a, b), (&x, &y)| {
            (a + f64::from(x - y).powi(2), b + f64::from(x).powi(2))
        });
        let rel = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
        if rel > worst.0 {
            worst = (rel, t.name.clone());
        }
        n_quantized += 1;
        qparams += t.n_elements();
        progress(i + 1, n);
    }
    let mut meta: BTreeMap<String, String> = f.header.metadata.clone();
    meta.insert(
        META_KEY.into(),
        serde_json::json!({
            "format": "frugal-int", "version": 1, "scheme": scheme.name,
            "bits": scheme.bits, "group_size": scheme.group,
        })
        .to_string(),
    );
    let tensors: Vec<StTensorToWrite> = owned
        .iter()
        .map(|(name, dtype, shape, data)| StTensorToWrite {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    let out_model = out.tmp_path().join("model.safetensors");
    let written = write_safetensors_file(&out_model, &[&model], &meta, &tensors)?;
    out.commit()?;
    Ok(IntReport {
        input: input.display().to_string(),
        output: output.display().to_string(),
        scheme: scheme.name,
        input_bytes: f.file_len(),
        output_bytes: written,
        n_quantized,
        quantized_parameters: qparams,
        seconds: t0.elapsed().as_secs_f64(),
        worst_rel_rmse: worst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_groups_fit_each_group_and_pack_low_nibble_first() {
        let cols = 64;
        let w: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01 + 0.3)
            .collect();
        for g in [32, 64] {
            let (p, s, m) = int4_groups(&w, cols, g);
            assert_eq!(p.len(), w.len() / 2);
            let mut worst = 0f32;
            for k in 0..w.len() {
                let q = (p[k / 2] >> (4 * (k % 2))) & 0xF;
                let gi = (k / cols) * (cols / g) + (k % cols) / g;
                let y = s[gi] * q as f32 + m[gi];
                worst = worst.max((y - w[k]).abs());
            }
            // Range 1.0 over 15 steps: within one step even with the searched clipping.
            assert!(worst < 1.0 / 15.0, "g={g}: worst error {worst}");
        }
        let (q, s) = int8_rows(&w, cols);
        for k in 0..w.len() {
            assert!((s[k / cols] * q[k] as i8 as f32 - w[k]).abs() <= 0.5 * s[k / cols] + 1e-6);
        }
    }
}
