//! safetensors: a hardened, memory-mapped reader and an atomic writer.
//!
//! Format: <https://github.com/huggingface/safetensors#format>: an 8-byte little-endian header
//! length N, N bytes of JSON (`{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {…}}`),
//! then the tensor bytes, which must be covered exactly, without holes or overlaps. Our own parser
//! (rather than the `safetensors` crate's) lets every error name the tensor and field at fault;
//! the tests check our output against that crate.

use crate::error::{Error, ParseError, Result};
use crate::output::AtomicFile;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest header accepted, as in the reference implementation.
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// At most this many dimensions per tensor.
pub const MAX_DIMS: usize = 16;

macro_rules! dtypes {
    ($($v:ident = $name:literal, $size:literal;)*) => {
        /// A safetensors element type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Dtype { $($v,)* }
        /// The table of element types: name on disk and bytes per element.
        pub const DTYPES: &[(Dtype, &str, u64)] = &[$((Dtype::$v, $name, $size),)*];
    };
}

dtypes! {
    Bool = "BOOL", 1;
    U8 = "U8", 1;
    I8 = "I8", 1;
    F8E4M3 = "F8_E4M3", 1;
    F8E5M2 = "F8_E5M2", 1;
    I16 = "I16", 2;
    U16 = "U16", 2;
    F16 = "F16", 2;
    BF16 = "BF16", 2;
    I32 = "I32", 4;
    U32 = "U32", 4;
    F32 = "F32", 4;
    F64 = "F64", 8;
    I64 = "I64", 8;
    U64 = "U64", 8;
}

impl Dtype {
    pub fn name(self) -> &'static str {
        DTYPES
            .iter()
            .find(|d| d.0 == self)
            .map(|d| d.1)
            .unwrap_or("?")
    }
    pub fn size(self) -> u64 {
        DTYPES
            .iter()
            .find(|d| d.0 == self)
            .map(|d| d.2)
            .unwrap_or(1)
    }
    pub fn from_name(s: &str) -> Option<Dtype> {
        DTYPES.iter().find(|d| d.1 == s).map(|d| d.0)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range relative to the start of the data section.
    pub begin: u64,
    pub end: u64,
}

impl StTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A parsed safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// `__metadata__` (string to string), empty when absent.
    pub metadata: BTreeMap<String, String>,
    /// Tensors in the order of their data.
    pub tensors: Vec<StTensorInfo>,
    /// Absolute offset of the data section (8 + header length).
    pub data_offset: u64,
}

/// Parses and validates the header of a safetensors file held in `buf` (the whole file).
pub fn parse_header(buf: &[u8]) -> Result<SafetensorsHeader, ParseError> {
    let e = |field: &str, at: u64, reason: String| ParseError::new(field, at, reason);
    if buf.len() < 8 {
        return Err(e(
            "header_len",
            0,
            format!(
                "file is {} bytes, shorter than the 8-byte header length",
                buf.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let avail = buf.len() as u64 - 8;
    if n > MAX_HEADER_LEN || n > avail {
        return Err(e(
            "header_len",
            0,
            format!("header length {n} exceeds the {avail} bytes left (limit {MAX_HEADER_LEN})"),
        ));
    }
    let json = &buf[8..8 + n as usize];
    if json.first() != Some(&b'{') {
        return Err(e("header", 8, "header does not start with `{`".into()));
    }
    let text = std::str::from_utf8(json).map_err(|err| {
        e(
            "header",
            8 + err.valid_up_to() as u64,
            format!("header is not valid UTF-8 ({err})"),
        )
    })?;
    let root: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|err| e("header", 8, format!("header is not a JSON object: {err}")))?;
    let data_len = avail - n;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(root.len());
    for (name, entry) in &root {
        if name == "__metadata__" {
            let obj = entry
                .as_object()
                .ok_or_else(|| e("__metadata__", 8, "must be an object of strings".into()))?;
            for (k, v) in obj {
                let v = v.as_str().ok_or_else(|| {
                    e(
                        &format!("__metadata__.{k}"),
                        8,
                        "metadata values must be strings".into(),
                    )
                })?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let field = |f: &str| format!("{name}.{f}");
        let obj = entry
            .as_object()
            .ok_or_else(|| e(name, 8, "tensor entry must be an object".into()))?;
        let dtype_name = obj
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| e(&field("dtype"), 8, "missing or not a string".into()))?;
        let dtype = Dtype::from_name(dtype_name)
            .ok_or_else(|| e(&field("dtype"), 8, format!("unknown dtype `{dtype_name}`")))?;
        let shape_v = obj
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| e(&field("shape"), 8, "missing or not an array".into()))?;
        if shape_v.len() > MAX_DIMS {
            return Err(e(
                &field("shape"),
                8,
                format!("{} dimensions (at most {MAX_DIMS})", shape_v.len()),
            ));
        }
        let shape = shape_v
            .iter()
            .map(|d| {
                d.as_u64().ok_or_else(|| {
                    e(
                        &field("shape"),
                        8,
                        format!("dimension {d} is not a non-negative integer"),
                    )
                })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let offs = obj
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .ok_or_else(|| e(&field("data_offsets"), 8, "missing or not an array".into()))?;
        let (begin, end) = match offs.as_slice() {
            [b, x] => match (b.as_u64(), x.as_u64()) {
                (Some(b), Some(x)) => (b, x),
                _ => {
                    return Err(e(
                        &field("data_offsets"),
                        8,
                        "offsets must be non-negative integers".into(),
                    ))
                }
            },
            _ => {
                return Err(e(
                    &field("data_offsets"),
                    8,
                    "must hold exactly [begin, end]".into(),
                ))
            }
        };
        if begin > end || end > data_len {
            return Err(e(
                &field("data_offsets"),
                8,
                format!("range [{begin}, {end}) is not inside the {data_len} data bytes"),
            ));
        }
        let bytes = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| e(&field("shape"), 8, format!("shape {shape:?} overflows")))?;
        if bytes != end - begin {
            return Err(e(
                &field("data_offsets"),
                8,
                format!(
                    "{dtype} {shape:?} needs {bytes} bytes but the range holds {}",
                    end - begin
                ),
            ));
        }
        tensors.push(StTensorInfo {
            name: name.clone(),
            dtype,
            shape,
            begin,
            end,
        });
    }
    tensors.sort_by_key(|t| (t.begin, t.end));
    let mut covered = 0u64;
    for t in &tensors {
        if t.begin < covered {
            return Err(e(
                &format!("{}.data_offsets", t.name),
                8,
                format!(
                    "range [{}, {}) overlaps the tensor before it",
                    t.begin, t.end
                ),
            ));
        }
        if t.begin > covered {
            return Err(e(
                &format!("{}.data_offsets", t.name),
                8,
                format!("hole in the data before byte {}", t.begin),
            ));
        }
        covered = t.end;
    }
    if covered != data_len {
        return Err(e(
            "data",
            8 + n + covered,
            format!(
                "{} bytes after the last tensor belong to none",
                data_len - covered
            ),
        ));
    }
    Ok(SafetensorsHeader {
        metadata,
        tensors,
        data_offset: 8 + n,
    })
}

/// A memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Option<std::sync::Arc<Mmap>>,
    pub header: SafetensorsHeader,
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = crate::map_file(path)?.map(std::sync::Arc::new);
        let header = parse_header(map.as_deref().map_or(&[][..], |m| &m[..]))
            .map_err(|e| Error::malformed(path, "safetensors", e))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    pub fn tensor_data(&self, t: &StTensorInfo) -> &[u8] {
        let base = self.header.data_offset as usize;
        &self.map.as_deref().map_or(&[][..], |m| &m[..])
            [base + t.begin as usize..base + t.end as usize]
    }

    /// Tensor `t`'s bytes as a handle sharing the file's mapping (see
    /// `GgufFile::tensor_mapped`).
    pub fn tensor_mapped(&self, t: &StTensorInfo) -> crate::gguf::MappedBytes {
        let base = self.header.data_offset as usize;
        match &self.map {
            Some(m) => crate::gguf::MappedBytes::of_map(
                m.clone(),
                base + t.begin as usize,
                (t.end - t.begin) as usize,
            ),
            None => crate::gguf::MappedBytes::empty(),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&StTensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// Tells the kernel that bytes `[start, start + len)` of tensor `t` will not be needed soon
    /// (a hint, as `GgufFile::release`): streaming a checkpoint keeps the resident set small.
    pub fn release_range(&self, t: &StTensorInfo, start: u64, len: u64) {
        if let Some(map) = &self.map {
            let len = len.min((t.end - t.begin).saturating_sub(start));
            crate::release_range(map, self.header.data_offset + t.begin + start, len);
        }
    }
}

/// A tensor to write.
#[derive(Debug, Clone, Copy)]
pub struct StTensorToWrite<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [u64],
    pub data: &'a [u8],
}

/// What the streaming writer needs to know of a tensor before its bytes exist.
#[derive(Debug, Clone, Copy)]
pub struct StTensorSpec<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [u64],
}

/// A safetensors file written tensor by tensor (an exporter holds one tensor at a time): the
/// header by [`SafetensorsStreamWriter::create`], then each tensor's bytes in the order
/// given, then [`SafetensorsStreamWriter::finish`] renames the file into place. Dropped
/// unfinished, it leaves nothing behind.
pub struct SafetensorsStreamWriter {
    out: AtomicFile,
    path: PathBuf,
    sizes: Vec<(String, u64)>,
    next: usize,
    total: u64,
}

impl SafetensorsStreamWriter {
    pub fn create(
        path: &Path,
        inputs: &[&Path],
        metadata: &BTreeMap<String, String>,
        tensors: &[StTensorSpec<'_>],
    ) -> Result<Self> {
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).expect("strings serialize"),
            );
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let bad = |reason: String| Error::InvalidTensor {
                path: path.to_path_buf(),
                tensor: t.name.to_string(),
                reason,
            };
            if t.name == "__metadata__" || header.contains_key(t.name) {
                return Err(bad("duplicate or reserved tensor name".into()));
            }
            let want = t
                .shape
                .iter()
                .try_fold(t.dtype.size(), |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad("size overflows".into()))?;
            header.insert(
                t.name.to_string(),
                serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + want]}),
            );
            sizes.push((t.name.to_string(), want));
            offset += want;
        }
        let mut json = serde_json::to_vec(&header).expect("header serializes");
        // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let mut out = AtomicFile::create(path, inputs)?;
        let io = |e| Error::write(path, "writing safetensors", e);
        out.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&json).map_err(io)?;
        Ok(SafetensorsStreamWriter {
            out,
            path: path.to_path_buf(),
            sizes,
            next: 0,
            total: 8 + json.len() as u64 + offset,
        })
    }

    /// The next tensor's bytes (in the order of `create`'s list).
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let (name, want) =
            self.sizes
                .get(self.next)
                .cloned()
                .ok_or_else(|| Error::InvalidOutput {
                    path: self.path.clone(),
                    reason: "more tensors than declared".into(),
                })?;
        if data.len() as u64 != want {
            return Err(Error::InvalidTensor {
                path: self.path.clone(),
                tensor: name,
                reason: format!("needs {want} bytes, got {}", data.len()),
            });
        }
        self.out
            .write_all(data)
            .map_err(|e| Error::write(&self.path, "writing safetensors", e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written, then syncs and renames. Returns the bytes written.
    pub fn finish(self) -> Result<u64> {
        crate::output::check_all_written(&self.path, self.next, self.sizes.len())?;
        self.out.commit()?;
        Ok(self.total)
    }
}

/// Writes a safetensors file atomically; tensors are laid out in the order given.
/// Returns the number of bytes written.
pub fn write_safetensors_file(
    path: &Path,
    inputs: &[&Path],
    metadata: &BTreeMap<String, String>,
    tensors: &[StTensorToWrite<'_>],
) -> Result<u64> {
    let specs: Vec<StTensorSpec> = tensors
        .iter()
        .map(|t| StTensorSpec {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
        })
        .collect();
    let mut w = SafetensorsStreamWriter::create(path, inputs, metadata, &specs)?;
    for t in tensors {
        w.write_tensor(t.data)?;
    }
    w.finish()
}
