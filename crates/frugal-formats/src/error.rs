//! The one error type of the formats crate: every variant names the file and, for malformed input,
//! the field and byte offset that failed, so a user can tell exactly what is wrong with a file.

use std::path::{Path, PathBuf};

/// A parse failure inside a byte buffer, before the file name is known.
///
/// Parsers work on `&[u8]` (so they can be fuzzed and tested without files) and return this;
/// [`Error::malformed`] attaches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The field being read, e.g. `tensor_infos[3].dims[1]` or `header.tensor_count`.
    pub field: String,
    /// Byte offset in the file where that field starts.
    pub offset: u64,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl ParseError {
    pub fn new(field: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        ParseError {
            field: field.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field `{}` at byte {}: {}",
            self.field, self.offset, self.reason
        )
    }
}

/// Errors of the formats crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing an output failed (a full disk, a file-size limit): the work failed, not the input.
    #[error("{path}: {context}")]
    Write {
        path: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },

    #[error("{path}: {context}")]
    Io {
        path: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },

    #[error("{path}: malformed {format} file: {error}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        error: ParseError,
    },

    #[error("{path}: not a recognised model file (expected GGUF or safetensors): {reason}")]
    UnknownFormat { path: PathBuf, reason: String },

    #[error("{path}: tensor `{tensor}`: {reason}")]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    #[error("{path}: refusing to write over an input ({input})")]
    WouldOverwriteInput { path: PathBuf, input: String },

    /// An input that is missing, of the wrong kind (a device, a FIFO), too large or not text.
    #[error("{path}: {reason}")]
    InvalidInput { path: PathBuf, reason: String },

    /// An output path the user gave that cannot be written safely (a device, a FIFO, a missing
    /// folder, named twice).
    #[error("{path}: {reason}")]
    RefusedOutput { path: PathBuf, reason: String },

    #[error("{path}: already exists (Frugal does not replace a folder; remove it or choose another name)")]
    OutputExists { path: PathBuf },

    #[error("{path}: {reason}")]
    InvalidOutput { path: PathBuf, reason: String },
}

impl Error {
    pub fn io(path: &Path, context: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            context,
            source,
        }
    }

    /// A failure while writing the output `path`.
    pub fn write(path: &Path, context: &'static str, source: std::io::Error) -> Self {
        Error::Write {
            path: path.to_path_buf(),
            context,
            source,
        }
    }

    pub fn malformed(path: &Path, format: &'static str, error: ParseError) -> Self {
        Error::Malformed {
            path: path.to_path_buf(),
            format,
            error,
        }
    }

    /// True when the error is the input's fault (bad or missing file) rather than the program's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::InvalidOutput { .. } | Error::Write { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
