//! `frugal quantize` as a pipeline step: calibrate (importance matrix, GPTQ) when asked,
//! quantize, then judge the output against its input
//! (perplexity, KL divergence, same top-1 on a text not used for anything else), so that every
//! output carries its quality.

use frugal_compress::quant::gptq::Calibration;
use frugal_compress::quant::{quantize_model, Method, QuantizeOptions, QuantizeReport};
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

/// Calibration text for the importance matrix and GPTQ.
#[derive(Debug, Clone)]
pub struct CalibSpec {
    pub text: PathBuf,
    pub ctx: usize,
    /// At most this many tokens (whole chunks).
    pub max_tokens: usize,
}

/// Calibration text larger than this is refused (a token budget of millions fits easily).
const MAX_CALIB_BYTES: u64 = 256 << 20;

/// Reads and tokenizes the calibration text with `model`'s tokenizer.
pub fn load_calibration(model: &Path, spec: &CalibSpec) -> Result<Calibration, crate::Error> {
    let bad = |m: String| {
        crate::Error::Compress(frugal_compress::Error::BadCalibration(format!(
            "{}: {m}",
            spec.text.display()
        )))
    };
    let len = std::fs::metadata(&spec.text)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_CALIB_BYTES {
        return Err(bad(format!(
            "{len} bytes, more than the {MAX_CALIB_BYTES}-byte limit"
        )));
    }
    let bytes = std::fs::read(&spec.text).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 text ({e})")))?;
    let f = frugal_formats::gguf::GgufFile::open(model)?;
    Ok(Calibration::from_text(
        &f,
        &text,
        &spec.text.display().to_string(),
        spec.ctx,
        spec.max_tokens,
    )?)
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
    calib: Option<&CalibSpec>,
    method: Method,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantizeStep, crate::Error> {
    let calib = calib.map(|c| load_calibration(input, c)).transpose()?;
    let quantize = quantize_model(input, output, opts, calib.as_ref(), method, progress)?;
    let quality = eval
        .map(|e| judge(output, input, e, progress))
        .transpose()?;
    Ok(QuantizeStep { quantize, quality })
}

/// Evaluates `model` against `reference` (PPL, KLD, same top-1) as `llama-perplexity` does.
pub fn judge(
    model: &Path,
    reference: &Path,
    e: &EvalSpec,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<LmEvalReport, crate::Error> {
    let job = LmEvalFiles {
        model: model.to_path_buf(),
        reference: Some(reference.to_path_buf()),
        text: e.text.clone(),
        opts_ctx: e.ctx,
        max_chunks: e.chunks,
        load: frugal_models::llama::LoadOptions::GGML,
    };
    Ok(frugal_eval::eval_lm_files(&job, &|d, t| {
        progress("chunks", d, t)
    })?)
}

/// A pruned language model and, when asked, its evaluation against the input.
#[derive(Debug, Clone, Serialize)]
pub struct PruneStep {
    pub prune: frugal_compress::prune::GgufPruneReport,
    pub quality: Option<LmEvalReport>,
}

/// Prunes a GGUF model's decoder weights into `output`, then evaluates it against `input`.
pub fn prune_step(
    input: &Path,
    output: &Path,
    opts: &frugal_compress::prune::GgufPruneOptions,
    calib: Option<&CalibSpec>,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<PruneStep, crate::Error> {
    let calib = calib.map(|c| load_calibration(input, c)).transpose()?;
    let prune =
        frugal_compress::prune::prune_gguf(input, output, opts, calib.as_ref(), &|d, t| {
            progress("prune", d, t)
        })?;
    let quality = eval
        .map(|e| judge(output, input, e, progress))
        .transpose()?;
    Ok(PruneStep { prune, quality })
}

/// An encoder quantized to integer weights and, when asked, its evaluation on Brown passages.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderQuantizeStep {
    pub quantize: frugal_compress::quant::int::IntReport,
    pub quality: Option<frugal_eval::encoder::EncoderEvalReport>,
}

/// Where an encoder's calibration passages come from.
#[derive(Debug, Clone)]
pub enum EncoderCalib {
    /// Brown passages disjoint from the evaluation's (windows from the 9th of each document).
    Brown { passages: usize },
    /// A plain text file cut into 128-token passages.
    Text { path: PathBuf, passages: usize },
}

fn encoder_calibration(input: &Path, c: &EncoderCalib) -> Result<Vec<Vec<u32>>, crate::Error> {
    let model = frugal_models::bert::Bert::load(input, &candle_core::Device::Cpu)
        .map_err(frugal_eval::Error::from)?;
    let ids: Vec<Vec<u32>> = match c {
        EncoderCalib::Brown { passages } => {
            let docs = frugal_formats::brown::read_brown_dir(&frugal_formats::assets::brown_dir())?;
            frugal_eval::encoder::brown_passages_from(
                &docs,
                &model,
                *passages,
                128,
                frugal_eval::encoder::CALIBRATION_FIRST_WINDOW,
            )?
            .into_iter()
            .map(|i| i.ids)
            .collect()
        }
        EncoderCalib::Text { path, passages } => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                crate::Error::Compress(frugal_compress::Error::BadCalibration(format!(
                    "{}: {e}",
                    path.display()
                )))
            })?;
            frugal_eval::encoder::text_passages(&model, &text, *passages, 128)?
        }
    };
    if ids.is_empty() {
        return Err(crate::Error::Compress(
            frugal_compress::Error::BadCalibration("no calibration passage of 128 tokens".into()),
        ));
    }
    Ok(ids)
}

/// Quantizes a sentence-transformers folder (GPTQ for int4 when calibration passages are given),
/// then evaluates it against its input on `eval` Brown passages of 128 tokens (cosine to the
/// input's embeddings, 1-NN genre accuracy).
pub fn quantize_encoder_step(
    input: &Path,
    output: &Path,
    scheme: &'static frugal_compress::quant::int::IntType,
    calib: Option<&EncoderCalib>,
    eval: Option<usize>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<EncoderQuantizeStep, crate::Error> {
    let calib_ids = calib.map(|c| encoder_calibration(input, c)).transpose()?;
    let quantize = frugal_compress::quant::int::quantize_safetensors_dir(
        input,
        output,
        scheme,
        calib_ids.as_deref(),
        &|d, t| progress("tensors", d, t),
    )?;
    let brown = frugal_formats::assets::brown_dir();
    let quality = match eval {
        Some(n) if brown.exists() => Some(frugal_eval::encoder::eval_encoder_dirs(
            output,
            Some(input),
            &brown,
            frugal_eval::encoder::EncoderData::Passages { n, tokens: 128 },
        )?),
        _ => None,
    };
    Ok(EncoderQuantizeStep { quantize, quality })
}
