//! Writing a GGUF model again with some of its tensors replaced by F32 data (pruned, shrunk or
//! trained weights), everything else copied as it is, in the input's order, atomically.

use crate::Result;
use frugal_formats::gguf::{GgmlType, GgufFile, GgufStreamWriter, TensorSpec, Value};
use std::collections::HashMap;
use std::path::Path;

/// A replacement tensor: its GGUF dims (innermost first) and its values.
pub struct Replacement {
    pub dims: Vec<u64>,
    pub data: Vec<f32>,
}

impl Replacement {
    /// Values for a tensor that keeps the shape it has in `f`.
    pub fn same_shape(f: &GgufFile, name: &str, data: Vec<f32>) -> Replacement {
        let dims = f.tensor(name).map_or_else(Vec::new, |t| t.dims.clone());
        Replacement { dims, data }
    }
}

/// Writes `f` to `output` with `metadata` and the tensors in `replaced` as F32. `inputs` are the
/// files the output must not overwrite. Returns the bytes written.
pub fn write_gguf_with_f32(
    f: &GgufFile,
    output: &Path,
    inputs: &[&Path],
    metadata: &[(String, Value)],
    replaced: &HashMap<String, Replacement>,
) -> Result<u64> {
    write_gguf_edited(f, output, inputs, metadata, replaced, &|n| {
        Some(n.to_string())
    })
}

/// [`write_gguf_with_f32`] that also renames or drops tensors: `rename(name)` gives a tensor's
/// name in the output, or `None` to leave it out (`replaced` is keyed by input names).
pub fn write_gguf_edited(
    f: &GgufFile,
    output: &Path,
    inputs: &[&Path],
    metadata: &[(String, Value)],
    replaced: &HashMap<String, Replacement>,
    rename: &dyn Fn(&str) -> Option<String>,
) -> Result<u64> {
    let kept: Vec<(&frugal_formats::gguf::TensorInfo, String)> = f
        .header
        .tensors
        .iter()
        .filter_map(|t| rename(&t.name).map(|n| (t, n)))
        .collect();
    let specs: Vec<TensorSpec> = kept
        .iter()
        .map(|(t, name)| match replaced.get(&t.name) {
            Some(r) => TensorSpec {
                name,
                ggml_type: GgmlType::F32,
                dims: &r.dims,
            },
            None => TensorSpec {
                name,
                ggml_type: t.ggml_type,
                dims: &t.dims,
            },
        })
        .collect();
    let mut w = GgufStreamWriter::create(output, inputs, metadata, &specs)
        .map_err(frugal_models::Error::from)?;
    for (t, _) in &kept {
        match replaced.get(&t.name) {
            Some(r) => w.write_tensor(&f32_bytes(&r.data)),
            None => w.write_tensor(&f.tensor_data(t)),
        }
        .map_err(frugal_models::Error::from)?;
    }
    Ok(w.finish().map_err(frugal_models::Error::from)?)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
