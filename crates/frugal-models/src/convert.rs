//! Decoding a whole GGUF model to F32: the reference that compressed models are judged against
//! ("SmolLM2 dequantized to F32"). The decoded model is held in memory before it is written (540 MB
//! for SmolLM2); streaming tensor by tensor into the writer is left for the quantizer work.

use crate::error::Result;
use crate::gguf_load::load_f32;
use candle_core::Device;
use frugal_formats::gguf::{write_gguf_file, GgmlType, GgufFile, TensorToWrite, Value};
use std::path::Path;

/// llama.cpp's `general.file_type` for "all F32".
pub const FILE_TYPE_ALL_F32: u32 = 0;

/// Writes `out`: `input` with every tensor decoded to F32 and `general.file_type` set to F32.
/// Returns the bytes written.
pub fn dequantize_gguf(input: &Path, out: &Path) -> Result<u64> {
    let f = GgufFile::open(input)?;
    let dev = Device::Cpu;
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(f.header.tensors.len());
    for t in &f.header.tensors {
        if t.ggml_type == GgmlType::F32 {
            data.push(f.tensor_data(t).to_vec());
            continue;
        }
        let v: Vec<f32> = load_f32(&f, &t.name, &dev)?.flatten_all()?.to_vec1()?;
        data.push(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    let tensors: Vec<TensorToWrite> = f
        .header
        .tensors
        .iter()
        .zip(&data)
        .map(|(t, d)| TensorToWrite {
            name: &t.name,
            ggml_type: GgmlType::F32,
            dims: &t.dims,
            data: d,
        })
        .collect();
    let mut metadata = f.header.metadata.clone();
    match metadata.iter_mut().find(|(k, _)| k == "general.file_type") {
        Some((_, v)) => *v = Value::U32(FILE_TYPE_ALL_F32),
        None => metadata.push(("general.file_type".into(), Value::U32(FILE_TYPE_ALL_F32))),
    }
    Ok(write_gguf_file(out, &[input], &metadata, &tensors)?)
}
