//! Hugging Face checkpoints in and out: [`convert`] turns a checkpoint folder into the GGUF file
//! llama.cpp's `convert_hf_to_gguf.py` writes for it, byte for byte, streaming one tensor at a
//! time; [`export`] is the inverse, a GGUF model (pruned, distilled, quantized) as a folder
//! `transformers` loads. [`metadata`] and [`vocab`] hold the converter's rules for authorship
//! metadata and tokenizers. It sits with the quantizer because `--outtype q8_0` quantizes, and
//! checkpoints stream into the quantizer from here.

pub mod convert;
pub mod export;
pub mod metadata;
pub mod view;
pub mod vocab;

use std::path::PathBuf;

/// Errors of conversion and export: each names the file and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error(transparent)]
    Formats(#[from] frugal_formats::Error),
    #[error(transparent)]
    Model(#[from] frugal_models::Error),
    #[error("{path}: `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("README.md model card: {0}")]
    Card(String),
    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{0}")]
    Unsupported(String),
}

impl HfError {
    /// Whether the input is at fault (the command exits 2), not the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HfError::Formats(e) => e.is_bad_input(),
            HfError::Model(e) => e.is_bad_input(),
            _ => true,
        }
    }
}

frugal_formats::name_table! {
    "lowercase";
    /// The tensor encoding of a converted or exported model (`--outtype`, `--dtype`): llama.cpp's
    /// converter's names. Norms, biases and other 1-D tensors stay F32, as there.
    #[allow(non_camel_case_types)]
    pub enum OutType {
        F32,
        F16,
        Bf16,
        #[serde(rename = "q8_0")]
        #[value(name = "q8_0")]
        Q8_0,
    }
}

impl OutType {
    /// The ggml type of the 2-D weights.
    pub fn ggml(self) -> frugal_formats::gguf::GgmlType {
        use frugal_formats::gguf::GgmlType as G;
        match self {
            OutType::F32 => G::F32,
            OutType::F16 => G::F16,
            OutType::Bf16 => G::BF16,
            OutType::Q8_0 => G::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` for the whole file.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Bf16 => 32,
            OutType::Q8_0 => 7,
        }
    }
}
