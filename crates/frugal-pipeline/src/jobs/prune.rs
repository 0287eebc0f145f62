//! `frugal prune`: a GGUF decoder's weights zeroed (magnitude, Wanda, SparseGPT; unstructured
//! or N:M) or whole units removed (MLP neurons, attention heads, blocks); a CNN classifier's by
//! global magnitude or by channel, recovered by distillation from its unpruned self.

use super::{mib, opt_input, scratch, EvalText, Job, Progress, ToText};
use crate::classifier::{PruneClassifierJob, PruneClassifierStep};
use crate::data::Dataset;
use crate::kind::ModelKind;
use crate::steps::{self, CalibSpec, EvalSpec, PruneStep, StructuredPruneStep};
use crate::Error;
use frugal_compress::distill::TrainOptions;
use frugal_compress::prune::{GgufPruneOptions, Pattern, PruneOptions, Scope, Score};
use frugal_compress::structured::{Structure, StructuredOptions};
use frugal_formats::guard::{Expect, IoPlan};
use serde::Serialize;
use std::path::PathBuf;

frugal_formats::name_table! {
    "lowercase";
    /// How a pruned CNN's weights are stored.
    #[derive(Default)]
    pub enum Storage {
        /// Values plus a bitmask (or N:M positions for an N:M pattern), decoded exactly on load.
        #[default]
        Sparse,
        /// Plain F32.
        Dense,
    }
}

/// What to prune, how.
#[derive(Debug, Clone)]
pub struct Prune {
    pub input: PathBuf,
    pub output: PathBuf,
    pub score: Score,
    /// Fraction of each weight set to zero (of the units, for a structured prune).
    pub sparsity: f64,
    pub pattern: Pattern,
    pub structure: Option<Structure>,
    pub calib: Option<PathBuf>,
    pub calib_tokens: usize,
    pub calib_ctx: usize,
    /// SparseGPT's dampening of H, a fraction of its mean diagonal.
    pub damp: f64,
    pub eval: EvalText,
    pub eval_chunks: usize,
    /// CNN classifiers: the data set of the recovery and the evaluation.
    pub data: Option<Dataset>,
    /// CNN classifiers: the recovery (epochs, peak learning rate, seed).
    pub recover: TrainOptions,
    pub storage: Storage,
    /// GGUF models: the memory budget (`None`: what the machine has available).
    pub max_memory: Option<u64>,
}

impl Prune {
    /// The fraction pruned by default.
    pub const SPARSITY: f64 = 0.5;
    /// The score by default.
    pub const SCORE: Score = Score::SparseGpt;

    /// `input` to `output`, every other setting its default.
    pub fn new(input: PathBuf, output: PathBuf) -> Prune {
        Prune {
            input,
            output,
            score: Prune::SCORE,
            sparsity: Prune::SPARSITY,
            pattern: Pattern::Unstructured,
            structure: None,
            calib: None,
            calib_tokens: CalibSpec::DEFAULT_TOKENS,
            calib_ctx: CalibSpec::DEFAULT_CTX,
            damp: frugal_compress::quant::gptq::GptqOptions::default().damp,
            eval: EvalText::default(),
            eval_chunks: EvalSpec::DEFAULT_CHUNKS,
            data: None,
            recover: Prune::recovery(),
            storage: Storage::default(),
            max_memory: None,
        }
    }

    /// A pruned CNN's recovery by default: 3 epochs at a peak learning rate of 1e-3, batch
    /// 128, no warm-up.
    pub fn recovery() -> TrainOptions {
        TrainOptions {
            epochs: 3,
            batch: 128,
            lr: 1e-3,
            warmup: 0.0,
            ..Default::default()
        }
    }
}

/// What `frugal prune` did, by model kind and kind of prune.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PruneOutcome {
    Unstructured(PruneStep),
    Structured(StructuredPruneStep),
    Classifier(PruneClassifierStep),
}

impl Job for Prune {
    type Report = PruneOutcome;
    const KIND: &'static str = "prune";
    const METERED: bool = true;

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        p.add_input("input model", &self.input, Expect::FileOrDir);
        opt_input(&mut p, "--calib", self.calib.as_deref());
        opt_input(&mut p, "--eval-text", self.eval.file());
        p.output("output", &self.output);
        p
    }

    fn run(&self, progress: Progress) -> Result<PruneOutcome, Error> {
        if ModelKind::detect(&self.input) == ModelKind::Classifier {
            return self.classifier(progress).map(PruneOutcome::Classifier);
        }
        if self.score != Score::Magnitude && self.calib.is_none() {
            return Err(Error::Usage(
                "Wanda and SparseGPT need calibration text: --calib FILE".into(),
            ));
        }
        let tmp = scratch()?;
        let spec = self.eval.spec(self.eval_chunks, tmp.path())?;
        let calib = self.calib.clone().map(|text| CalibSpec {
            text,
            ctx: self.calib_ctx,
            max_tokens: self.calib_tokens,
            label: None,
        });
        self.check_memory(calib.as_ref(), spec.as_ref())?;
        let Some(structure) = self.structure else {
            let opts = GgufPruneOptions {
                score: self.score,
                sparsity: self.sparsity,
                pattern: self.pattern,
                damp: self.damp,
            };
            let s = steps::prune_step(
                &self.input,
                &self.output,
                &opts,
                calib.as_ref(),
                spec.as_ref(),
                progress,
            )?;
            return Ok(PruneOutcome::Unstructured(s));
        };
        if self.pattern != Pattern::Unstructured {
            return Err(Error::Usage(
                "--structure removes whole units; it takes no --pattern".into(),
            ));
        }
        let unit = structure.unit().ok_or_else(|| {
            Error::Usage("--structure channels is for CNN classifiers (.safetensors)".into())
        })?;
        let opts = StructuredOptions {
            unit,
            score: self.score,
            fraction: self.sparsity,
            multiple: 32,
            damp: self.damp,
        };
        let s = steps::structured_prune_step(
            &self.input,
            &self.output,
            &opts,
            calib.as_ref(),
            spec.as_ref(),
            progress,
        )?;
        Ok(PruneOutcome::Structured(s))
    }
}

impl Prune {
    /// Prints the plan of a GGUF model's prune and refuses it over the budget, before any
    /// work: the score's calibration or the largest weight, every pruned weight kept in F32,
    /// for heads the attention output's Gram matrix of every block; then the evaluation.
    fn check_memory(
        &self,
        calib: Option<&CalibSpec>,
        spec: Option<&EvalSpec>,
    ) -> Result<(), Error> {
        let f = frugal_formats::gguf::GgufFile::open(&self.input)?;
        let mut plan =
            frugal_compress::prune::memory_plan(&f, super::calib_shape(calib), self.score)?;
        if self.structure == Some(Structure::AttnHeads) && self.score != Score::Magnitude {
            let c = frugal_models::llama::LlamaConfig::from_gguf(&f)
                .map_err(frugal_compress::Error::from)?;
            let qd = (c.n_head * c.head_dim()) as u64;
            plan.add(
                "the attention output's Gram matrix of every block",
                8 * qd * qd * c.n_layer as u64,
            );
        }
        drop(f);
        super::check_memory(
            &super::with_judge_plan(plan, &self.input, spec)?,
            self.max_memory,
            "pruned weights are held in F32 until written, so the whole model's weights must fit (pass --max-memory if the machine has more)",
        )
    }

    fn classifier(&self, progress: Progress) -> Result<PruneClassifierStep, Error> {
        let Some(data) = self.data else {
            return Err(Error::Usage(
                "a CNN classifier is recovered and evaluated on a data set: --data fashion-mnist|digits".into(),
            ));
        };
        if self.score != Score::Magnitude {
            return Err(Error::Usage(
                "CNN classifiers are pruned by global magnitude (--method magnitude) and recovered by distillation".into(),
            ));
        }
        let channels = match self.structure {
            None => false,
            Some(Structure::Channels) if self.pattern != Pattern::Unstructured => {
                return Err(Error::Usage(
                    "--structure channels removes whole channels; it takes no --pattern".into(),
                ))
            }
            Some(Structure::Channels) => true,
            Some(_) => {
                return Err(Error::Usage(
                    "a CNN classifier takes --structure channels (or none)".into(),
                ))
            }
        };
        let job = PruneClassifierJob {
            input: self.input.clone(),
            output: self.output.clone(),
            data,
            prune: PruneOptions {
                score: self.score,
                sparsity: self.sparsity,
                pattern: self.pattern,
                scope: Scope::Global,
            },
            recover: self.recover.clone(),
            sparse_storage: self.storage == Storage::Sparse,
            channels,
        };
        let epochs = self.recover.epochs;
        crate::classifier::prune_classifier(&job, &|e, b, n, loss| {
            progress(
                &format!("recovery epoch {e}, loss {loss:.4}"),
                (e - 1) * n + b,
                n * epochs,
            )
        })
    }
}

impl ToText for PruneOutcome {
    fn to_text(&self) -> String {
        let mut t = String::new();
        let quality = |t: &mut String, q: Option<&frugal_eval::LmEvalReport>| {
            if let Some(e) = q {
                *t += &format!("quality against the input:\n{}", e.to_text());
            }
        };
        match self {
            PruneOutcome::Unstructured(step) => {
                let r = &step.prune;
                t += &format!(
                    "wrote {} ({:?}, {:?}, {} layers at {:.2} % sparsity, {:.2} MiB) in {:.2} s\n",
                    r.output,
                    r.options.score,
                    r.options.pattern,
                    r.layers.len(),
                    100.0 * r.sparsity,
                    mib(r.output_bytes),
                    r.seconds
                );
                quality(&mut t, step.quality.as_ref());
            }
            PruneOutcome::Structured(s) => {
                let (before, after) = s.prune.parameters();
                t += &format!(
                    "wrote {} ({:?}): {}, {} → {} parameters, {:.2} MiB, in {:.2} s\n",
                    s.output,
                    s.options.score,
                    s.prune.summary(),
                    before,
                    after,
                    mib(s.output_bytes),
                    s.seconds
                );
                quality(&mut t, s.quality.as_ref());
            }
            PruneOutcome::Classifier(s) => t += &classifier_text(s),
        }
        t
    }
}

fn classifier_text(s: &PruneClassifierStep) -> String {
    let mut t = String::new();
    if let Some(p) = &s.prune {
        t += &format!(
            "wrote {} at {:.2} % sparsity ({:?}) after {} recovery epochs in {:.1} s\n",
            s.output,
            100.0 * p.sparsity,
            p.options.pattern,
            s.epochs.len(),
            s.seconds
        );
    }
    if let Some(c) = &s.channels {
        t += &format!(
            "wrote {}: conv channels {:?} → {:?}, {} → {} parameters, after {} recovery epochs in {:.1} s\n",
            s.output,
            c.conv_channels_before,
            c.conv_channels_after,
            c.parameters_before,
            c.parameters_after,
            s.epochs.len(),
            s.seconds
        );
    }
    t += &format!(
        "stored {}: {} bytes ({:.1} % of the input's {} bytes)\n",
        s.storage,
        s.output_bytes,
        100.0 * s.output_bytes as f64 / s.input_bytes.max(1) as f64,
        s.input_bytes
    );
    t += &format!(
        "test accuracy {:.2} % (input {:.2} %, drop {:.2} points; 95 % CI {:.2}–{:.2})\n",
        s.eval.accuracy_pct,
        s.input_eval.accuracy_pct,
        s.accuracy_drop_pt,
        s.eval.ci95_pct.0,
        s.eval.ci95_pct.1
    );
    t
}
