//! `frugal inspect`: a format-independent summary of a GGUF or safetensors model file.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use crate::safetensors::SafetensorsFile;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The model file formats Frugal reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Safetensors,
}

/// Tells the format of a file from its first bytes.
pub fn sniff_format(path: &Path) -> Result<ModelFormat> {
    use std::io::Read;
    let mut head = [0u8; 9];
    if path.is_dir() {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: "is a folder (an encoder folder holds model.safetensors)".into(),
        });
    }
    let mut f = crate::guard::open_input(path, "model")?;
    let mut n = 0;
    while n < head.len() {
        match f
            .read(&mut head[n..])
            .map_err(|e| Error::io(path, "reading model", e))?
        {
            0 => break,
            k => n += k,
        }
    }
    if n >= 4 && &head[..4] == b"GGUF" {
        Ok(ModelFormat::Gguf)
    } else if n == 9 && head[8] == b'{' {
        Ok(ModelFormat::Safetensors)
    } else {
        Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: format!(
                "{}, which is neither GGUF's magic `GGUF` nor a safetensors header",
                crate::guard::describe_start(&head[..n])
            ),
        })
    }
}

/// One tensor in a summary.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TensorSummary {
    pub name: String,
    pub dtype: String,
    /// As stored: ggml order (row length first) for GGUF, row-major (outermost first) for safetensors.
    pub shape: Vec<u64>,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// Totals for one dtype.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DtypeTotals {
    pub tensors: usize,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// What `frugal inspect` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ModelSummary {
    pub path: String,
    pub format: ModelFormat,
    /// GGUF version; `None` for safetensors and for a checkpoint folder (seen as the GGUF it
    /// converts to).
    pub version: Option<u32>,
    pub file_size: u64,
    pub architecture: Option<String>,
    /// Metadata with long arrays abbreviated (`[string; 49152]`).
    pub metadata: BTreeMap<String, MetaValue>,
    pub n_tensors: usize,
    /// Total elements of all tensors ("parameters" for a model's weights).
    pub n_parameters: u64,
    pub tensor_bytes: u64,
    /// Tensor bits per parameter.
    pub bits_per_weight: f64,
    pub dtypes: BTreeMap<String, DtypeTotals>,
    pub tensors: Vec<TensorSummary>,
}

/// A metadata value as a report shows it: GGUF's scalars, texts and (nested) arrays;
/// safetensors' texts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    UInt(u64),
    Int(i64),
    /// Non-finite values are written as `null`.
    Float(f64),
    Text(String),
    List(Vec<MetaValue>),
}

/// An integer value equals the same number (as `serde_json::Value` compares).
impl PartialEq<i32> for MetaValue {
    fn eq(&self, other: &i32) -> bool {
        match self {
            MetaValue::UInt(x) => i64::try_from(*x).is_ok_and(|x| x == i64::from(*other)),
            MetaValue::Int(x) => *x == i64::from(*other),
            _ => false,
        }
    }
}

/// A text value equals the same text.
impl PartialEq<&str> for MetaValue {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, MetaValue::Text(t) if t == other)
    }
}

/// As compact JSON (texts quoted).
impl std::fmt::Display for MetaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

impl From<&Value> for MetaValue {
    fn from(v: &Value) -> MetaValue {
        match v {
            Value::U8(x) => MetaValue::UInt((*x).into()),
            Value::U16(x) => MetaValue::UInt((*x).into()),
            Value::U32(x) => MetaValue::UInt((*x).into()),
            Value::U64(x) => MetaValue::UInt(*x),
            Value::I8(x) => MetaValue::Int((*x).into()),
            Value::I16(x) => MetaValue::Int((*x).into()),
            Value::I32(x) => MetaValue::Int((*x).into()),
            Value::I64(x) => MetaValue::Int(*x),
            // Shortest decimal that round-trips the f32 (1e-5, not 9.99999974e-6).
            Value::F32(x) => f32_meta(*x),
            Value::F64(x) => MetaValue::Float(*x),
            Value::Bool(b) => MetaValue::Bool(*b),
            Value::String(t) => MetaValue::Text(t.clone()),
            Value::Array(a) => MetaValue::List(meta_list(a)),
        }
    }
}

/// The shortest decimal that round-trips the f32 (1e-5, not 9.99999974e-6).
fn f32_meta(x: f32) -> MetaValue {
    MetaValue::Float(format!("{x}").parse().unwrap_or(f64::NAN))
}

fn meta_list(a: &crate::gguf::Array) -> Vec<MetaValue> {
    use crate::gguf::Array;
    fn all<T: Copy>(v: &[T], f: impl Fn(T) -> MetaValue) -> Vec<MetaValue> {
        v.iter().map(|x| f(*x)).collect()
    }
    match a {
        Array::U8(v) => all(v, |x| MetaValue::UInt(x.into())),
        Array::U16(v) => all(v, |x| MetaValue::UInt(x.into())),
        Array::U32(v) => all(v, |x| MetaValue::UInt(x.into())),
        Array::U64(v) => all(v, MetaValue::UInt),
        Array::I8(v) => all(v, |x| MetaValue::Int(x.into())),
        Array::I16(v) => all(v, |x| MetaValue::Int(x.into())),
        Array::I32(v) => all(v, |x| MetaValue::Int(x.into())),
        Array::I64(v) => all(v, MetaValue::Int),
        Array::F32(v) => all(v, f32_meta),
        Array::F64(v) => all(v, MetaValue::Float),
        Array::Bool(v) => all(v, MetaValue::Bool),
        Array::String(v) => v.iter().map(|t| MetaValue::Text(t.clone())).collect(),
        Array::Array(v) => v.iter().map(|x| MetaValue::List(meta_list(x))).collect(),
    }
}

/// Summarises a GGUF or safetensors file.
pub fn inspect(path: &Path) -> Result<ModelSummary> {
    let folder = path.is_dir() && crate::hf::is_hf_folder(path);
    let (format, version, file_size, architecture, metadata, tensors): (
        _,
        _,
        _,
        _,
        _,
        Vec<TensorSummary>,
    ) = match if folder {
        // A checkpoint folder: the GGUF model it converts to (`GgufFile::open`'s folder view,
        // which the program installs).
        ModelFormat::Gguf
    } else {
        sniff_format(path)?
    } {
        ModelFormat::Gguf => {
            let f = GgufFile::open(path)?;
            let metadata = f
                .header
                .metadata
                .iter()
                .map(|(k, v)| {
                    let j = match v {
                        Value::Array(a) if a.len() > 16 => MetaValue::Text(v.summary()),
                        _ => MetaValue::from(v),
                    };
                    (k.clone(), j)
                })
                .collect();
            let tensors = f
                .header
                .tensors
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    dtype: t.ggml_type.name(),
                    shape: t.dims.clone(),
                    n_elements: t.n_elements(),
                    n_bytes: t.n_bytes,
                })
                .collect();
            let arch = f.header.architecture().map(str::to_string);
            (
                ModelFormat::Gguf,
                (!folder).then_some(f.header.version),
                f.file_len(),
                arch,
                metadata,
                tensors,
            )
        }
        ModelFormat::Safetensors => {
            let f = SafetensorsFile::open(path)?;
            let metadata: BTreeMap<_, _> = f
                .header
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), MetaValue::Text(v.clone())))
                .collect();
            let tensors = f
                .header
                .tensors
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    dtype: t.dtype.name().to_string(),
                    shape: t.shape.clone(),
                    n_elements: t.n_elements(),
                    n_bytes: t.end - t.begin,
                })
                .collect();
            let arch = architecture_from_config(path)
                .or_else(|| f.header.metadata.get("architecture").cloned());
            (
                ModelFormat::Safetensors,
                None,
                f.file_len(),
                arch,
                metadata,
                tensors,
            )
        }
    };
    let mut dtypes: BTreeMap<String, DtypeTotals> = BTreeMap::new();
    for t in &tensors {
        let d = dtypes.entry(t.dtype.clone()).or_default();
        d.tensors += 1;
        d.n_elements += t.n_elements;
        d.n_bytes += t.n_bytes;
    }
    let n_parameters = tensors.iter().map(|t| t.n_elements).sum::<u64>();
    let tensor_bytes = tensors.iter().map(|t| t.n_bytes).sum::<u64>();
    Ok(ModelSummary {
        path: path.display().to_string(),
        format,
        version,
        file_size,
        architecture,
        metadata,
        n_tensors: tensors.len(),
        n_parameters,
        tensor_bytes,
        bits_per_weight: if n_parameters == 0 {
            0.0
        } else {
            tensor_bytes as f64 * 8.0 / n_parameters as f64
        },
        dtypes,
        tensors,
    })
}

/// For a safetensors file in a Hugging Face model folder, the `model_type` of its `config.json`.
fn architecture_from_config(path: &Path) -> Option<String> {
    let cfg = path.parent()?.join("config.json");
    let bytes = crate::guard::read_capped(&cfg, "config.json", 1 << 20).ok()?;
    /// The one field read (the others are ignored).
    #[derive(serde::Deserialize)]
    struct Config {
        model_type: Option<String>,
    }
    serde_json::from_slice::<Config>(&bytes).ok()?.model_type
}

impl ModelSummary {
    /// The human-readable report.
    pub fn to_text(&self, all_tensors: bool) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let fmt = match (self.format, self.version) {
            (ModelFormat::Gguf, Some(v)) => format!("GGUF v{v}"),
            (ModelFormat::Gguf, None) => {
                "Hugging Face checkpoint folder, as the GGUF it converts to".into()
            }
            _ => "safetensors".to_string(),
        };
        let _ = writeln!(s, "{}", self.path);
        let _ = writeln!(s, "  format        {fmt}");
        let _ = writeln!(
            s,
            "  architecture  {}",
            self.architecture.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            s,
            "  file size     {} ({} bytes)",
            human_bytes(self.file_size),
            self.file_size
        );
        let _ = writeln!(s, "  tensors       {}", self.n_tensors);
        let _ = writeln!(
            s,
            "  parameters    {} ({})",
            human_count(self.n_parameters),
            self.n_parameters
        );
        let _ = writeln!(s, "  bits/weight   {:.3}", self.bits_per_weight);
        let _ = writeln!(
            s,
            "\n  {:<10} {:>8} {:>14} {:>12}",
            "dtype", "tensors", "elements", "bytes"
        );
        for (d, t) in &self.dtypes {
            let _ = writeln!(
                s,
                "  {:<10} {:>8} {:>14} {:>12}",
                d,
                t.tensors,
                t.n_elements,
                human_bytes(t.n_bytes)
            );
        }
        const KEYS: &[&str] = &[
            "general.name",
            "general.size_label",
            "general.file_type",
            "general.quantization_version",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
        ];
        let arch = self.architecture.clone().unwrap_or_default();
        let shown: Vec<_> = self
            .metadata
            .iter()
            .filter(|(k, _)| {
                KEYS.contains(&k.as_str())
                    || (!arch.is_empty() && k.starts_with(&format!("{arch}.")))
                    || self.format == ModelFormat::Safetensors
            })
            .collect();
        if !shown.is_empty() {
            let _ = writeln!(
                s,
                "\n  metadata ({} keys, {} shown)",
                self.metadata.len(),
                shown.len()
            );
            for (k, v) in shown {
                let _ = writeln!(
                    s,
                    "    {k} = {}",
                    match v {
                        MetaValue::Text(t) => t.clone(),
                        other => other.to_string(),
                    }
                );
            }
        }
        let limit = if all_tensors { usize::MAX } else { 12 };
        let _ = writeln!(
            s,
            "\n  {:<40} {:<8} {:<22} {:>12}",
            "tensor", "dtype", "shape", "bytes"
        );
        for t in self.tensors.iter().take(limit) {
            let _ = writeln!(
                s,
                "  {:<40} {:<8} {:<22} {:>12}",
                t.name,
                t.dtype,
                format!("{:?}", t.shape),
                t.n_bytes
            );
        }
        if self.tensors.len() > limit {
            let _ = writeln!(s, "  … {} more (use --all)", self.tensors.len() - limit);
        }
        s
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}
