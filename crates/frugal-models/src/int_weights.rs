//! Frugal's integer weights in safetensors, and their decoding. A quantized linear weight
//! `P.weight` (`[out, in]`) is stored as one of:
//!
//! - **int8, per output channel, symmetric**: `P.weight` I8 `[out, in]` and `P.weight_scale` F32
//!   `[out]`; `W[o, j] = scale[o] · q[o, j]`.
//! - **int4, groups of g input columns, asymmetric**: `P.weight_packed` U8 `[out, in / 2]` (column
//!   2k in the low nibble, 2k + 1 in the high nibble), `P.weight_scale` F32 `[out, in / g]` and
//!   `P.weight_min` F32 `[out, in / g]`; `W[o, j] = scale[o, j / g] · q[o, j] + min[o, j / g]`,
//!   q ∈ 0..=15.
//!
//! - **sparse** (a pruned F32 weight, [`frugal_formats::sparse`]): `P.weight_values` F32 and
//!   `P.weight_index` U8 (a bitmask, or N:M positions), with the dense shape and layout under
//!   `frugal.sparse` in the metadata (JSON: `{"version": 1, "tensors": {"P.weight": {"shape":
//!   [...], "layout": "bitmask" | "2:4" | …}}}`); decoded exactly.
//!
//! The file's `__metadata__` carries `frugal.quantization` (JSON: format, version, scheme, group
//! size) so a consumer can tell the scheme without inspecting tensors; a file whose weights
//! differ (`frugal tune` of a classifier) says `"scheme": "mixed"` and lists each weight's
//! scheme under `tensors` (weights not listed stay F32). Each weight decodes by the tensors it
//! has, whatever the file-wide scheme. Everything else (biases,
//! norms, embeddings) stays F32. An HF-style consumer loads such a file by applying the formulas
//! above to each `*.weight_scale` triple before building its modules.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use frugal_formats::safetensors::{Dtype, SafetensorsFile, StTensorInfo};

/// The `__metadata__` key describing the scheme.
pub const META_KEY: &str = "frugal.quantization";

pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}
pub fn min_name(weight: &str) -> String {
    format!("{weight}_min")
}
pub fn packed_name(weight: &str) -> String {
    format!("{weight}_packed")
}
pub fn values_name(weight: &str) -> String {
    format!("{weight}_values")
}
pub fn index_name(weight: &str) -> String {
    format!("{weight}_index")
}

/// The `__metadata__` key listing the sparse tensors.
pub const SPARSE_KEY: &str = "frugal.sparse";

/// The JSON under [`SPARSE_KEY`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SparseMeta {
    pub version: u32,
    pub tensors: std::collections::BTreeMap<String, SparseEntry>,
}

/// One sparse tensor's dense shape and layout (`bitmask` or `N:M`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SparseEntry {
    pub shape: Vec<u64>,
    pub layout: String,
}

/// The file's sparse tensors (empty when it has none).
pub fn sparse_meta(f: &SafetensorsFile) -> Result<SparseMeta> {
    let Some(j) = f.header.metadata.get(SPARSE_KEY) else {
        return Ok(SparseMeta::default());
    };
    let m: SparseMeta = serde_json::from_str(j).map_err(|e| bad(f, SPARSE_KEY, e.to_string()))?;
    if m.version != 1 {
        return Err(bad(
            f,
            SPARSE_KEY,
            format!("version {} (this build reads 1)", m.version),
        ));
    }
    Ok(m)
}

/// Decodes the sparse weight `name` described by `e`.
fn load_sparse(f: &SafetensorsFile, name: &str, e: &SparseEntry) -> Result<Vec<f32>> {
    let layout: frugal_formats::sparse::Layout =
        e.layout.parse().map_err(|m: String| bad(f, name, m))?;
    let numel = e
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad(f, name, format!("shape {:?} overflows", e.shape)))?;
    let v = get(f, &values_name(name))?;
    let i = get(f, &index_name(name))?;
    if v.dtype != Dtype::F32 || v.shape.len() != 1 || i.dtype != Dtype::U8 || i.shape.len() != 1 {
        return Err(bad(
            f,
            name,
            "sparse weight needs F32 values [k] and U8 index [bytes]".into(),
        ));
    }
    frugal_formats::sparse::decode(numel, layout, &f32s(f, v), f.tensor_data(i))
        .map_err(|m| bad(f, name, format!("{layout}: {m}")))
}

fn bad(f: &SafetensorsFile, name: &str, reason: String) -> Error {
    Error::BadMetadata {
        path: f.path().to_path_buf(),
        key: name.to_string(),
        reason,
    }
}

fn get<'a>(f: &'a SafetensorsFile, name: &str) -> Result<&'a StTensorInfo> {
    f.tensor(name).ok_or_else(|| Error::MissingTensor {
        path: f.path().to_path_buf(),
        name: name.to_string(),
    })
}

fn f32s(f: &SafetensorsFile, t: &StTensorInfo) -> Vec<f32> {
    f.tensor_data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn expect(f: &SafetensorsFile, t: &StTensorInfo, dtype: Dtype, shape: &[u64]) -> Result<()> {
    if t.dtype != dtype || t.shape != shape {
        return Err(bad(
            f,
            &t.name,
            format!(
                "expected {dtype} {shape:?}, found {} {:?}",
                t.dtype, t.shape
            ),
        ));
    }
    Ok(())
}

/// The stored integers and per-row scales of `name` when it is an int8 weight (`None` for F32
/// or int4), for integer products ([`crate::int8_kernels`]).
pub fn load_int8(f: &SafetensorsFile, name: &str) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
    let Some(t) = f.tensor(name) else {
        return Ok(None);
    };
    if t.dtype != Dtype::I8 || t.shape.len() != 2 {
        return Ok(None);
    }
    let s = get(f, &scale_name(name))?;
    expect(f, s, Dtype::F32, &t.shape[..1])?;
    let q = f.tensor_data(t).iter().map(|&b| b as i8).collect();
    Ok(Some((q, f32s(f, s))))
}

/// The weight `name` as f32 (`[out, in]`, or any shape when sparse): stored as F32, or decoded
/// from int8, int4 or a sparse layout.
pub fn load_weight(f: &SafetensorsFile, name: &str, dev: &Device) -> Result<Tensor> {
    let sparse = if f.tensor(name).is_none() {
        sparse_meta(f)?.tensors.remove(name)
    } else {
        None
    };
    let (shape, values) = if let Some(e) = sparse {
        (e.shape.clone(), load_sparse(f, name, &e)?)
    } else if let Some(t) = f.tensor(name) {
        match t.dtype {
            Dtype::F32 => (t.shape.clone(), f32s(f, t)),
            Dtype::I8 if t.shape.len() == 2 => {
                let s = get(f, &scale_name(name))?;
                expect(f, s, Dtype::F32, &t.shape[..1])?;
                let scale = f32s(f, s);
                let cols = t.shape[1] as usize;
                let v = f
                    .tensor_data(t)
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| scale[i / cols.max(1)] * q as i8 as f32)
                    .collect();
                (t.shape.clone(), v)
            }
            other => {
                return Err(Error::UnsupportedType {
                    path: f.path().to_path_buf(),
                    name: name.into(),
                    dtype: other.to_string(),
                })
            }
        }
    } else {
        let p = get(f, &packed_name(name))?;
        let s = get(f, &scale_name(name))?;
        if p.dtype != Dtype::U8 || p.shape.len() != 2 || s.shape.len() != 2 || s.shape[1] == 0 {
            return Err(bad(
                f,
                name,
                "int4 weight needs packed U8 [out, in/2] and scales [out, groups]".into(),
            ));
        }
        let (rows, cols) = (p.shape[0], p.shape[1] * 2);
        let groups = s.shape[1];
        if cols % groups != 0 {
            return Err(bad(
                f,
                name,
                format!("{groups} groups do not divide {cols} columns"),
            ));
        }
        expect(f, s, Dtype::F32, &[rows, groups])?;
        let m = get(f, &min_name(name))?;
        expect(f, m, Dtype::F32, &[rows, groups])?;
        let (scale, min) = (f32s(f, s), f32s(f, m));
        let g = (cols / groups) as usize;
        let (cols, groups) = (cols as usize, groups as usize);
        let mut v = vec![0f32; rows as usize * cols];
        for (i, &b) in f.tensor_data(p).iter().enumerate() {
            for (k, q) in [(0, b & 0xF), (1, b >> 4)] {
                let e = 2 * i + k;
                let (r, j) = (e / cols, e % cols);
                let gi = r * groups + j / g;
                v[e] = scale[gi] * q as f32 + min[gi];
            }
        }
        (vec![rows, cols as u64], v)
    };
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Ok(Tensor::from_vec(values, shape, dev)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_formats::safetensors::{write_safetensors_file, StTensorToWrite};
    use std::collections::BTreeMap;

    fn file(tensors: &[(&str, Dtype, Vec<u64>, Vec<u8>)]) -> (tempfile::TempDir, SafetensorsFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let t: Vec<StTensorToWrite> = tensors
            .iter()
            .map(|(n, d, s, b)| StTensorToWrite {
                name: n,
                dtype: *d,
                shape: s,
                data: b,
            })
            .collect();
        write_safetensors_file(&p, &[], &BTreeMap::new(), &t).unwrap();
        let f = SafetensorsFile::open(&p).unwrap();
        (dir, f)
    }

    fn f32b(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_int8_and_int4_and_rejects_inconsistent_tensors() {
        let dev = Device::Cpu;
        // int8: 2 × 2, scales 0.5 and 2.
        let (_d, f) = file(&[
            ("w.weight", Dtype::I8, vec![2, 2], vec![2, 254, 1, 3]),
            ("w.weight_scale", Dtype::F32, vec![2], f32b(&[0.5, 2.0])),
        ]);
        let w: Vec<Vec<f32>> = load_weight(&f, "w.weight", &dev)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(w, vec![vec![1.0, -1.0], vec![2.0, 6.0]]);
        // int4: 1 × 4 in groups of 2: levels 1, 15 | 0, 3 (low nibble first).
        let (_d, f) = file(&[
            ("w.weight_packed", Dtype::U8, vec![1, 2], vec![0xF1, 0x30]),
            ("w.weight_scale", Dtype::F32, vec![1, 2], f32b(&[0.5, 1.0])),
            ("w.weight_min", Dtype::F32, vec![1, 2], f32b(&[-1.0, 0.25])),
        ]);
        let w: Vec<Vec<f32>> = load_weight(&f, "w.weight", &dev)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(w, vec![vec![-0.5, 6.5, 0.25, 3.25]]);
        // Wrong scale shapes and missing parts are errors naming the tensor, never panics.
        for bad in [
            vec![
                ("w.weight", Dtype::I8, vec![2, 2], vec![0u8; 4]),
                ("w.weight_scale", Dtype::F32, vec![3], f32b(&[1.0; 3])),
            ],
            vec![("w.weight", Dtype::I8, vec![2, 2], vec![0u8; 4])],
            vec![
                ("w.weight_packed", Dtype::U8, vec![1, 2], vec![0u8; 2]),
                ("w.weight_scale", Dtype::F32, vec![1, 3], f32b(&[1.0; 3])),
                ("w.weight_min", Dtype::F32, vec![1, 3], f32b(&[1.0; 3])),
            ],
            vec![
                ("w.weight_packed", Dtype::U8, vec![1, 2], vec![0u8; 2]),
                ("w.weight_scale", Dtype::F32, vec![1, 2], f32b(&[1.0; 2])),
            ],
            vec![
                ("w.weight_packed", Dtype::U8, vec![2], vec![0u8; 2]),
                ("w.weight_scale", Dtype::F32, vec![1, 1], f32b(&[1.0])),
                ("w.weight_min", Dtype::F32, vec![1, 1], f32b(&[1.0])),
            ],
        ] {
            let (_d, f) = file(&bad);
            let e = load_weight(&f, "w.weight", &dev).unwrap_err();
            assert!(e.to_string().contains("w.weight"), "{e}");
        }
    }

    /// Sparse weights written by `write_f32_safetensors_sparse` decode to exactly the dense
    /// values; a dense-looking tensor (too few zeros to gain) stays dense; crafted metadata and
    /// inconsistent parts are errors naming the tensor.
    #[test]
    fn sparse_weights_round_trip_exactly_and_bad_ones_are_refused() {
        use frugal_formats::sparse::Layout;
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<f32> = (0..6 * 8)
            .map(|i| {
                if i % 4 < 2 {
                    (i as f32 * 0.71).cos()
                } else {
                    0.0
                }
            })
            .collect();
        let dense: Vec<f32> = (0..8).map(|i| i as f32 + 0.5).collect();
        let tensors = vec![
            (
                "a.weight".to_string(),
                Tensor::from_vec(w.clone(), (6, 8), &dev).unwrap(),
            ),
            (
                "b.weight".to_string(),
                Tensor::from_vec(dense.clone(), (2, 4), &dev).unwrap(),
            ),
        ];
        for layout in [Layout::Bitmask, Layout::NOfM { n: 2, m: 4 }] {
            let p = dir.path().join(format!(
                "{}.safetensors",
                layout.to_string().replace(':', "of")
            ));
            crate::convert::write_f32_safetensors_sparse(
                &p,
                &[],
                &BTreeMap::new(),
                &tensors,
                &|n, _| (layout == Layout::Bitmask || n == "a.weight").then_some(layout),
            )
            .unwrap();
            let f = SafetensorsFile::open(&p).unwrap();
            assert!(f.tensor("a.weight").is_none() && f.tensor("a.weight_values").is_some());
            assert!(f.tensor("b.weight").is_some(), "no gain: kept dense");
            let back: Vec<f32> = load_weight(&f, "a.weight", &dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(back, w, "{layout}");
            assert_eq!(sparse_meta(&f).unwrap().tensors.len(), 1);
        }
        // 2:4 cannot hold a row with three non-zero values in a group: refused, nothing written.
        let p = dir.path().join("x.safetensors");
        let e = crate::convert::write_f32_safetensors_sparse(
            &p,
            &[],
            &BTreeMap::new(),
            &tensors,
            &|_, _| Some(Layout::NOfM { n: 2, m: 4 }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("b.weight"), "{e}");
        assert!(!p.exists());
        // Crafted files.
        let meta = |layout: &str, shape: &str| {
            let mut m = BTreeMap::new();
            m.insert(
                SPARSE_KEY.to_string(),
                format!(r#"{{"version":1,"tensors":{{"w.weight":{{"shape":{shape},"layout":"{layout}"}}}}}}"#),
            );
            m
        };
        let vals = f32b(&[1.0, 2.0]);
        for (m, parts) in [
            (
                meta("bitmask", "[2,4]"),
                vec![
                    ("w.weight_values", Dtype::F32, vec![2], vals.clone()),
                    ("w.weight_index", Dtype::U8, vec![1], vec![0b111]),
                ],
            ),
            (
                meta("bitmask", "[2,4]"),
                vec![("w.weight_values", Dtype::F32, vec![2], vals.clone())],
            ),
            (
                meta("bitmask", "[99999999999,99999999999]"),
                vec![
                    ("w.weight_values", Dtype::F32, vec![2], vals.clone()),
                    ("w.weight_index", Dtype::U8, vec![1], vec![3]),
                ],
            ),
            (
                meta("3:2", "[2,4]"),
                vec![
                    ("w.weight_values", Dtype::F32, vec![2], vals.clone()),
                    ("w.weight_index", Dtype::U8, vec![1], vec![3]),
                ],
            ),
            (
                meta("1:4", "[2,4]"),
                vec![
                    ("w.weight_values", Dtype::F32, vec![2], vals.clone()),
                    ("w.weight_index", Dtype::U8, vec![1], vec![0xFF]),
                ],
            ),
            (
                meta("bitmask", "[2,4]"),
                vec![
                    ("w.weight_values", Dtype::U8, vec![8], vals.clone()),
                    ("w.weight_index", Dtype::U8, vec![1], vec![3]),
                ],
            ),
        ] {
            let p = dir.path().join("bad.safetensors");
            let t: Vec<StTensorToWrite> = parts
                .iter()
                .map(|(n, d, s, b)| StTensorToWrite {
                    name: n,
                    dtype: *d,
                    shape: s,
                    data: b,
                })
                .collect();
            write_safetensors_file(&p, &[], &m, &t).unwrap();
            let f = SafetensorsFile::open(&p).unwrap();
            let e = load_weight(&f, "w.weight", &dev).unwrap_err();
            assert!(e.to_string().contains("w.weight"), "{e}");
        }
        let mut m = meta("bitmask", "[2,4]");
        m.insert(SPARSE_KEY.into(), r#"{"version":2,"tensors":{}}"#.into());
        let p = dir.path().join("v2.safetensors");
        write_safetensors_file(&p, &[], &m, &[]).unwrap();
        let f = SafetensorsFile::open(&p).unwrap();
        assert!(sparse_meta(&f)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
    }
}
