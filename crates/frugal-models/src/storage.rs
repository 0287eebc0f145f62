//! What each weight of a model file costs in storage: bits per weight of every logical tensor,
//! the report's "bits per tensor" chart. A GGUF tensor is one entry (its block type's bytes over
//! its elements); in Frugal's safetensors ([`crate::int_weights`]) an int8 weight's scales, an
//! int4 weight's packed nibbles, scales and minima, and a sparse weight's values and index are
//! counted together under the weight's own name, over its dense element count.

use crate::error::Result;
use crate::int_weights::{index_name, min_name, packed_name, scale_name, sparse_meta, values_name};
use frugal_formats::inspect::{inspect, ModelFormat};
use frugal_formats::safetensors::SafetensorsFile;
use std::collections::HashMap;
use std::path::Path;

/// One logical tensor's storage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TensorStorage {
    pub name: String,
    /// Elements of the dense tensor.
    pub elements: u64,
    /// Bytes of everything stored for it.
    pub bytes: u64,
}

impl TensorStorage {
    pub fn bits_per_weight(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.elements as f64
        }
    }
}

/// Every logical tensor of the model file at `path`, in file order.
pub fn tensor_storage(path: &Path) -> Result<Vec<TensorStorage>> {
    let s = inspect(path)?;
    let plain = |t: &frugal_formats::inspect::TensorSummary| TensorStorage {
        name: t.name.clone(),
        elements: t.n_elements,
        bytes: t.n_bytes,
    };
    if s.format == ModelFormat::Gguf {
        return Ok(s.tensors.iter().map(plain).collect());
    }
    let f = SafetensorsFile::open(path)?;
    let sparse = sparse_meta(&f)?;
    let names: std::collections::HashSet<&str> =
        s.tensors.iter().map(|t| t.name.as_str()).collect();
    // The weight a stored tensor belongs to, and the dense elements it stands for (counted
    // on one part only).
    let owner = |name: &str, elements: u64| -> Result<(String, u64)> {
        for (suffix, part) in [("_values", 0), ("_index", 1)] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(e) = sparse.tensors.get(base) {
                    let dense = e
                        .shape
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d))
                        .ok_or_else(|| crate::Error::BadMetadata {
                            path: path.to_path_buf(),
                            key: base.to_string(),
                            reason: format!("sparse shape {:?} overflows", e.shape),
                        })?;
                    debug_assert!(name == values_name(base) || name == index_name(base));
                    return Ok((base.to_string(), if part == 0 { dense } else { 0 }));
                }
            }
        }
        if let Some(base) = name.strip_suffix("_packed") {
            debug_assert_eq!(name, packed_name(base));
            return Ok((base.to_string(), elements.saturating_mul(2)));
        }
        for suffix in ["_scale", "_min"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if names.contains(base) || names.contains(packed_name(base).as_str()) {
                    debug_assert!(name == scale_name(base) || name == min_name(base));
                    return Ok((base.to_string(), 0));
                }
            }
        }
        Ok((name.to_string(), elements))
    };
    let mut out: Vec<TensorStorage> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for t in &s.tensors {
        let (name, elements) = owner(&t.name, t.n_elements)?;
        let k = *at.entry(name.clone()).or_insert_with(|| {
            out.push(TensorStorage {
                name,
                elements: 0,
                bytes: 0,
            });
            out.len() - 1
        });
        out[k].elements = out[k].elements.saturating_add(elements);
        out[k].bytes = out[k].bytes.saturating_add(t.n_bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_formats::safetensors::{write_safetensors_file, Dtype, StTensorToWrite};

    /// An int8 weight with its scales, an int4 one (nibbles, scales, minima), a sparse one
    /// (values and bitmask) and a plain bias, each counted once under its own name.
    #[test]
    fn parts_of_a_weight_are_counted_together() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let z = |n: usize| vec![0u8; n];
        let (i8w, i8s, packed, s4, m4, vals, mask, bias) =
            (z(32), z(16), z(16), z(16), z(16), z(64), z(4), z(16));
        let t = |name, dtype, shape: &'static [u64], data: &'static [u8]| StTensorToWrite {
            name,
            dtype,
            shape,
            data,
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let tensors = [
            t("a.weight", Dtype::I8, &[4, 8], leak(i8w)),
            t("a.weight_scale", Dtype::F32, &[4], leak(i8s)),
            t("b.weight_packed", Dtype::U8, &[4, 4], leak(packed)),
            t("b.weight_scale", Dtype::F32, &[4, 1], leak(s4)),
            t("b.weight_min", Dtype::F32, &[4, 1], leak(m4)),
            t("c.weight_values", Dtype::F32, &[16], leak(vals)),
            t("c.weight_index", Dtype::U8, &[4], leak(mask)),
            t("c.bias", Dtype::F32, &[4], leak(bias)),
        ];
        let mut md = std::collections::BTreeMap::new();
        md.insert(
            crate::int_weights::SPARSE_KEY.to_string(),
            r#"{"version":1,"tensors":{"c.weight":{"shape":[4,8],"layout":"bitmask"}}}"#
                .to_string(),
        );
        write_safetensors_file(&p, &[], &md, &tensors).unwrap();
        let mut got = tensor_storage(&p).unwrap();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        let want = |name: &str, elements, bytes| TensorStorage {
            name: name.into(),
            elements,
            bytes,
        };
        assert_eq!(
            got,
            vec![
                want("a.weight", 32, 48),
                want("b.weight", 32, 48),
                want("c.bias", 4, 16),
                want("c.weight", 32, 68),
            ]
        );
        // int8 with f32 row scales: 8 + 32/8 bits; half-dense sparse f32 with a bitmask: 17.
        assert_eq!(got[0].bits_per_weight(), 12.0);
        assert_eq!(got[3].bits_per_weight(), 17.0);
    }
}
