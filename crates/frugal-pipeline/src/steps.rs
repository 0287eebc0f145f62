//! The language-model and encoder compression steps, each the same skeleton: load the
//! calibration when asked (importance matrix, GPTQ/AWQ/SparseGPT activations), compress
//! (quantize, prune, structured prune, distil), then judge the output against its input
//! (perplexity, KL divergence, same top-1 on a text not used for anything else) and record it,
//! so that every output carries its quality. `frugal quantize|prune|distill` and recipe steps
//! call them.

use frugal_compress::quant::calibration::Calibration;
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

impl EvalSpec {
    /// Chunks of 512 tokens a compression command judges its output on.
    pub const DEFAULT_CHUNKS: usize = 8;
}

/// Calibration text for the importance matrix and GPTQ.
#[derive(Debug, Clone)]
pub struct CalibSpec {
    pub text: PathBuf,
    pub ctx: usize,
    /// At most this many tokens (whole chunks).
    pub max_tokens: usize,
    /// What reports name the text by, where it is not a file the user gave (Brown's mix
    /// written to a scratch file); the path otherwise.
    pub label: Option<String>,
}

impl CalibSpec {
    /// Calibration tokens by default (whole chunks).
    pub const DEFAULT_TOKENS: usize = 8192;
    /// Tokens per calibration chunk by default.
    pub const DEFAULT_CTX: usize = 512;

    /// The default calibration text: Brown's multi-genre mix (`frugal brown-text --files
    /// mix`: the last two files of every genre, interleaved sentence by sentence), written
    /// into `dir`, which must outlive the run. One genre's importance statistics overfit it.
    pub fn brown_mix(dir: &Path, ctx: usize, max_tokens: usize) -> Result<CalibSpec, crate::Error> {
        let sel = frugal_formats::brown::MIX;
        let (_, text) =
            frugal_formats::brown::selection_text(&frugal_formats::assets::brown_dir(), sel)?;
        let path = dir.join("brown-mix.txt");
        frugal_formats::output::write_atomic(&path, &[], |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })?;
        Ok(CalibSpec {
            text: path,
            ctx,
            max_tokens,
            label: Some(format!("Brown `{sel}`")),
        })
    }

    /// What reports name the text by.
    pub fn name(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.text.display().to_string())
    }
}

/// Calibration text larger than this is refused (a token budget of millions fits easily).
const MAX_CALIB_BYTES: u64 = 256 << 20;

/// Reads and tokenizes the calibration text with `model`'s tokenizer.
pub fn load_calibration(model: &Path, spec: &CalibSpec) -> Result<Calibration, crate::Error> {
    let text = frugal_formats::guard::read_text_capped(&spec.text, "text", MAX_CALIB_BYTES)?;
    let f = frugal_formats::gguf::GgufFile::open(model)?;
    Ok(Calibration::from_text(
        &f,
        &text,
        &spec.name(),
        spec.ctx,
        spec.max_tokens,
    )?)
}

/// What `frugal imatrix` wrote.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ImatrixStep {
    pub model: String,
    pub output: String,
    pub text: String,
    pub entries: usize,
    pub chunks: usize,
    pub chunk_size: usize,
    pub tokens: u64,
    /// Weights whose KL gain was measured and written (`--gains`; 0 without).
    pub gains: usize,
    pub seconds: f64,
}

impl ImatrixStep {
    pub fn to_text(&self) -> String {
        let gains = if self.gains > 0 {
            format!(
                ", with the input rounding and {} weights' KL gains a size budget weighs by",
                self.gains
            )
        } else {
            ", with the input rounding".to_string()
        };
        format!(
            "wrote {} ({} entries, llama.cpp's imatrix format{gains}): {} chunks of {} tokens of {} in {:.1} s",
            self.output, self.entries, self.chunks, self.chunk_size, self.text, self.seconds
        )
    }
}

/// Measures `model`'s importance matrix on the calibration text (llama-imatrix's statistic,
/// from the full-precision forward pass) and writes it in llama.cpp's format, which
/// `llama-quantize --imatrix` and `frugal quantize --imatrix` read, with Frugal's input
/// rounding beside it and, with `gains`, every weight's KL gain: what `quantize --target-bpw`
/// would otherwise measure on the text again ([`frugal_compress::quant::imatrix_file`]).
pub fn imatrix_step(
    model: &Path,
    output: &Path,
    spec: &CalibSpec,
    gains: bool,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<ImatrixStep, crate::Error> {
    use frugal_compress::quant::calibration;
    let t0 = std::time::Instant::now();
    let calib = load_calibration(model, spec)?;
    let f = frugal_formats::gguf::GgufFile::open(model)?;
    let mut m = calibration::collect_imatrix(&f, &calib, &|d, t| progress("imatrix", d, t))?;
    if gains {
        m.gains = calibration::collect_gains(&f, &calib, &|d, t| progress("gains", d, t))?;
    }
    let text = spec.text.display().to_string();
    frugal_compress::quant::imatrix_file::write_imatrix(
        output,
        &[model, &spec.text],
        &m,
        std::slice::from_ref(&text),
        calib.chunks.len() as u32,
        spec.ctx as u32,
    )?;
    Ok(ImatrixStep {
        model: model.display().to_string(),
        output: output.display().to_string(),
        text,
        entries: m.entries.len(),
        chunks: calib.chunks.len(),
        chunk_size: spec.ctx,
        tokens: m.n_tokens,
        gains: m.gains.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Quantization and, when asked, its evaluation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
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
    let (quantize, quality) = skeleton(input, output, calib, eval, progress, |calib| {
        Ok(quantize_model(
            input, output, opts, calib, method, progress,
        )?)
    })?;
    Ok(QuantizeStep { quantize, quality })
}

/// The skeleton every language-model step shares: the evaluation checked before any work, the
/// calibration text loaded (in `input`'s tokens), `compress` run with it, then the output
/// judged against `input` when `eval` is given.
fn skeleton<T>(
    input: &Path,
    output: &Path,
    calib: Option<&CalibSpec>,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
    compress: impl FnOnce(Option<&Calibration>) -> Result<T, crate::Error>,
) -> Result<(T, Option<LmEvalReport>), crate::Error> {
    check_eval(input, eval)?;
    let calib = calib.map(|c| load_calibration(input, c)).transpose()?;
    let made = compress(calib.as_ref())?;
    let quality = eval
        .map(|e| judge(output, input, e, progress))
        .transpose()?;
    Ok((made, quality))
}

/// Checks before any work that the evaluation `e` of a model made from `model` can run (its
/// text long enough for two chunks in `model`'s tokens, its ctx valid).
pub fn check_eval(model: &Path, e: Option<&EvalSpec>) -> Result<(), crate::Error> {
    match e {
        None => Ok(()),
        Some(e) => frugal_eval::lm::check_eval_text(model, &e.text, e.ctx).map_err(|error| {
            crate::Error::EvalText {
                path: e.text.clone(),
                error: Box::new(error),
            }
        }),
    }
}

/// Evaluates `model` against `reference` (PPL, KLD, same top-1) as `llama-perplexity` does.
pub fn judge(
    model: &Path,
    reference: &Path,
    e: &EvalSpec,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<LmEvalReport, crate::Error> {
    judge_cached(model, reference, e, None, progress)
}

/// [`judge`], the reference's logits taken from and kept in `cache` (made for `reference`).
pub fn judge_cached(
    model: &Path,
    reference: &Path,
    e: &EvalSpec,
    cache: Option<&frugal_eval::ReferenceCache>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<LmEvalReport, crate::Error> {
    let job = LmEvalFiles {
        model: model.to_path_buf(),
        reference: Some(reference.to_path_buf()),
        text: e.text.clone(),
        opts_ctx: e.ctx,
        max_chunks: e.chunks,
        load: frugal_models::llama::LoadOptions::GGML,
        split: frugal_eval::RankSplit::Chunks,
    };
    Ok(frugal_eval::eval_lm_files_cached(&job, cache, &|d, t| {
        progress("block passes and chunks", d, t)
    })?)
}

/// A pruned language model and, when asked, its evaluation against the input.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PruneStep {
    pub prune: frugal_compress::prune::GgufPruneReport,
    /// The input and output files' sizes.
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub quality: Option<LmEvalReport>,
}

fn file_len(p: &Path) -> Result<u64, crate::Error> {
    Ok(std::fs::metadata(p)
        .map_err(|e| frugal_formats::Error::io(p, "reading metadata of", e))?
        .len())
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
    let (prune, quality) = skeleton(input, output, calib, eval, progress, |calib| {
        Ok(frugal_compress::prune::prune_gguf(
            input,
            output,
            opts,
            calib,
            &|d, t| progress("prune", d, t),
        )?)
    })?;
    Ok(PruneStep {
        prune,
        input_bytes: file_len(input)?,
        output_bytes: file_len(output)?,
        quality,
    })
}

/// A model shrunk by removing MLP neurons, attention heads or blocks and, when asked, its
/// evaluation against the input.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct StructuredPruneStep {
    pub input: String,
    pub output: String,
    pub options: frugal_compress::structured::StructuredOptions,
    pub calibration_tokens: Option<usize>,
    pub prune: frugal_compress::structured::StructuredReport,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    pub quality: Option<LmEvalReport>,
}

/// Removes MLP neurons, attention heads or blocks from a GGUF model into `output`, then
/// evaluates it against `input`.
pub fn structured_prune_step(
    input: &Path,
    output: &Path,
    opts: &frugal_compress::structured::StructuredOptions,
    calib: Option<&CalibSpec>,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<StructuredPruneStep, crate::Error> {
    let t0 = std::time::Instant::now();
    let mut seconds = 0.0;
    let ((prune, output_bytes, calibration_tokens), quality) =
        skeleton(input, output, calib, eval, progress, |calib| {
            let (prune, bytes) = frugal_compress::structured::prune_structured_gguf(
                input,
                output,
                opts,
                calib,
                &|d, t| progress("prune", d, t),
            )?;
            seconds = t0.elapsed().as_secs_f64();
            Ok((prune, bytes, calib.map(|c| c.n_tokens())))
        })?;
    Ok(StructuredPruneStep {
        input: input.display().to_string(),
        output: output.display().to_string(),
        options: *opts,
        calibration_tokens,
        prune,
        input_bytes: file_len(input)?,
        output_bytes,
        seconds,
        quality,
    })
}

/// An encoder quantized to integer weights and, when asked, its evaluation on Brown passages.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
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
            let text =
                frugal_formats::guard::read_text_capped(path, "calibration text", MAX_CALIB_BYTES)?;
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

/// `frugal distill` for language models: which student, from which teacher, on which text.
#[derive(Debug, Clone)]
pub struct LmDistillJob {
    pub student: PathBuf,
    pub teacher: PathBuf,
    /// Training text, cut into sequences of `ctx` tokens (at most `max_tokens` in all).
    pub text: CalibSpec,
    pub out: PathBuf,
    pub opts: frugal_compress::lm_distill::LmDistillOptions,
    /// Continue from `OUT.checkpoint` (written after every epoch) when it exists.
    pub resume: bool,
    /// A checkpoint from another run (other settings, data or student file) is deleted and
    /// training starts afresh, instead of being refused (what a recipe re-run wants).
    pub discard_stale: bool,
    /// The memory budget (`--max-memory`; default what the machine has).
    pub max_memory: Option<u64>,
}

/// What LM distillation did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LmDistillStep {
    pub student: String,
    pub teacher: String,
    pub out: String,
    pub opts: frugal_compress::lm_distill::LmDistillOptions,
    pub sequences: usize,
    pub tokens: usize,
    pub teacher_cache_bytes: usize,
    pub teacher_seconds: f64,
    pub train_seconds: f64,
    pub tokens_per_second: f64,
    pub steps: Vec<frugal_compress::lm_distill::LmStepRecord>,
    pub output_bytes: u64,
    /// The output against the teacher.
    pub quality: Option<LmEvalReport>,
}

/// Where a distillation (of a language model or a classifier) writing `out` keeps its
/// checkpoint: `OUT.checkpoint`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

/// Distils the student GGUF from the teacher GGUF on text with a checkpoint after every epoch
/// (`OUT.checkpoint`), writes the student with its trained MLP weights (F32, everything else as
/// it was) to `job.out` atomically, removes the checkpoint, then evaluates the output against
/// the teacher.
pub fn lm_distill_step(
    job: &LmDistillJob,
    eval: Option<&EvalSpec>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<LmDistillStep, crate::Error> {
    use frugal_compress::lm_distill::{distill_lm, teacher_top_k};
    use frugal_compress::rewrite::Replacement;
    use frugal_formats::gguf::GgufFile;
    use frugal_models::llama::{Llama, LoadOptions};
    check_eval(&job.student, eval)?;
    let dev = candle_core::Device::Cpu;
    let me = frugal_eval::Error::from;
    let sf = GgufFile::open(&job.student)?;
    let tf = GgufFile::open(&job.teacher)?;
    let n_vocab = |f: &GgufFile| {
        frugal_models::llama::LlamaConfig::from_gguf(f)
            .map(|c| c.n_vocab)
            .map_err(me)
    };
    let (sv, tv) = (n_vocab(&sf)?, n_vocab(&tf)?);
    if tv != sv {
        return Err(crate::Error::Compress(frugal_compress::Error::BadOptions(
            format!("the teacher's vocabulary ({tv}) is not the student's ({sv})"),
        )));
    }
    let calib = load_calibration(&job.student, &job.text)?;
    let tokens = calib.n_tokens();
    let longest = calib.chunks.iter().map(Vec::len).max().unwrap_or(0);
    let plan = frugal_compress::lm_distill::memory_plan(
        &sf,
        &tf,
        calib.chunks.len(),
        longest,
        job.opts.top_k,
    )?;
    crate::jobs::check_memory(
        &crate::jobs::with_judge_plan(plan, &job.teacher, eval)?,
        job.max_memory,
        "a smaller student (`frugal prune --structured` shrinks one), shorter sequences (--ctx) or fewer of them (--max-tokens)",
    )?;
    let t0 = std::time::Instant::now();
    // The teacher first, alone: its weights read in place from its file (as it is served),
    // its cache kept and the model dropped before the student is decoded for training.
    let cache = {
        let teacher = Llama::load(&tf, LoadOptions::KERNELS, &dev).map_err(me)?;
        teacher_top_k(&teacher, calib.chunks, job.opts.top_k, &|d, t| {
            progress("teacher", d, t)
        })?
    };
    let teacher_seconds = t0.elapsed().as_secs_f64();
    // The student's frozen weights (attention, embedding, output) stay in its file's map,
    // decoded one at a time for a product and its gradient; its MLP weights are decoded into
    // the trained variables.
    let mut student = Llama::load(&sf, LoadOptions::KERNELS, &dev).map_err(me)?;
    let t1 = std::time::Instant::now();
    let first_step = std::cell::Cell::new(None::<usize>);
    let ck_path = checkpoint_path(&job.out);
    // The student's fingerprint: its size and modification time (a re-written file differs).
    let student_id = {
        let m = std::fs::metadata(&job.student)
            .map_err(|e| frugal_formats::Error::io(&job.student, "reading metadata of", e))?;
        let t = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{} bytes, modified {t}", m.len())
    };
    if job.resume
        && job.discard_stale
        && ck_path.exists()
        && !frugal_compress::lm_distill::checkpoint_matches(
            &ck_path,
            &cache,
            &job.opts,
            &student_id,
        )?
    {
        let _ = std::fs::remove_file(&ck_path);
    }
    let ck = frugal_compress::distill::Checkpointing {
        path: &ck_path,
        resume: job.resume,
        stop_after: None,
    };
    let per_step = tokens as f64 / cache.seqs.len().max(1) as f64;
    let steps = distill_lm(
        &mut student,
        &student_id,
        &cache,
        &job.opts,
        Some(&ck),
        &|d, t, loss| {
            let rate = per_step / t1.elapsed().as_secs_f64().max(1e-9);
            // Counted from this process's start (a resumed run's first steps are not redone).
            let done_here = d.saturating_sub(first_step.get().unwrap_or_else(|| {
                first_step.set(Some(d - 1));
                d - 1
            }));
            progress(
                &format!(
                    "distil: loss {loss:.4}, {:.0} tokens/s",
                    rate * done_here as f64
                ),
                d,
                t,
            )
        },
    )?;
    let train_seconds = t1.elapsed().as_secs_f64();
    // Write: trained MLP weights as F32, the rest as the student had it.
    let mut trained = std::collections::HashMap::new();
    for b in &student.blocks {
        for l in [&b.gate, &b.up, &b.down] {
            let v: Vec<f32> = l
                .weight_f32()
                .and_then(|w| Ok(w.flatten_all()?.to_vec1()?))
                .map_err(me)?;
            trained.insert(l.name.clone(), Replacement::same_shape(&sf, &l.name, v));
        }
    }
    let inputs = [job.student.as_path(), job.teacher.as_path()];
    // Every rank holds the same student: rank 0 writes it; the others wait for the file (the
    // evaluation that follows reads it on every rank).
    let output_bytes = if frugal_dist::is_root() {
        let n = frugal_compress::rewrite::write_gguf_with_f32(
            &sf,
            &job.out,
            &inputs,
            &sf.header.metadata,
            &trained,
        )?;
        let _ = std::fs::remove_file(&ck_path);
        n
    } else {
        0
    };
    frugal_dist::world().barrier();
    let quality = eval
        .map(|e| judge(&job.out, &job.teacher, e, progress))
        .transpose()?;
    Ok(LmDistillStep {
        student: job.student.display().to_string(),
        teacher: job.teacher.display().to_string(),
        out: job.out.display().to_string(),
        opts: job.opts.clone(),
        sequences: cache.seqs.len(),
        tokens,
        teacher_cache_bytes: cache.bytes(),
        teacher_seconds,
        train_seconds,
        tokens_per_second: (tokens * job.opts.epochs) as f64 / train_seconds.max(1e-9),
        steps,
        output_bytes,
        quality,
    })
}
