//! The models crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Formats(#[from] frugal_formats::Error),
    #[error("tensor computation failed")]
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
    /// A part a streaming pass did not load (a program error, not the input's).
    #[error("the model was loaded without its {0}")]
    NotLoaded(&'static str),
    /// A run whose memory plan exceeds its budget, refused before any work.
    #[error("this run needs about {needed} of memory ({plan}), more than {budget}; {remedy}", needed = crate::memory::gib(*needed), budget = budget)]
    OverBudget {
        needed: u64,
        plan: String,
        budget: crate::memory::Budget,
        remedy: String,
    },
    /// A run whose scratch files would not fit the free space of their folder.
    #[error("this run's scratch files need about {needed} in {dir} ({plan}), which has {free} free; free some space or pass --max-memory with more memory", needed = crate::memory::gib(*needed), free = crate::memory::gib(*free), dir = dir.display())]
    OverDisk {
        needed: u64,
        free: u64,
        dir: PathBuf,
        plan: String,
    },
    /// A working buffer larger than the address space.
    #[error("a scratch buffer of {len} values is larger than memory can address")]
    ScratchTooLarge { len: usize },
}

impl Error {
    /// True when the input (a file, its metadata, a token) is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Formats(f) => f.is_bad_input(),
            Error::Candle(_) | Error::NotLoaded(_) => false,
            _ => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
