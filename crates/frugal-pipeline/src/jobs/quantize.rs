//! `frugal quantize`: a GGUF model to a block type or llama.cpp mix (calibrated by RTN, GPTQ,
//! AWQ), an encoder folder's or a CNN classifier's weights to int8/int4 (a CNN's per tensor
//! by a plan), each judged against its input.

use super::{mib, opt_input, scratch, EvalText, Job, Progress, ToText};
use crate::kind::ModelKind;
use crate::steps::{self, CalibSpec, EncoderCalib, EncoderQuantizeStep, EvalSpec, QuantizeStep};
use crate::Error;
use frugal_compress::quant::checkpoint::Checkpoint;
use frugal_compress::quant::gptq::GptqOptions;
use frugal_compress::quant::int::{IntReport, IntType};
use frugal_compress::quant::{Fallback, MethodName, Override, QuantizeOptions, Target};
use frugal_formats::guard::{Expect, IoPlan};
use frugal_models::memory::MemoryPlan;
use frugal_models::scratch::Placement;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to quantize, to what, how.
#[derive(Debug, Clone)]
pub struct Quantize {
    pub input: PathBuf,
    pub output: PathBuf,
    pub target: Target,
    /// One type for every weight matrix (no mix rules).
    pub pure: bool,
    pub fallback: Fallback,
    pub overrides: Vec<Override>,
    pub target_bpw: Option<f64>,
    /// CNN classifiers: each weight's scheme from this plan.
    pub plan: Option<PathBuf>,
    /// Calibration text (encoders: `brown` names Brown passages).
    pub calib: Option<PathBuf>,
    pub calib_tokens: usize,
    pub calib_ctx: usize,
    /// GGUF models: an importance matrix in llama.cpp's format (`llama-imatrix`'s output, or
    /// `frugal imatrix`'s), used as `llama-quantize --imatrix` uses it.
    pub imatrix: Option<PathBuf>,
    pub method: MethodName,
    pub gptq: GptqOptions,
    pub eval: EvalText,
    pub eval_chunks: usize,
    /// Encoders: Brown passages of 128 tokens to evaluate on.
    pub eval_passages: usize,
    /// GGUF models: the memory budget (`None`: what the machine has available).
    pub max_memory: Option<u64>,
    /// GGUF models, block-wise methods: hold the Gram sums and factorizations in unnamed
    /// files in this folder (`None`: in memory when the plan fits the budget, else in the
    /// output's folder).
    pub scratch_dir: Option<PathBuf>,
    /// GGUF models, block-wise methods: continue from the checkpoint a killed run left
    /// (`OUT.checkpoint`, saved after every block).
    pub resume: bool,
}

impl Quantize {
    /// Encoders: Brown passages of 128 tokens evaluated on by default.
    pub const EVAL_PASSAGES: usize = 500;

    /// `input` to `output` as `target`, every other setting its default.
    pub fn new(input: PathBuf, output: PathBuf, target: Target) -> Quantize {
        Quantize {
            input,
            output,
            target,
            pure: false,
            fallback: Fallback::default(),
            overrides: Vec::new(),
            target_bpw: None,
            plan: None,
            calib: None,
            calib_tokens: CalibSpec::DEFAULT_TOKENS,
            calib_ctx: CalibSpec::DEFAULT_CTX,
            imatrix: None,
            method: MethodName::default(),
            gptq: GptqOptions::default(),
            eval: EvalText::default(),
            eval_chunks: EvalSpec::DEFAULT_CHUNKS,
            eval_passages: Quantize::EVAL_PASSAGES,
            max_memory: None,
            scratch_dir: None,
            resume: false,
        }
    }

    /// Whether the run keeps a checkpoint: a block-wise method on a GGUF model.
    fn checkpointed(&self) -> bool {
        matches!(self.target, Target::Gguf(_))
            && !self.input.is_dir()
            && self.method != MethodName::Rtn
    }

    /// An encoder's `--calib brown` names the Brown corpus, not a file.
    fn brown_calib(&self) -> bool {
        self.input.is_dir()
            && self
                .calib
                .as_ref()
                .is_some_and(|c| c.as_os_str() == "brown" && !c.exists())
    }
}

/// A CNN classifier's weights quantized each by a plan.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PlannedReport {
    pub input: String,
    pub output: String,
    pub plan: String,
    /// Each weight's scheme.
    pub schemes: BTreeMap<String, String>,
    pub output_bytes: u64,
}

/// What `frugal quantize` did, by model kind.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum QuantizeOutcome {
    LanguageModel(Box<QuantizeStep>),
    Encoder(EncoderQuantizeStep),
    Classifier { quantize: IntReport },
    ClassifierPlanned { quantize: PlannedReport },
}

impl Job for Quantize {
    type Report = QuantizeOutcome;
    const KIND: &'static str = "quantize";
    const METERED: bool = true;

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        p.add_input("input model", &self.input, Expect::FileOrDir);
        opt_input(&mut p, "--plan", self.plan.as_deref());
        if !self.brown_calib() {
            opt_input(&mut p, "--calib", self.calib.as_deref());
        }
        opt_input(&mut p, "--eval-text", self.eval.file());
        opt_input(&mut p, "--imatrix", self.imatrix.as_deref());
        if let Some(d) = &self.scratch_dir {
            p.add_input("--scratch-dir", d, Expect::Dir);
        }
        if self.input.is_dir() && !frugal_compress::hf::view::is_decoder_folder(&self.input) {
            p.output_dir("output folder", &self.output);
        } else {
            p.output("output", &self.output);
            if self.checkpointed() {
                let (meta, tensors) = Checkpoint::files(&self.output);
                p.output("the checkpoint", meta)
                    .output("the checkpoint's tensors", tensors);
            }
        }
        p
    }

    fn run(&self, progress: Progress) -> Result<QuantizeOutcome, Error> {
        let kind = ModelKind::detect(&self.input);
        if self.imatrix.is_some() && matches!(self.target, Target::Int(_)) {
            return Err(Error::Usage(
                "--imatrix (llama.cpp's importance-matrix file) is for GGUF types".into(),
            ));
        }
        if self.plan.is_some() && kind != ModelKind::Classifier {
            return Err(Error::Usage(
                "--plan is for CNN classifier files (.safetensors, as `frugal tune --data` writes them)".into(),
            ));
        }
        match (self.target, kind) {
            (Target::Int(scheme), ModelKind::Encoder) => self.encoder(scheme, progress),
            (Target::Int(scheme), ModelKind::Classifier) => self.classifier(scheme),
            (Target::Gguf(_), ModelKind::Encoder) => Err(Error::Usage(format!(
                "--type {} is for GGUF models; {} is a folder (safetensors models take int8, int4-g32, int4-g64, int4-g128)",
                self.target.name(),
                self.input.display()
            ))),
            (Target::Int(s), _) => Err(Error::Usage(format!(
                "--type {} is for safetensors model folders and Frugal CNN files; {} is neither (GGUF models take the GGUF types)",
                s.name,
                self.input.display()
            ))),
            (Target::Gguf(t), _) => self.language_model(t, progress),
        }
    }
}

impl Quantize {
    fn language_model(
        &self,
        ty: &'static frugal_compress::quant::QuantType,
        progress: Progress,
    ) -> Result<QuantizeOutcome, Error> {
        let tmp = scratch()?;
        let spec = self.eval.spec(self.eval_chunks, tmp.path())?;
        let mut opts = QuantizeOptions::new(ty);
        opts.pure = self.pure;
        opts.fallback = self.fallback;
        opts.overrides = self.overrides.clone();
        opts.target_bpw = self.target_bpw;
        if let Some(path) = &self.imatrix {
            opts.imatrix = Some(frugal_compress::quant::imatrix_file::read_imatrix(path)?);
        }
        if self.checkpointed() {
            opts.checkpoint = Some(Checkpoint {
                output: self.output.clone(),
                resume: self.resume,
            });
        } else if self.resume {
            return Err(Error::Usage(
                "--resume continues a block-wise method (--method gptq, awq, awq-gptq) on a GGUF model".into(),
            ));
        }
        // A block-wise method given no text calibrates on Brown's multi-genre mix.
        let calib = match (&self.calib, self.method) {
            (Some(text), _) => Some(CalibSpec {
                text: text.clone(),
                ctx: self.calib_ctx,
                max_tokens: self.calib_tokens,
                label: None,
            }),
            (None, MethodName::Rtn) => None,
            (None, _) => Some(CalibSpec::brown_mix(
                tmp.path(),
                self.calib_ctx,
                self.calib_tokens,
            )?),
        };
        let method = self.method.with(self.gptq);
        // The plan before any work: the calibration or the rounding, then the evaluation of
        // the output; the block-wise methods' Gram sums and factorizations in memory when
        // that fits the budget, else in scratch files beside the output.
        let f = frugal_formats::gguf::GgufFile::open(&self.input)?;
        let shape = super::calib_shape(calib.as_ref());
        let budget = opts.plans_by_budget();
        let plan_in = |scratch: &Placement| -> Result<MemoryPlan, Error> {
            let mut plan = frugal_compress::quant::memory_plan(&f, shape, method, scratch)?;
            // A size budget measures every tensor's gain after the importance matrix.
            if let (true, Some((_, ctx))) = (budget, shape) {
                plan = plan.max(frugal_compress::quant::calibration::gains_memory_plan(
                    &f, ctx,
                )?);
            }
            super::with_judge_plan(plan, &self.input, spec.as_ref())
        };
        let (scratch, plan) = super::choose_placement(
            &plan_in,
            &self.output,
            self.max_memory,
            self.scratch_dir.as_deref(),
        )?;
        drop(f);
        opts.scratch = scratch;
        let remedy = if calib.is_some() {
            "fewer --calib-tokens shrink the calibration's states (pass --max-memory if the machine has more)"
        } else {
            "the largest tensor must fit decoded (pass --max-memory if the machine has more)"
        };
        super::check_memory(&plan, self.max_memory, remedy)?;
        let step = steps::quantize_step(
            &self.input,
            &self.output,
            &opts,
            calib.as_ref(),
            method,
            spec.as_ref(),
            progress,
        )?;
        Ok(QuantizeOutcome::LanguageModel(Box::new(step)))
    }

    fn encoder(
        &self,
        scheme: &'static IntType,
        progress: Progress,
    ) -> Result<QuantizeOutcome, Error> {
        if matches!(self.method, MethodName::Awq | MethodName::AwqGptq) {
            return Err(Error::Usage(
                "AWQ is implemented for Llama GGUF models; encoder int4 weights use GPTQ with --calib".into(),
            ));
        }
        let passages = self.calib_tokens / 128;
        let calib = self.calib.clone().map(|path| {
            if self.brown_calib() {
                EncoderCalib::Brown { passages }
            } else {
                EncoderCalib::Text { path, passages }
            }
        });
        let step = steps::quantize_encoder_step(
            &self.input,
            &self.output,
            scheme,
            calib.as_ref(),
            (self.eval != EvalText::Skip).then_some(self.eval_passages),
            progress,
        )?;
        Ok(QuantizeOutcome::Encoder(step))
    }

    /// A Frugal CNN classifier: its weights per output channel, or each as a plan says.
    fn classifier(&self, scheme: &'static IntType) -> Result<QuantizeOutcome, Error> {
        use frugal_compress::quant::int;
        let Some(p) = &self.plan else {
            let r = int::quantize_safetensors_file(&self.input, &self.output, scheme, &|_, _| {})?;
            return Ok(QuantizeOutcome::Classifier { quantize: r });
        };
        let listed = crate::tune_classifier::read_plan(p)?;
        let f = frugal_formats::safetensors::SafetensorsFile::open(&self.input)?;
        let all = crate::tune_classifier::plan_for(&f, p, &listed, scheme)?;
        let bytes = int::quantize_safetensors_planned(&self.input, &self.output, &all, &|_, _| {})?;
        Ok(QuantizeOutcome::ClassifierPlanned {
            quantize: PlannedReport {
                input: self.input.display().to_string(),
                output: self.output.display().to_string(),
                plan: p.display().to_string(),
                schemes: all
                    .iter()
                    .map(|(k, s)| (k.clone(), s.name.to_string()))
                    .collect(),
                output_bytes: bytes,
            },
        })
    }
}

impl ToText for QuantizeOutcome {
    fn to_text(&self) -> String {
        let mut t = String::new();
        match self {
            QuantizeOutcome::LanguageModel(step) => {
                let r = &step.quantize;
                t += &format!(
                    "wrote {} ({}, {:.2} MiB from {:.2} MiB, {:.3} bits/weight) in {:.2} s\n",
                    r.output,
                    r.target,
                    mib(r.output_bytes),
                    mib(r.input_bytes),
                    r.bits_per_weight,
                    r.seconds
                );
                if let Some(s) = r.imatrix_seconds {
                    t += &format!("of which {s:.2} s measuring the importance matrix\n");
                }
                if let Some(w) = r
                    .tensors
                    .iter()
                    .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse))
                {
                    t += &format!(
                        "largest relative RMS error: {:.4} ({})\n",
                        w.rel_rmse, w.name
                    );
                }
                if let Some(q) = &step.quality {
                    t += &format!("quality against the input:\n{}", q.to_text());
                }
            }
            QuantizeOutcome::Encoder(s) => {
                let q = &s.quantize;
                t += &format!(
                    "wrote {} ({}, {}, {} weights, {:.2} MiB from {:.2} MiB) in {:.2} s; largest relative RMS error {:.4} ({})\n",
                    q.output, q.scheme, q.method, q.n_quantized, mib(q.output_bytes),
                    mib(q.input_bytes), q.seconds, q.worst_rel_rmse.0, q.worst_rel_rmse.1
                );
                if let Some(e) = &s.quality {
                    t += &format!("quality against the input:\n{}", e.to_text());
                }
            }
            QuantizeOutcome::Classifier { quantize: r } => {
                t += &format!(
                    "wrote {} ({}, {} weights, {} bytes from {}) in {:.2} s; largest relative RMS error {:.4} ({})\n",
                    r.output, r.scheme, r.n_quantized, r.output_bytes, r.input_bytes,
                    r.seconds, r.worst_rel_rmse.0, r.worst_rel_rmse.1
                );
            }
            QuantizeOutcome::ClassifierPlanned { quantize: r } => {
                t += &format!(
                    "wrote {} ({} bytes) by the plan {}\n",
                    r.output, r.output_bytes, r.plan
                );
            }
        }
        t
    }
}
