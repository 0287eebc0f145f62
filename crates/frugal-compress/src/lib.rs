//! Frugal's compression methods. Today: [`quant`], round-to-nearest quantization of GGUF models
//! into ggml's legacy block formats, bit-identical to llama.cpp. Calibration-aware methods
//! (imatrix, GPTQ, AWQ), k-quants, pruning and distillation build on the same seam
//! (`frugal_models::linear`).

pub mod quant;

/// Errors of compression.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] frugal_models::Error),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("type {0} cannot be decoded for checking")]
    Unsupported(String),
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
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
