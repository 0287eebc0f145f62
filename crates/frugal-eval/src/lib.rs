//! Frugal's evaluation of language models: perplexity with the protocol of llama.cpp's
//! `llama-perplexity` (chunks of `ctx` tokens, the second half of each chunk scored, standard
//! error as llama.cpp computes it), and KL divergence, top-1 agreement and Δp against a reference
//! model with llama.cpp's definitions (`--kl-divergence`). Numbers compare one to one with its
//! output. Reference: llama.cpp `tools/perplexity/perplexity.cpp`.

pub mod classifier;
pub mod encoder;
pub mod lm;

pub use lm::{
    eval_lm, eval_lm_files, eval_lm_files_cached, KldStats, LmEvalFiles, LmEvalOptions,
    LmEvalReport, LmEvalResult, LmSource, RankSplit, ReferenceCache,
};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] frugal_models::Error),
    #[error("tensor computation failed")]
    Candle(#[from] candle_core::Error),
    #[error("the text has {n_tokens} tokens; at least {needed} (2 × ctx) are needed")]
    TextTooShort { n_tokens: usize, needed: usize },
    #[error("ctx {ctx} is invalid: {reason}")]
    BadCtx { ctx: usize, reason: String },
    #[error("model and reference disagree: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Dist(#[from] frugal_dist::Error),
    #[error("the blocks cannot be split across ranks: {0}")]
    Split(String),
    #[error(
        "the {which}'s logits are not finite at chunk {chunk}, position {position} (a corrupt or overflowing model)"
    )]
    NonFinite {
        which: &'static str,
        chunk: usize,
        position: usize,
    },
}

impl Error {
    /// True when the input (model, text, options) is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Model(m) => m.is_bad_input(),
            Error::Candle(_) | Error::Dist(_) => false,
            _ => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The two-sided 95 % Student-t quantile for `df` degrees of freedom (NaN for none).
pub fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::NAN,
        1..=10 => T[df - 1],
        // Beyond 10 degrees of freedom, the value at the low end of each range: never
        // narrower than the exact interval.
        11..=20 => 2.201,
        21..=30 => 2.080,
        31..=60 => 2.040,
        61..=120 => 2.000,
        _ => 1.980,
    }
}
