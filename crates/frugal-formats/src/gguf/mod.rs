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

/// A memory-mapped GGUF file — or a model seen as one ([`GgufFile::from_parts`]): a Hugging
/// Face checkpoint folder opened through the opener installed with [`set_folder_opener`], each
/// tensor's bytes a range of its mapped shard or a buffer of their own.
pub struct GgufFile {
    path: PathBuf,
    map: Option<Arc<Mmap>>,
    pub header: GgufHeader,
    /// For a model seen as GGUF: tensor `i`'s bytes (header order, offsets increasing).
    parts: Option<Vec<Part>>,
}

/// The maker of a [`Part::lazy`] tensor's bytes.
type MakeBytes = Box<dyn Fn() -> std::io::Result<MappedBytes> + Send + Sync>;

/// A tensor of a model seen as GGUF ([`GgufFile::from_parts`]): bytes at hand (a range of a
/// mapped file), or bytes made when first read — held until [`GgufFile::release`] drops them,
/// made again if read again — so that a tensor the view must convert costs memory only while
/// it is used.
pub struct Part {
    len: u64,
    kind: PartKind,
}

enum PartKind {
    Ready(MappedBytes),
    Lazy {
        make: MakeBytes,
        cell: std::sync::Mutex<Option<MappedBytes>>,
    },
}

impl Part {
    pub fn ready(bytes: MappedBytes) -> Part {
        Part {
            len: bytes.len() as u64,
            kind: PartKind::Ready(bytes),
        }
    }

    /// `len` bytes that `make` writes when the tensor is first read (it must write exactly
    /// `len`; anything else reads as no bytes, which every reader refuses as the wrong size).
    pub fn lazy(
        len: u64,
        make: impl Fn() -> std::io::Result<MappedBytes> + Send + Sync + 'static,
    ) -> Part {
        Part {
            len,
            kind: PartKind::Lazy {
                make: Box::new(make),
                cell: std::sync::Mutex::new(None),
            },
        }
    }

    fn get(&self) -> MappedBytes {
        match &self.kind {
            PartKind::Ready(b) => b.clone(),
            PartKind::Lazy { make, cell } => {
                let lock = || cell.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = &*lock() {
                    return b.clone();
                }
                // Made without holding the lock: the maker runs rayon jobs, and a thread waiting
                // in one may be handed another reader of this tensor (two readers at once make
                // it twice; the first made is kept).
                match make() {
                    Ok(b) if b.len() as u64 == self.len => lock().get_or_insert(b).clone(),
                    Ok(b) => {
                        eprintln!(
                            "frugal: a converted tensor has {} bytes, not {}",
                            b.len(),
                            self.len
                        );
                        MappedBytes::empty()
                    }
                    Err(e) => {
                        eprintln!("frugal: converting a tensor failed: {e}");
                        MappedBytes::empty()
                    }
                }
            }
        }
    }

    fn release(&self) {
        match &self.kind {
            PartKind::Ready(b) => b.release(),
            PartKind::Lazy { cell, .. } => {
                *cell.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }
}

/// How a folder is opened as a GGUF model (installed once by the program: the compression
/// crate's Hugging Face view); `None` until then, when folders are refused as not files.
static FOLDER_OPENER: std::sync::OnceLock<fn(&Path) -> Result<GgufFile>> =
    std::sync::OnceLock::new();

/// Installs the opener [`GgufFile::open`] uses for folders (the first one installed stays).
pub fn set_folder_opener(opener: fn(&Path) -> Result<GgufFile>) {
    let _ = FOLDER_OPENER.set(opener);
}

/// A read-only range of a memory-mapped file, sharing the mapping (see
/// [`GgufFile::tensor_mapped`]); it reads as a byte slice.
#[derive(Clone)]
pub struct MappedBytes {
    map: Option<Arc<Mmap>>,
    start: usize,
    len: usize,
    /// Whether the mapping is of a file (its pages can be dropped and re-read); an anonymous
    /// one ([`MappedBytes::from_bytes`]) holds the only copy and is never released.
    file_backed: bool,
}

impl MappedBytes {
    /// `bytes` copied into an anonymous read-only mapping of their own: a weight built in
    /// memory (a benchmark's, a test's) held the way a file's is.
    pub fn from_bytes(bytes: &[u8]) -> std::io::Result<MappedBytes> {
        if bytes.is_empty() {
            return Ok(MappedBytes::empty());
        }
        let mut m = memmap2::MmapMut::map_anon(bytes.len())?;
        m.copy_from_slice(bytes);
        Ok(MappedBytes {
            map: Some(Arc::new(m.make_read_only()?)),
            start: 0,
            len: bytes.len(),
            file_backed: false,
        })
    }
}

impl MappedBytes {
    /// No bytes.
    pub fn empty() -> MappedBytes {
        MappedBytes {
            map: None,
            start: 0,
            len: 0,
            file_backed: false,
        }
    }

    /// `len` bytes from `start` of a shared read-only mapping of a file (panics past its end).
    pub fn of_map(map: Arc<Mmap>, start: usize, len: usize) -> MappedBytes {
        assert!(start + len <= map.len(), "a range inside the mapping");
        MappedBytes {
            map: (len > 0).then_some(map),
            start,
            len,
            file_backed: true,
        }
    }

    /// Drops these bytes' pages from memory where the kernel can read them again (a file's
    /// mapping); a no-op for bytes held in memory. A hint.
    pub fn release(&self) {
        if let (Some(map), true) = (&self.map, self.file_backed) {
            crate::release_range(map, self.start as u64, self.len as u64);
        }
    }

    /// The `len` bytes from `start` of these (panics past the end, as slicing does).
    pub fn slice(&self, start: usize, len: usize) -> MappedBytes {
        assert!(start + len <= self.len, "a range inside the bytes");
        MappedBytes {
            map: self.map.clone(),
            start: self.start + start,
            len,
            file_backed: self.file_backed,
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

/// Equal when the bytes are.
impl PartialEq for MappedBytes {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({} bytes at {})", self.len, self.start)
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file. Nothing but the header is read until tensors are asked for.
    /// A folder goes to the installed folder opener (a Hugging Face checkpoint, converted as
    /// it is read).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            if let Some(open) = FOLDER_OPENER.get() {
                return open(path);
            }
        }
        let map = crate::map_file(path)?.map(Arc::new);
        let bytes = map.as_deref().map_or(&[][..], |m| &m[..]);
        let header = parse_header(bytes).map_err(|e| Error::malformed(path, "GGUF", e))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            header,
            parts: None,
        })
    }

    /// A model seen as a GGUF file: `metadata`, and tensors (name, type, ggml dims, bytes in
    /// that type's layout) laid out as a GGUF writer would place them. `path` names it in
    /// messages. Every size is checked as the parser checks a file's.
    pub fn from_parts(
        path: &Path,
        metadata: Vec<(String, Value)>,
        tensors: Vec<(String, GgmlType, Vec<u64>, Part)>,
    ) -> Result<Self> {
        let mut infos = Vec::with_capacity(tensors.len());
        let mut parts = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        let mut seen = std::collections::HashSet::new();
        for (name, ggml_type, dims, bytes) in tensors {
            let bad = |reason: String| Error::InvalidTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                reason,
            };
            if dims.is_empty() || dims.len() > MAX_DIMS || !seen.insert(name.clone()) {
                return Err(bad(format!("dims {dims:?} or a repeated name")));
            }
            let n_bytes = ggml_type
                .bytes_for(dims.iter().product())
                .filter(|&n| n == bytes.len)
                .ok_or_else(|| {
                    bad(format!(
                        "{} bytes do not hold {ggml_type:?} {dims:?}",
                        bytes.len
                    ))
                })?;
            infos.push(TensorInfo {
                name,
                ggml_type,
                dims,
                offset,
                n_bytes,
                info_offset: 0,
            });
            parts.push(bytes);
            offset += n_bytes.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map: None,
            header: GgufHeader {
                version: 3,
                alignment: DEFAULT_ALIGNMENT,
                metadata,
                tensors: infos,
                data_offset: 0,
            },
            parts: Some(parts),
        })
    }

    /// A seen-as tensor's bytes.
    fn part(&self, info: &TensorInfo) -> Option<&Part> {
        let parts = self.parts.as_ref()?;
        let i = self
            .header
            .tensors
            .binary_search_by_key(&info.offset, |t| t.offset)
            .ok()?;
        parts.get(i)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size; for a model seen as GGUF, its tensors' bytes.
    pub fn file_len(&self) -> u64 {
        match &self.parts {
            Some(p) => p.iter().map(|b| b.len).sum(),
            None => self.map.as_ref().map_or(0, |m| m.len() as u64),
        }
    }

    /// The raw bytes of tensor `info` (which must come from this file's header), as a handle
    /// that shares the file's mapping: a weight kept this way stays in the kernel's page cache
    /// (file-backed, dropped under pressure and re-read), never copied into the process's own
    /// memory, and outlives this `GgufFile`. For a model seen as GGUF, a converted tensor is
    /// made here on first read ([`Part::lazy`]).
    pub fn tensor_data(&self, info: &TensorInfo) -> MappedBytes {
        if self.parts.is_some() {
            return self.part(info).map_or_else(MappedBytes::empty, Part::get);
        }
        let start = (self.header.data_offset + info.offset) as usize;
        let len = info.n_bytes as usize;
        debug_assert!(start + len <= self.file_len() as usize || len == 0);
        MappedBytes {
            map: self.map.clone(),
            start,
            len,
            file_backed: true,
        }
    }

    /// Tells the kernel that tensor `info`'s pages will not be needed soon, so that streaming
    /// through a large model keeps the resident set small (the pages are re-read from the file
    /// if touched again; a converted tensor is dropped, and made again if read again). A hint:
    /// failures are ignored.
    pub fn release(&self, info: &TensorInfo) {
        if let Some(b) = self.part(info) {
            b.release();
            return;
        }
        if let Some(map) = &self.map {
            crate::release_range(map, self.header.data_offset + info.offset, info.n_bytes);
        }
    }

    /// Finds a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }
}
