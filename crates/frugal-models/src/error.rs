//! The models crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Formats(#[from] frugal_formats::Error),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor `{name}`: type {dtype} cannot be loaded")]
    UnsupportedType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: metadata `{key}`: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
