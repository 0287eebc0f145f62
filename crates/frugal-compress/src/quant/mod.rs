//! Quantization of GGUF models. One table, [`QUANT_TYPES`], drives parsing, help and reports.
//! Today: round-to-nearest into the legacy block formats, bit-identical to `llama-quantize --pure`.

pub mod legacy;

use crate::{Error, Result};
use frugal_formats::gguf::{GgmlType, GgufFile};
use frugal_models::gguf_load::load_f32;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// One quantization target.
#[derive(Debug, Clone, Copy)]
pub struct QuantType {
    pub name: &'static str,
    pub ggml: GgmlType,
    /// llama.cpp's `general.file_type` (`llama_ftype`) for a file of this type.
    pub file_type: u32,
    /// Quantizes one row (a whole number of blocks) onto the end of the output.
    pub row: fn(&[f32], &mut Vec<u8>),
    pub summary: &'static str,
}

fn blocks(f: fn(&[f32], &mut Vec<u8>)) -> impl Fn(&[f32], &mut Vec<u8>) {
    move |row, out| row.chunks(legacy::QK).for_each(|b| f(b, out))
}

fn row_q8_0(r: &[f32], o: &mut Vec<u8>) {
    blocks(legacy::q8_0_block)(r, o)
}
fn row_q4_0(r: &[f32], o: &mut Vec<u8>) {
    blocks(legacy::q4_0_block)(r, o)
}
fn row_q4_1(r: &[f32], o: &mut Vec<u8>) {
    blocks(legacy::q4_1_block)(r, o)
}
fn row_q5_0(r: &[f32], o: &mut Vec<u8>) {
    blocks(legacy::q5_0_block)(r, o)
}
fn row_q5_1(r: &[f32], o: &mut Vec<u8>) {
    blocks(legacy::q5_1_block)(r, o)
}
fn row_f16(r: &[f32], o: &mut Vec<u8>) {
    o.extend(r.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()))
}
fn row_f32(r: &[f32], o: &mut Vec<u8>) {
    o.extend(r.iter().flat_map(|v| v.to_le_bytes()))
}

/// Every type `frugal quantize --type` accepts.
pub const QUANT_TYPES: &[QuantType] = &[
    QuantType {
        name: "F32",
        ggml: GgmlType::F32,
        file_type: 0,
        row: row_f32,
        summary: "32.00 bpw, no loss",
    },
    QuantType {
        name: "F16",
        ggml: GgmlType::F16,
        file_type: 1,
        row: row_f16,
        summary: "16.00 bpw, IEEE half",
    },
    QuantType {
        name: "Q8_0",
        ggml: GgmlType::Q8_0,
        file_type: 7,
        row: row_q8_0,
        summary: " 8.50 bpw, symmetric 8-bit blocks of 32",
    },
    QuantType {
        name: "Q5_1",
        ggml: GgmlType::Q5_1,
        file_type: 9,
        row: row_q5_1,
        summary: " 6.00 bpw, 5-bit blocks of 32 with offset",
    },
    QuantType {
        name: "Q5_0",
        ggml: GgmlType::Q5_0,
        file_type: 8,
        row: row_q5_0,
        summary: " 5.50 bpw, symmetric 5-bit blocks of 32",
    },
    QuantType {
        name: "Q4_1",
        ggml: GgmlType::Q4_1,
        file_type: 3,
        row: row_q4_1,
        summary: " 5.00 bpw, 4-bit blocks of 32 with offset",
    },
    QuantType {
        name: "Q4_0",
        ggml: GgmlType::Q4_0,
        file_type: 2,
        row: row_q4_0,
        summary: " 4.50 bpw, symmetric 4-bit blocks of 32",
    },
];

/// Looks a target up by name (case-insensitive).
pub fn quant_type(name: &str) -> Option<&'static QuantType> {
    QUANT_TYPES
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
}

/// The help text listing every target, from the table.
pub fn types_help() -> String {
    QUANT_TYPES
        .iter()
        .map(|t| format!("  {:<5} {}", t.name, t.summary))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What happened to one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub from: String,
    pub to: String,
    pub n_elements: u64,
    pub bytes: u64,
    /// ‖x − x̂‖ / ‖x‖ against the decoded input (0 for tensors kept as they were).
    pub rel_rmse: f64,
}

/// The result of [`quantize_gguf`].
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    pub input: String,
    pub output: String,
    pub target: &'static str,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub n_parameters: u64,
    pub bits_per_weight: f64,
    pub seconds: f64,
    pub tensors: Vec<TensorReport>,
}

/// Whether a tensor is a weight matrix that llama.cpp's quantizer would quantize.
fn is_quantizable(name: &str, dims: &[u64], block: u64) -> bool {
    name.ends_with("weight") && dims.len() >= 2 && dims[0] % block == 0
}

/// Quantizes every weight matrix of `input` to `target` (1-D tensors such as norms stay as they
/// are, as with `llama-quantize --pure`) and writes `output` atomically. Tensors are processed one
/// after another, rows in parallel.
pub fn quantize_gguf(
    input: &Path,
    output: &Path,
    target: &'static QuantType,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<QuantizeReport> {
    let t0 = std::time::Instant::now();
    let f = GgufFile::open(input)?;
    let dev = candle_core::Device::Cpu;
    let block = target.ggml.info().map_or(1, |i| i.block_size);
    let n = f.header.tensors.len();
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    for (i, t) in f.header.tensors.iter().enumerate() {
        if !is_quantizable(&t.name, &t.dims, block) {
            data.push(f.tensor_data(t).to_vec());
            types.push(t.ggml_type);
            reports.push(TensorReport {
                name: t.name.clone(),
                from: t.ggml_type.name(),
                to: t.ggml_type.name(),
                n_elements: t.n_elements(),
                bytes: t.n_bytes,
                rel_rmse: 0.0,
            });
            progress(i + 1, n);
            continue;
        }
        let x: Vec<f32> = if t.ggml_type == GgmlType::F32 {
            // Straight from the mapped file: one copy instead of two through a tensor.
            f.tensor_data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            load_f32(&f, &t.name, &dev)?
                .flatten_all()
                .map_err(Error::from)?
                .to_vec1()
                .map_err(Error::from)?
        };
        let ne0 = t.dims[0] as usize;
        let row_bytes = target
            .ggml
            .bytes_for(ne0 as u64)
            .expect("row is whole blocks") as usize;
        let mut bytes = vec![0u8; row_bytes * (x.len() / ne0.max(1))];
        bytes
            .par_chunks_mut(row_bytes)
            .zip(x.par_chunks(ne0))
            .for_each_init(
                || Vec::with_capacity(row_bytes),
                |buf, (out, r)| {
                    buf.clear();
                    (target.row)(r, buf);
                    out.copy_from_slice(buf);
                },
            );
        let rel_rmse = relative_rmse(&x, &bytes, target.ggml, &t.dims)?;
        reports.push(TensorReport {
            name: t.name.clone(),
            from: t.ggml_type.name(),
            to: target.name.to_string(),
            n_elements: t.n_elements(),
            bytes: bytes.len() as u64,
            rel_rmse,
        });
        data.push(bytes);
        types.push(target.ggml);
        progress(i + 1, n);
    }
    let mut metadata = f.header.metadata.clone();
    frugal_models::convert::set_file_type(&mut metadata, target.file_type);
    let written = frugal_models::convert::write_model(
        output,
        input,
        &metadata,
        &f.header.tensors,
        &types,
        &data,
    )?;
    let n_parameters: u64 = reports.iter().map(|r| r.n_elements).sum();
    let tensor_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    Ok(QuantizeReport {
        input: input.display().to_string(),
        output: output.display().to_string(),
        target: target.name,
        input_bytes: f.file_len(),
        output_bytes: written,
        n_parameters,
        bits_per_weight: tensor_bytes as f64 * 8.0 / n_parameters.max(1) as f64,
        seconds: t0.elapsed().as_secs_f64(),
        tensors: reports,
    })
}

/// ‖x − decode(q)‖ / ‖x‖, decoding with candle (an implementation independent of ours).
fn relative_rmse(x: &[f32], q: &[u8], ty: GgmlType, dims: &[u64]) -> Result<f64> {
    let shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
    let dtype =
        frugal_models::gguf_load::candle_dtype(ty).ok_or_else(|| Error::Unsupported(ty.name()))?;
    let dev = candle_core::Device::Cpu;
    let back: Vec<f32> =
        candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, q, shape, &dev)?
            .dequantize(&dev)?
            .flatten_all()?
            .to_vec1()?;
    let (num, den) = x.iter().zip(&back).fold((0f64, 0f64), |(n, d), (&a, &b)| {
        (n + f64::from(a - b).powi(2), d + f64::from(a).powi(2))
    });
    Ok(if den > 0.0 { (num / den).sqrt() } else { 0.0 })
}
