//! Decoding a whole GGUF model to F32: the reference that compressed models are judged against
//! ("SmolLM2 dequantized to F32"). The decoded model is held in memory before it is written (540 MB
//! for SmolLM2); streaming tensor by tensor into the writer is left for the quantizer work.
//! Also [`write_f32_safetensors`], named f32 tensors to a safetensors file (CNN models,
//! training checkpoints).

use crate::error::Result;
use crate::gguf_load::load_f32;
use candle_core::Device;
use frugal_formats::gguf::{write_gguf_file, GgmlType, GgufFile, TensorInfo, TensorToWrite, Value};
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
    let mut metadata = f.header.metadata.clone();
    set_file_type(&mut metadata, FILE_TYPE_ALL_F32);
    let types = vec![GgmlType::F32; data.len()];
    write_model(out, input, &metadata, &f.header.tensors, &types, &data)
}

/// Writes a model derived from `input` (tensor `i` described by `infos[i]`, stored as `types[i]`
/// with bytes `data[i]`) atomically to `out`, in llama.cpp's tensor order.
pub fn write_model(
    out: &Path,
    input: &Path,
    metadata: &[(String, Value)],
    infos: &[TensorInfo],
    types: &[GgmlType],
    data: &[Vec<u8>],
) -> Result<u64> {
    let tensors: Vec<TensorToWrite> = llama_tensor_order(infos.iter().map(|t| t.name.as_str()))
        .into_iter()
        .map(|i| TensorToWrite {
            name: &infos[i].name,
            ggml_type: types[i],
            dims: &infos[i].dims,
            data: &data[i],
        })
        .collect();
    Ok(write_gguf_file(out, &[input], metadata, &tensors)?)
}

/// Sets `general.quantization_version` (2) and `general.file_type` the way `llama-quantize` does:
/// each key is removed and appended at the end, in that order, so Frugal's files have the same
/// metadata layout as llama.cpp's (and, for identical tensors, the same bytes).
pub fn set_file_type(metadata: &mut Vec<(String, Value)>, file_type: u32) {
    metadata.retain(|(k, _)| k != "general.quantization_version" && k != "general.file_type");
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    metadata.push(("general.file_type".into(), Value::U32(file_type)));
}

/// The order in which llama.cpp writes tensors (its loader's `weight_name_comparer`): tensors
/// outside blocks first, then block by block (`blk.N.`, numerically), by name within each.
/// Writing in this order makes Frugal's files byte-comparable with `llama-quantize`'s.
pub fn llama_tensor_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let key = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, _)| l.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let names: Vec<&str> = names.into_iter().collect();
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        key(names[a])
            .cmp(&key(names[b]))
            .then_with(|| names[a].cmp(names[b]))
    });
    idx
}

/// Writes named f32 tensors (any shape) as a safetensors file, atomically, with `metadata`.
/// Returns the bytes written.
pub fn write_f32_safetensors(
    path: &Path,
    inputs: &[&Path],
    metadata: &std::collections::BTreeMap<String, String>,
    tensors: &[(String, candle_core::Tensor)],
) -> Result<u64> {
    write_f32_safetensors_sparse(path, inputs, metadata, tensors, &|_, _| None)
}

/// [`write_f32_safetensors`], storing each tensor for which `layout(name, shape)` names a sparse
/// layout as values + index ([`crate::int_weights`]) when that is smaller than dense F32, and
/// listing those under `frugal.sparse` in the metadata. Fails (writing nothing) if a tensor
/// does not fit its layout (an N:M group with too many non-zero values).
pub fn write_f32_safetensors_sparse(
    path: &Path,
    inputs: &[&Path],
    metadata: &std::collections::BTreeMap<String, String>,
    tensors: &[(String, candle_core::Tensor)],
    layout: &dyn Fn(&str, &[usize]) -> Option<frugal_formats::sparse::Layout>,
) -> Result<u64> {
    use crate::int_weights::{index_name, values_name, SparseEntry, SparseMeta, SPARSE_KEY};
    use frugal_formats::safetensors::{write_safetensors_file, Dtype, StTensorToWrite};
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut owned: Vec<(String, Dtype, Vec<u64>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    let mut sparse = SparseMeta {
        version: 1,
        ..Default::default()
    };
    for (name, t) in tensors {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        if let Some(l) = layout(name, t.dims()) {
            let e = frugal_formats::sparse::encode(&v, l).map_err(|reason| {
                crate::Error::BadMetadata {
                    path: path.to_path_buf(),
                    key: name.clone(),
                    reason: format!("cannot store as {l}: {reason}"),
                }
            })?;
            if e.bytes() < v.len() * 4 {
                let k = e.values.len() as u64;
                let n = e.index.len() as u64;
                owned.push((values_name(name), Dtype::F32, vec![k], bytes(&e.values)));
                owned.push((index_name(name), Dtype::U8, vec![n], e.index));
                sparse.tensors.insert(
                    name.clone(),
                    SparseEntry {
                        shape,
                        layout: l.to_string(),
                    },
                );
                continue;
            }
        }
        owned.push((name.clone(), Dtype::F32, shape, bytes(&v)));
    }
    let mut metadata = metadata.clone();
    if !sparse.tensors.is_empty() {
        metadata.insert(
            SPARSE_KEY.to_string(),
            serde_json::to_string(&sparse).expect("sparse metadata serializes"),
        );
    }
    let views: Vec<StTensorToWrite> = owned
        .iter()
        .map(|(name, dtype, shape, data)| StTensorToWrite {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    Ok(write_safetensors_file(path, inputs, &metadata, &views)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn llama_order_puts_global_tensors_first_and_layers_numerically() {
        let names = [
            "blk.10.a",
            "token_embd.weight",
            "blk.2.b",
            "blk.2.a",
            "output_norm.weight",
            "blk.1.z",
        ];
        let order: Vec<&str> = super::llama_tensor_order(names)
            .into_iter()
            .map(|i| names[i])
            .collect();
        assert_eq!(
            order,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.1.z",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }
}
