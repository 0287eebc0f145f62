//! The GGUF reader (versions 2 and 3, little-endian), hardened against crafted files.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Every count, length,
//! dimension and offset is checked against the bytes that remain before anything is allocated,
//! so a file can never make the reader allocate much more than its own size, and a bad field is
//! reported by name and byte offset instead of panicking.

use super::value::{Array, Value, ValueType};
use super::{GgufHeader, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::error::ParseError;
use crate::gguf::GgmlType;
use std::collections::HashSet;

/// Arrays of arrays may nest at most this deep.
const MAX_ARRAY_DEPTH: usize = 8;

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A short read: the field that failed is named by the caller, who knows it.
struct Short {
    offset: usize,
    reason: String,
}

impl Short {
    fn at(self, field: impl Into<String>) -> ParseError {
        ParseError::new(field, self.offset as u64, self.reason)
    }
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.remaining() {
            return Err(Short {
                offset: self.pos,
                reason: format!(
                    "needs {n} bytes but only {} remain in the file",
                    self.remaining()
                ),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }

    /// A count of items, each at least `min_item` bytes: rejected before any allocation when the
    /// rest of the file cannot hold that many.
    fn count(&mut self, min_item: usize) -> Result<usize, Short> {
        let at = self.pos;
        let n = self.u64()?;
        let fits = self.remaining() / min_item.max(1);
        if n > fits as u64 {
            return Err(Short {
                offset: at,
                reason: format!(
                    "count {n} is impossible: the {} bytes left hold at most {fits}",
                    self.remaining()
                ),
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, max_len: usize) -> Result<String, Short> {
        let at = self.pos;
        let len = self.u64()?;
        if len > max_len as u64 {
            return Err(Short {
                offset: at,
                reason: format!("string length {len} exceeds the limit of {max_len}"),
            });
        }
        let bytes = self.take(len as usize)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Short {
                offset: at + 8,
                reason: format!("string is not valid UTF-8 ({e})"),
            }),
        }
    }
}

/// Parses the header, metadata and tensor table of a GGUF file held in `buf` (the whole file),
/// and checks every tensor's data range against the file size.
pub fn parse_header(buf: &[u8]) -> Result<GgufHeader, ParseError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(4).map_err(|e| e.at("header.magic"))?;
    if magic != b"GGUF" {
        return Err(ParseError::new(
            "header.magic",
            0,
            format!(
                "expected the magic `GGUF`; {}",
                crate::guard::describe_start(magic)
            ),
        ));
    }
    let version = c.u32().map_err(|e| e.at("header.version"))?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(ParseError::new(
                "header.version",
                4,
                "GGUF version 1 (32-bit counts) is not supported",
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(ParseError::new(
                "header.version",
                4,
                "big-endian GGUF files are not supported",
            ))
        }
        v => {
            return Err(ParseError::new(
                "header.version",
                4,
                format!("unknown version {v} (supported: 2, 3)"),
            ))
        }
    }
    // A tensor info takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = c.count(24).map_err(|e| e.at("header.tensor_count"))?;
    // A key-value pair takes at least 8 (key) + 4 (type) + 1 (value) bytes.
    let n_kv = c.count(13).map_err(|e| e.at("header.metadata_kv_count"))?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut keys = HashSet::with_capacity(n_kv);
    for i in 0..n_kv {
        let key_at = c.pos as u64;
        let key = c
            .string(MAX_NAME_LEN * 64)
            .map_err(|e| e.at(format!("metadata[{i}].key")))?;
        if !keys.insert(key.clone()) {
            return Err(ParseError::new(
                format!("metadata[{i}].key"),
                key_at,
                format!("duplicate key `{key}`"),
            ));
        }
        let value = read_value(&mut c, &key, 0)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(ParseError::new(
                "general.alignment",
                0,
                format!("must be a power-of-two u32, found {}", v.summary()),
            ))
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let f = |what: &str| format!("tensor_infos[{i}].{what}");
        let name_at = c.pos as u64;
        let name = c.string(MAX_NAME_LEN).map_err(|e| e.at(f("name")))?;
        if !names.insert(name.clone()) {
            return Err(ParseError::new(
                f("name"),
                name_at,
                format!("duplicate tensor name `{name}`"),
            ));
        }
        let dims_at = c.pos as u64;
        let n_dims = c.u32().map_err(|e| e.at(f("n_dims")))?;
        if n_dims as usize > MAX_DIMS {
            return Err(ParseError::new(
                f("n_dims"),
                dims_at,
                format!("{n_dims} dimensions (at most {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims as usize {
            let at = c.pos as u64;
            let dim = c.u64().map_err(|e| e.at(f(&format!("dims[{d}]"))))?;
            n_elements = n_elements
                .checked_mul(dim)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    ParseError::new(
                        f(&format!("dims[{d}]")),
                        at,
                        format!("dimension {dim} makes the element count overflow"),
                    )
                })?;
            dims.push(dim);
        }
        let type_at = c.pos as u64;
        let ty = GgmlType(c.u32().map_err(|e| e.at(f("type")))?);
        let info = ty.info().ok_or_else(|| {
            ParseError::new(f("type"), type_at, format!("unknown ggml type id {}", ty.0))
        })?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % info.block_size != 0 {
            return Err(ParseError::new(
                f("dims[0]"),
                dims_at + 4,
                format!(
                    "row length {ne0} is not a multiple of {}'s block size {}",
                    info.name, info.block_size
                ),
            ));
        }
        let n_bytes = ty
            .bytes_for(n_elements)
            .ok_or_else(|| ParseError::new(f("dims"), dims_at, "tensor size overflows"))?;
        let off_at = c.pos as u64;
        let offset = c.u64().map_err(|e| e.at(f("offset")))?;
        if offset % alignment != 0 {
            return Err(ParseError::new(
                f("offset"),
                off_at,
                format!("offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            ggml_type: ty,
            dims,
            offset,
            n_bytes,
            info_offset: name_at,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(ParseError::new("data", header_end, format!("tensor data would start at byte {data_offset}, past the end of the {file_len}-byte file")));
    }
    let data_len = file_len.saturating_sub(data_offset);
    for (i, t) in tensors.iter().enumerate() {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|end| end > data_len) {
            return Err(ParseError::new(
                format!("tensor_infos[{i}].offset"),
                t.info_offset,
                format!(
                    "tensor `{}` ({} bytes at data offset {}) runs past the end of the file ({data_len} data bytes)",
                    t.name, t.n_bytes, t.offset
                ),
            ));
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err(ParseError::new(
                format!("tensor_infos[{}].offset", w[1]),
                b.info_offset,
                format!("tensor `{}` overlaps tensor `{}`", b.name, a.name),
            ));
        }
    }
    Ok(GgufHeader {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

fn read_value(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Value, ParseError> {
    let at = c.pos as u64;
    let id = c.u32().map_err(|e| e.at(format!("{key}.type")))?;
    let ty = ValueType::from_id(id).ok_or_else(|| {
        ParseError::new(
            format!("{key}.type"),
            at,
            format!("unknown metadata value type {id}"),
        )
    })?;
    read_typed(c, key, ty, depth)
}

fn read_typed(
    c: &mut Cursor<'_>,
    key: &str,
    ty: ValueType,
    depth: usize,
) -> Result<Value, ParseError> {
    let e = |s: Short| s.at(key.to_string());
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>().map_err(e)?[0]),
        ValueType::I8 => Value::I8(i8::from_le_bytes(c.array().map_err(e)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array().map_err(e)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array().map_err(e)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array().map_err(e)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array().map_err(e)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array().map_err(e)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array().map_err(e)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array().map_err(e)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array().map_err(e)?)),
        ValueType::Bool => Value::Bool(read_bool(c, key)?),
        ValueType::String => Value::String(c.string(c.remaining()).map_err(e)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool, ParseError> {
    let at = c.pos as u64;
    match c.array::<1>().map_err(|e| e.at(key.to_string()))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(ParseError::new(
            key,
            at,
            format!("bool must be 0 or 1, found {b}"),
        )),
    }
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, ParseError> {
    let at = c.pos as u64;
    if depth >= MAX_ARRAY_DEPTH {
        return Err(ParseError::new(
            key,
            at,
            format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
        ));
    }
    let id = c.u32().map_err(|e| e.at(format!("{key}.element_type")))?;
    let ty = ValueType::from_id(id).ok_or_else(|| {
        ParseError::new(
            format!("{key}.element_type"),
            at,
            format!("unknown metadata value type {id}"),
        )
    })?;
    let n = c
        .count(ty.min_size())
        .map_err(|e| e.at(format!("{key}.length")))?;
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let bytes = c.take(n * W).map_err(|e| e.at(key.to_string()))?;
            Array::$variant(
                bytes
                    .chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => fixed!(U8, u8),
        ValueType::I8 => fixed!(I8, i8),
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_bool(c, &format!("{key}[{i}]"))?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(
                    c.string(c.remaining())
                        .map_err(|e| e.at(format!("{key}[{i}]")))?,
                );
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let sub = format!("{key}[{i}]");
                let at = c.pos as u64;
                match read_typed(c, &sub, ValueType::Array, depth + 1)? {
                    Value::Array(a) => v.push(a),
                    _ => return Err(ParseError::new(sub, at, "expected an array")),
                }
            }
            Array::Array(v)
        }
    })
}
