//! The GGUF version-3 writer. Output goes through [`crate::output::AtomicFile`], so a failed or
//! interrupted write leaves nothing behind.

use super::value::{Array, Value};
use super::{GgmlType, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use crate::output::AtomicFile;
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

/// A tensor to write: its bytes must already be in the block layout of `ggml_type`.
#[derive(Debug, Clone, Copy)]
pub struct TensorToWrite<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: &'a [u64],
    pub data: &'a [u8],
}

/// What the streaming writer needs to know of a tensor before its bytes exist.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    pub dims: &'a [u64],
}

impl<'a> From<&TensorToWrite<'a>> for TensorSpec<'a> {
    fn from(t: &TensorToWrite<'a>) -> Self {
        TensorSpec {
            name: t.name,
            ggml_type: t.ggml_type,
            dims: t.dims,
        }
    }
}

/// A GGUF file written tensor by tensor (so a converter holds one tensor at a time): the header
/// is written (after the reader's checks) by [`GgufStreamWriter::create`], then each tensor's
/// bytes in the order given, then [`GgufStreamWriter::finish`] renames the file into place.
/// Dropped unfinished, it leaves nothing behind.
pub struct GgufStreamWriter {
    out: AtomicFile,
    path: std::path::PathBuf,
    n: u64,
    alignment: u64,
    sizes: Vec<u64>,
    names: Vec<String>,
    next: usize,
    /// Bytes of the current tensor written so far.
    part: u64,
}

impl GgufStreamWriter {
    pub fn create(
        path: &Path,
        inputs: &[&Path],
        metadata: &[(String, Value)],
        tensors: &[TensorSpec<'_>],
    ) -> Result<Self> {
        let alignment = validate_specs(path, metadata, tensors, None)?;
        let sizes: Vec<u64> = tensors
            .iter()
            .map(|t| {
                t.ggml_type
                    .bytes_for(t.dims.iter().product())
                    .expect("validated")
            })
            .collect();
        let mut out = AtomicFile::create(path, inputs)?;
        let mut w = Counting {
            inner: &mut out,
            n: 0,
        };
        write_header(&mut w, metadata, tensors, &sizes, alignment)
            .map_err(|e| Error::write(path, "writing GGUF", e))?;
        let n = w.n;
        Ok(GgufStreamWriter {
            out,
            path: path.to_path_buf(),
            n,
            alignment,
            sizes,
            names: tensors.iter().map(|t| t.name.to_string()).collect(),
            next: 0,
            part: 0,
        })
    }

    /// The next tensor's bytes (in the order of `create`'s list).
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        self.write_part(data)?;
        self.end_tensor()
    }

    /// Part of the next tensor's bytes: a converter writes a large tensor a slice of rows at a
    /// time, then calls [`GgufStreamWriter::end_tensor`].
    pub fn write_part(&mut self, data: &[u8]) -> Result<()> {
        let want = self.current_size()?;
        if self.part + data.len() as u64 > want {
            return Err(self.bad(format!("needs {want} bytes, got more")));
        }
        self.out
            .write_all(data)
            .map_err(|e| Error::write(&self.path, "writing GGUF", e))?;
        self.part += data.len() as u64;
        self.n += data.len() as u64;
        Ok(())
    }

    /// Ends the current tensor: checks its size and pads to the alignment.
    pub fn end_tensor(&mut self) -> Result<()> {
        let want = self.current_size()?;
        if self.part != want {
            return Err(self.bad(format!("needs {want} bytes, got {}", self.part)));
        }
        let mut w = Counting {
            inner: &mut self.out,
            n: self.n,
        };
        pad(&mut w, self.alignment).map_err(|e| Error::write(&self.path, "writing GGUF", e))?;
        self.n = w.n;
        self.part = 0;
        self.next += 1;
        Ok(())
    }

    fn current_size(&self) -> Result<u64> {
        self.sizes
            .get(self.next)
            .copied()
            .ok_or_else(|| self.bad("more tensors than declared".into()))
    }

    fn bad(&self, reason: String) -> Error {
        Error::InvalidTensor {
            path: self.path.clone(),
            tensor: self.names.get(self.next).cloned().unwrap_or_default(),
            reason,
        }
    }

    /// Checks every tensor was written, then syncs and renames. Returns the bytes written.
    pub fn finish(self) -> Result<u64> {
        crate::output::check_all_written(&self.path, self.next, self.sizes.len())?;
        self.out.commit()?;
        Ok(self.n)
    }
}

/// Writes a GGUF file to `path` atomically, refusing to overwrite any of `inputs`.
/// Returns the number of bytes written.
pub fn write_gguf_file(
    path: &Path,
    inputs: &[&Path],
    metadata: &[(String, Value)],
    tensors: &[TensorToWrite<'_>],
) -> Result<u64> {
    let alignment = validate(path, metadata, tensors)?;
    let mut out = AtomicFile::create(path, inputs)?;
    let n = write_gguf_unchecked(&mut out, metadata, tensors, alignment)
        .map_err(|e| Error::write(path, "writing GGUF", e))?;
    out.commit()?;
    Ok(n)
}

/// Writes a GGUF file to any writer. Returns the number of bytes written.
pub fn write_gguf<W: Write>(
    w: &mut W,
    metadata: &[(String, Value)],
    tensors: &[TensorToWrite<'_>],
) -> Result<u64> {
    let alignment = validate(Path::new("<stream>"), metadata, tensors)?;
    write_gguf_unchecked(w, metadata, tensors, alignment)
        .map_err(|e| Error::write(Path::new("<stream>"), "writing GGUF", e))
}

/// Checks what a reader would check, so Frugal never writes a file it would refuse to read.
fn validate(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorToWrite<'_>],
) -> Result<u64> {
    let specs: Vec<TensorSpec> = tensors.iter().map(TensorSpec::from).collect();
    let lens: Vec<u64> = tensors.iter().map(|t| t.data.len() as u64).collect();
    validate_specs(path, metadata, &specs, Some(&lens))
}

/// [`validate`] on tensor descriptions, with their data lengths when known.
fn validate_specs(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorSpec<'_>],
    lens: Option<&[u64]>,
) -> Result<u64> {
    let bad = |reason: String| Error::InvalidOutput {
        path: path.to_path_buf(),
        reason,
    };
    let mut keys = HashSet::new();
    for (k, _) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(bad(format!("duplicate metadata key `{k}`")));
        }
        if k.len() > MAX_NAME_LEN * 64 {
            return Err(bad(format!(
                "metadata key of {} bytes is longer than {}",
                k.len(),
                MAX_NAME_LEN * 64
            )));
        }
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(bad(format!(
                "general.alignment must be a power-of-two u32, not {}",
                v.summary()
            )))
        }
    };
    let mut names = HashSet::new();
    for (i, t) in tensors.iter().enumerate() {
        let bad_t = |reason: String| Error::InvalidTensor {
            path: path.to_path_buf(),
            tensor: t.name.to_string(),
            reason,
        };
        if !names.insert(t.name) {
            return Err(bad_t("duplicate tensor name".into()));
        }
        if t.name.len() > MAX_NAME_LEN {
            return Err(bad_t(format!("name longer than {MAX_NAME_LEN} bytes")));
        }
        if t.dims.len() > MAX_DIMS {
            return Err(bad_t(format!(
                "{} dimensions (at most {MAX_DIMS})",
                t.dims.len()
            )));
        }
        let info = t
            .ggml_type
            .info()
            .ok_or_else(|| bad_t(format!("unknown ggml type {}", t.ggml_type.0)))?;
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % info.block_size != 0 {
            return Err(bad_t(format!(
                "row length {ne0} is not a multiple of {}'s block size {}",
                info.name, info.block_size
            )));
        }
        let n: Option<u64> = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64);
        let want = n
            .and_then(|n| t.ggml_type.bytes_for(n))
            .ok_or_else(|| bad_t("size overflows".into()))?;
        if let Some(got) = lens.map(|l| l[i]).filter(|&got| got != want) {
            return Err(bad_t(format!(
                "{} shape {:?} needs {want} bytes, got {got}",
                info.name, t.dims
            )));
        }
    }
    Ok(alignment)
}

fn write_gguf_unchecked<W: Write>(
    w: &mut W,
    metadata: &[(String, Value)],
    tensors: &[TensorToWrite<'_>],
    alignment: u64,
) -> io::Result<u64> {
    let mut w = Counting { inner: w, n: 0 };
    let specs: Vec<TensorSpec> = tensors.iter().map(TensorSpec::from).collect();
    let sizes: Vec<u64> = tensors.iter().map(|t| t.data.len() as u64).collect();
    write_header(&mut w, metadata, &specs, &sizes, alignment)?;
    for t in tensors {
        w.write_all(t.data)?;
        pad(&mut w, alignment)?;
    }
    w.flush()?;
    Ok(w.n)
}

/// Magic, counts, metadata, tensor infos (offsets from `sizes`), padding to the data section.
fn write_header<W: Write>(
    w: &mut Counting<'_, W>,
    metadata: &[(String, Value)],
    tensors: &[TensorSpec<'_>],
    sizes: &[u64],
    alignment: u64,
) -> io::Result<()> {
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (k, v) in metadata {
        write_str(w, k)?;
        w.write_all(&(v.value_type() as u32).to_le_bytes())?;
        write_value(w, v)?;
    }
    let mut offset = 0u64;
    for (t, &size) in tensors.iter().zip(sizes) {
        write_str(w, t.name)?;
        w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
        for d in t.dims {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&t.ggml_type.0.to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offset += size.div_ceil(alignment) * alignment;
    }
    pad(w, alignment)
}

struct Counting<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<'_, W>, alignment: u64) -> io::Result<()> {
    let n = w.n.div_ceil(alignment) * alignment - w.n;
    w.write_all(&vec![0u8; n as usize])
}

fn write_str<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value<W: Write>(w: &mut W, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_str(w, s),
        Value::Array(a) => write_array(w, a),
    }
}

fn write_array<W: Write>(w: &mut W, a: &Array) -> io::Result<()> {
    w.write_all(&(a.elem_type() as u32).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr) => {{
            // One buffered write per array keeps 50k-token vocabularies fast.
            let mut buf = Vec::with_capacity($v.len() * 8);
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf)
        }};
    }
    match a {
        Array::U8(v) => w.write_all(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => w.write_all(&v.iter().map(|&b| u8::from(b)).collect::<Vec<_>>()),
        Array::String(v) => v.iter().try_for_each(|s| write_str(w, s)),
        Array::Array(v) => v.iter().try_for_each(|a| write_array(w, a)),
    }
}
