//! `frugal quantize` as a pipeline step: quantize, then judge the output against its input
//! (perplexity, KL divergence, same top-1 on a text not used for anything else), so that every
//! output carries its quality.

use frugal_compress::quant::{quantize_gguf, QuantizeOptions, QuantizeReport};
use frugal_eval::{LmEvalFiles, LmEvalReport};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How to evaluate the output.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    pub text: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
}

/// Quantization and, when asked, its evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeStep {
    pub quantize: QuantizeReport,
    pub quality: Option<LmEvalReport>,
}

/// Quantizes `input` into `output`, then evaluates `output` against `input` when `eval` is given.
pub fn quantize_step(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantizeStep, crate::Error> {
    let quantize = quantize_gguf(input, output, opts, &|d, t| progress("tensors", d, t))?;
    let quality = match eval {
        None => None,
        Some(e) => {
            let job = LmEvalFiles {
                model: output.to_path_buf(),
                reference: Some(input.to_path_buf()),
                text: e.text.clone(),
                opts_ctx: e.ctx,
                max_chunks: e.chunks,
                load: frugal_models::llama::LoadOptions::GGML,
            };
            Some(frugal_eval::eval_lm_files(&job, &|d, t| {
                progress("chunks", d, t)
            })?)
        }
    };
    Ok(QuantizeStep { quantize, quality })
}
