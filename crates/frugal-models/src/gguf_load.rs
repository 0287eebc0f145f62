//! Loading GGUF tensors into candle: as f32 (dequantized) or as candle quantized tensors.
//! GGUF dims are ggml order (row length first); candle's are row-major, so they are reversed.

use crate::error::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use frugal_formats::gguf::{GgmlType, GgufFile, TensorInfo};

/// candle's name for a ggml type, where candle can decode it.
pub fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        _ => return None,
    })
}

fn info<'a>(f: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    f.tensor(name).ok_or_else(|| Error::MissingTensor {
        path: f.path().to_path_buf(),
        name: name.to_string(),
    })
}

/// Row-major dims of a GGUF tensor.
pub fn shape_of(t: &TensorInfo) -> Vec<usize> {
    t.dims.iter().rev().map(|&d| d as usize).collect()
}

/// A GGUF tensor as a candle quantized tensor (no decoding).
pub fn load_qtensor(f: &GgufFile, name: &str, device: &Device) -> Result<QTensor> {
    let t = info(f, name)?;
    let dtype = candle_dtype(t.ggml_type).ok_or_else(|| Error::UnsupportedType {
        path: f.path().to_path_buf(),
        name: name.to_string(),
        dtype: t.ggml_type.name(),
    })?;
    Ok(qtensor_from_ggml(
        dtype,
        &f.tensor_data(t),
        shape_of(t),
        device,
    )?)
}

/// A GGUF tensor decoded to f32. F32 tensors are copied straight from the mapped file. The
/// file's pages are released afterwards: the copy is what is used from then on.
pub fn load_f32(f: &GgufFile, name: &str, device: &Device) -> Result<Tensor> {
    let t = info(f, name)?;
    let out = if t.ggml_type == GgmlType::F32 {
        Tensor::from_raw_buffer(
            &f.tensor_data(t),
            candle_core::DType::F32,
            &shape_of(t),
            device,
        )?
    } else if crate::iq::decodes(t.ggml_type) {
        let n: usize = t.dims.iter().map(|&d| d as usize).product();
        let mut v = vec![0f32; n];
        crate::iq::decode_row(t.ggml_type, &f.tensor_data(t), &mut v).ok_or_else(|| {
            Error::BadShape {
                path: f.path().to_path_buf(),
                name: name.to_string(),
                found: shape_of(t),
                expected: vec![n],
            }
        })?;
        Tensor::from_vec(v, shape_of(t), device)?
    } else {
        load_qtensor(f, name, device)?.dequantize(device)?
    };
    f.release(t);
    Ok(out)
}

/// Like [`load_f32`], checking the row-major shape.
pub fn load_f32_shaped(
    f: &GgufFile,
    name: &str,
    expected: &[usize],
    device: &Device,
) -> Result<Tensor> {
    info_shaped(f, name, expected)?;
    load_f32(f, name, device)
}

/// The tensor `name`, checked to have the row-major shape `expected`.
pub fn info_shaped<'a>(f: &'a GgufFile, name: &str, expected: &[usize]) -> Result<&'a TensorInfo> {
    let t = info(f, name)?;
    let found = shape_of(t);
    if found != expected {
        return Err(Error::BadShape {
            path: f.path().to_path_buf(),
            name: name.to_string(),
            found,
            expected: expected.to_vec(),
        });
    }
    Ok(t)
}
