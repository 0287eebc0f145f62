//! Frugal's compression methods, through the linear-layer seam (`frugal_models::linear`):
//! [`quant`], quantization of GGUF models into ggml's block formats (bit-identical to llama.cpp
//! without calibration; importance-weighted, AWQ or GPTQ with it) and of safetensors models to
//! int8/int4; [`prune`], magnitude and Wanda pruning (unstructured or N:M); [`distill`],
//! training and knowledge distillation of classifiers.

pub mod distill;
pub mod hf;
pub mod lm_distill;
pub mod prune;
pub mod quant;
pub mod rewrite;
pub mod structured;
#[cfg(test)]
mod testutil;

/// Errors of compression.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] frugal_models::Error),
    #[error("tensor computation failed")]
    Candle(#[from] candle_core::Error),
    #[error("type {0} cannot be decoded for checking")]
    Unsupported(String),
    /// What a method cannot do for this model yet, refused before it computes a wrong answer.
    #[error("{0}")]
    NotForThisModel(String),
    #[error("calibration: {0}")]
    BadCalibration(String),
    #[error("{0}")]
    BadOptions(String),
    #[error("numerical failure: {0}")]
    Numerical(String),
    #[error(transparent)]
    Dist(#[from] frugal_dist::Error),
}

/// Refuses a model with fused weights (Phi-3's `attn_qkv`, `ffn_up` holding gate and up) for
/// `method`, which slices or trains decoder weights by name and does not split and re-join
/// fused ones yet (GPTQ, AWQ and pruning do: they treat each part as its layer).
pub(crate) fn refuse_fused(f: &frugal_formats::gguf::GgufFile, method: &str) -> Result<(), Error> {
    match frugal_models::llama::fused_tensor(f) {
        Some(t) => Err(Error::NotForThisModel(format!(
            "{method} does not split fused weights yet: `{t}` of `{}` (architecture `{}`) holds several projections; evaluation, every quantization method, pruning, layer removal and measurement run on it",
            f.path().display(),
            f.header.architecture().unwrap_or("?")
        ))),
        None => Ok(()),
    }
}

impl From<frugal_formats::Error> for Error {
    fn from(e: frugal_formats::Error) -> Self {
        Error::Model(e.into())
    }
}

impl Error {
    /// True when the input is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Model(m) => m.is_bad_input(),
            Error::BadCalibration(_) | Error::BadOptions(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
