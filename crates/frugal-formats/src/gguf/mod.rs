//! GGUF, llama.cpp's model format: a hardened reader for versions 2 and 3 and a version-3 writer.
//!
//! Specification: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Tensor data is
//! memory-mapped and handed out as byte slices in the file's own block layout; decoding the
//! blocks into numbers is the models crate's job.

mod ggml_type;
mod read;
mod value;
mod write;

pub use ggml_type::{GgmlType, GgmlTypeInfo, GGML_TYPES};
pub use read::parse_header;
pub use value::{Array, Value, ValueType};
pub use write::{write_gguf, write_gguf_file, GgufStreamWriter, TensorSpec, TensorToWrite};

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Longest tensor name accepted (llama.cpp's own limit is 63 bytes; we read more generously).
pub const MAX_NAME_LEN: usize = 1024;

/// Everything in a GGUF file except the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute byte offset of the tensor data section.
    pub data_offset: u64,
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the row length (innermost, contiguous).
    pub dims: Vec<u64>,
    /// Offset of the data relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
    /// Absolute offset of this entry in the file (for error messages).
    pub info_offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// An architecture-scoped key, e.g. `arch_get("block_count")` reads `llama.block_count`.
    pub fn arch_get(&self, suffix: &str) -> Option<&Value> {
        self.get(&format!("{}.{suffix}", self.architecture()?))
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Option<Arc<Mmap>>,
    pub header: GgufHeader,
}

/// A read-only range of a memory-mapped file, sharing the mapping (see
/// [`GgufFile::tensor_mapped`]); it reads as a byte slice.
#[derive(Clone)]
pub struct MappedBytes {
    map: Option<Arc<Mmap>>,
    start: usize,
    len: usize,
}

impl MappedBytes {
    /// `bytes` copied into an anonymous read-only mapping of their own: a weight built in
    /// memory (a benchmark's, a test's) held the way a file's is.
    pub fn from_bytes(bytes: &[u8]) -> std::io::Result<MappedBytes> {
        if bytes.is_empty() {
            return Ok(MappedBytes {
                map: None,
                start: 0,
                len: 0,
            });
        }
        let mut m = memmap2::MmapMut::map_anon(bytes.len())?;
        m.copy_from_slice(bytes);
        Ok(MappedBytes {
            map: Some(Arc::new(m.make_read_only()?)),
            start: 0,
            len: bytes.len(),
        })
    }
}

impl MappedBytes {
    /// The `len` bytes from `start` of these (panics past the end, as slicing does).
    pub fn slice(&self, start: usize, len: usize) -> MappedBytes {
        assert!(start + len <= self.len, "a range inside the bytes");
        MappedBytes {
            map: self.map.clone(),
            start: self.start + start,
            len,
        }
    }
}

impl std::ops::Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.map {
            // The range was checked against the file by the header parser.
            Some(m) => &m[self.start..self.start + self.len],
            None => &[],
        }
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({} bytes at {})", self.len, self.start)
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file. Nothing but the header is read until tensors are asked for.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = crate::map_file(path)?.map(Arc::new);
        let bytes = map.as_deref().map_or(&[][..], |m| &m[..]);
        let header = parse_header(bytes).map_err(|e| Error::malformed(path, "GGUF", e))?;
        Ok(GgufFile {
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

    /// The raw bytes of tensor `info` (which must come from this file's header).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // The header parser checked that every tensor lies inside the file.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.map.as_deref().map_or(&[][..], |m| &m[..])[start..start + info.n_bytes as usize]
    }

    /// Tensor `info`'s bytes as a handle that shares the file's mapping: a weight kept this
    /// way stays in the kernel's page cache (file-backed, dropped under pressure and re-read),
    /// never copied into the process's own memory, and outlives this `GgufFile`.
    pub fn tensor_mapped(&self, info: &TensorInfo) -> MappedBytes {
        let start = (self.header.data_offset + info.offset) as usize;
        let len = info.n_bytes as usize;
        debug_assert!(start + len <= self.file_len() as usize || len == 0);
        MappedBytes {
            map: self.map.clone(),
            start,
            len,
        }
    }

    /// Tells the kernel that tensor `info`'s pages will not be needed soon, so that streaming
    /// through a large model keeps the resident set small (the pages are re-read from the file
    /// if touched again). A hint: failures are ignored.
    pub fn release(&self, info: &TensorInfo) {
        if let Some(map) = &self.map {
            crate::release_range(map, self.header.data_offset + info.offset, info.n_bytes);
        }
    }

    /// Finds a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }
}
