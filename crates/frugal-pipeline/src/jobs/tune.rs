//! `frugal tune`: the smallest (or lowest-energy) quantized model within a quality limit — a
//! GGUF language model's per-tensor types, a CNN classifier's per-tensor int8/int4/F32 plan.

use super::{mib, opt_input, Job, Progress, ToText};
use crate::data::Dataset;
use crate::steps::{CalibSpec, EvalSpec};
use crate::tune::{Judged, Objective, QualityLimit, TuneJob, TuneReport};
use crate::tune_classifier::{ClassifierTuneJob, ClassifierTuneReport};
use crate::Error;
use frugal_formats::guard::{Expect, IoPlan};
use frugal_models::memory::MemoryPlan;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The quality a tuned model must keep.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// Mean KL divergence per token from the input, nats.
    MaxKld(f64),
    /// Perplexity increase over the input's, per cent.
    MaxPplIncreasePct(f64),
    /// The 99.9th-percentile KL divergence per token, nats.
    MaxKldP999(f64),
    /// Classifiers: test-accuracy drop, points.
    MaxAccuracyDropPt(f64),
    /// The policy's clause for the model's kind.
    Policy(PathBuf),
}

impl Limit {
    /// The one limit given (the command line lets at most one through).
    pub fn from_options(
        max_kld: Option<f64>,
        max_ppl_increase_pct: Option<f64>,
        max_kld_p999: Option<f64>,
        max_accuracy_drop_pt: Option<f64>,
        policy: Option<PathBuf>,
    ) -> Option<Limit> {
        max_kld
            .map(Limit::MaxKld)
            .or(max_ppl_increase_pct.map(Limit::MaxPplIncreasePct))
            .or(max_kld_p999.map(Limit::MaxKldP999))
            .or(max_accuracy_drop_pt.map(Limit::MaxAccuracyDropPt))
            .or(policy.map(Limit::Policy))
    }
}

/// What to tune.
#[derive(Debug, Clone)]
pub struct Tune {
    pub input: PathBuf,
    pub output: PathBuf,
    pub limit: Option<Limit>,
    /// Classifiers: the data set (its test images halved: search and held-out), split by seed.
    pub data: Option<Dataset>,
    pub seed: u64,
    /// Language models: the GGUF type whose rules decide which tensors are quantized.
    pub target: String,
    pub calib: Option<PathBuf>,
    pub calib_tokens: usize,
    pub calib_ctx: usize,
    /// Language models: an importance matrix in llama.cpp's format instead of one measured on
    /// the calibration text (what it lacks of Frugal's statistics is measured there).
    pub imatrix: Option<PathBuf>,
    /// Language models: the search text and the held-out texts (the result must meet the
    /// limit on each).
    pub search: Option<PathBuf>,
    pub heldout: Vec<PathBuf>,
    pub eval_chunks: usize,
    pub bpw_tolerance: f64,
    pub max_evals: usize,
    pub objective: Objective,
    pub measure_energy: bool,
    pub reference_cache_bytes: usize,
    /// Language models: the memory budget (`--max-memory`; default what the machine has).
    pub max_memory: Option<u64>,
}

impl Tune {
    /// `input` to `output`, every other setting its default (a limit still to give).
    pub fn new(input: PathBuf, output: PathBuf) -> Tune {
        Tune {
            input,
            output,
            limit: None,
            data: None,
            seed: 0,
            target: "Q4_K_M".into(),
            calib: None,
            imatrix: None,
            calib_tokens: CalibSpec::DEFAULT_TOKENS,
            calib_ctx: CalibSpec::DEFAULT_CTX,
            search: None,
            heldout: Vec::new(),
            eval_chunks: EvalSpec::DEFAULT_CHUNKS,
            bpw_tolerance: 0.1,
            max_evals: 10,
            objective: Objective::default(),
            measure_energy: true,
            reference_cache_bytes: 2048 << 20,
            max_memory: None,
        }
    }
}

/// What `frugal tune` chose, by model kind.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TuneOutcome {
    LanguageModel(Box<TuneReport>),
    Classifier(Box<ClassifierTuneReport>),
}

impl Job for Tune {
    type Report = TuneOutcome;
    const KIND: &'static str = "tune";
    const METERED: bool = true;

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        p.add_input("input model", &self.input, Expect::FileOrDir);
        if let Some(Limit::Policy(x)) = &self.limit {
            p.input("--policy", x);
        }
        opt_input(&mut p, "--calib", self.calib.as_deref());
        opt_input(&mut p, "--imatrix", self.imatrix.as_deref());
        opt_input(&mut p, "--eval", self.search.as_deref());
        for h in &self.heldout {
            p.input("--heldout", h);
        }
        p.output("output", &self.output)
            .output("the report", crate::tune::report_path(&self.output));
        if self.data.is_some() {
            p.output("the plan", crate::tune_classifier::plan_path(&self.output));
        } else {
            p.output("the recipe", crate::tune::recipe_path(&self.output));
        }
        p
    }

    fn run(&self, progress: Progress) -> Result<TuneOutcome, Error> {
        match self.data {
            Some(data) => self
                .classifier(data, progress)
                .map(|r| TuneOutcome::Classifier(Box::new(r))),
            None => self
                .language_model(progress)
                .map(|r| TuneOutcome::LanguageModel(Box::new(r))),
        }
    }
}

fn load_policy(p: &Path) -> Result<frugal_report::policy::Policy, Error> {
    frugal_report::policy::Policy::load(p).map_err(|e| Error::Usage(e.to_string()))
}

impl Tune {
    fn classifier(&self, data: Dataset, progress: Progress) -> Result<ClassifierTuneReport, Error> {
        if self.imatrix.is_some() {
            return Err(Error::Usage(
                "--imatrix (llama.cpp's importance-matrix file) is for GGUF language models".into(),
            ));
        }
        if self.objective == Objective::Energy {
            return Err(Error::Usage(
                "--objective energy is for GGUF language models; a classifier's plans are ranked by size".into(),
            ));
        }
        let max_drop_pt = match &self.limit {
            Some(Limit::MaxAccuracyDropPt(d)) => *d,
            Some(Limit::Policy(p)) => {
                let p = load_policy(p)?;
                p.number_for(Some(frugal_report::metrics::ModelKind::Classifier), "max_accuracy_drop_pt").ok_or_else(|| {
                    Error::Usage(format!("{}: no max_accuracy_drop_pt clause to tune a classifier for", p.path))
                })?
            }
            _ => {
                return Err(Error::Usage(
                    "a classifier (--data) is tuned for --max-accuracy-drop-pt or a --policy with that clause".into(),
                ))
            }
        };
        let job = ClassifierTuneJob {
            input: self.input.clone(),
            output: self.output.clone(),
            data,
            max_drop_pt,
            seed: self.seed,
            max_evals: self.max_evals,
        };
        crate::tune_classifier::tune_classifier(&job, progress)
    }

    fn language_model(&self, progress: Progress) -> Result<TuneReport, Error> {
        let (Some(search), false) = (&self.search, self.heldout.is_empty()) else {
            return Err(Error::Usage(
                "a language model is tuned with --eval and --heldout".into(),
            ));
        };
        // Without --calib: Brown's multi-genre mix, written into a scratch folder that lives
        // as long as the search.
        let tmp = super::scratch()?;
        let calib = match &self.calib {
            Some(c) => CalibSpec {
                text: c.clone(),
                ctx: self.calib_ctx,
                max_tokens: self.calib_tokens,
                label: None,
            },
            None => CalibSpec::brown_mix(tmp.path(), self.calib_ctx, self.calib_tokens)?,
        };
        let calib_brown = self
            .calib
            .is_none()
            .then(|| frugal_formats::brown::MIX.to_string());
        let limit =
            match &self.limit {
                Some(Limit::MaxKld(x)) => QualityLimit::MaxKld(*x),
                Some(Limit::MaxPplIncreasePct(x)) => QualityLimit::MaxPplIncreasePct(*x),
                Some(Limit::MaxKldP999(x)) => QualityLimit::MaxKldP999(*x),
                Some(Limit::Policy(p)) => {
                    let p = load_policy(p)?;
                    QualityLimit::from_policy(&p).ok_or_else(|| {
                        Error::Usage(format!(
                            "{}: no max_kld or max_ppl_increase_pct clause to tune for",
                            p.path
                        ))
                    })?
                }
                _ => return Err(Error::Usage(
                    "give one limit: --max-kld, --max-ppl-increase-pct, --max-kld-p999 or --policy"
                        .into(),
                )),
            };
        let spec = |text: &PathBuf| EvalSpec {
            text: text.clone(),
            ctx: 512,
            chunks: Some(self.eval_chunks),
        };
        let job = TuneJob {
            input: self.input.clone(),
            output: self.output.clone(),
            limit,
            target: self.target.clone(),
            calib,
            calib_brown,
            imatrix: self.imatrix.clone(),
            search: spec(search),
            heldout: self.heldout.iter().map(spec).collect(),
            bpw_tolerance: self.bpw_tolerance,
            max_evals: self.max_evals,
            objective: self.objective,
            measure_energy: self.measure_energy,
            reference_cache_bytes: self.reference_cache_bytes,
        };
        super::check_memory(
            &memory_plan(&job)?,
            self.max_memory,
            "fewer --calib-tokens or --eval-chunks, a smaller --reference-cache-mib, or --no-energy (pass --max-memory if the machine has more)",
        )?;
        crate::tune::tune(&job, progress)
    }
}

/// The search's peak memory from the shapes, before any work: the importance matrix and the
/// rounding of a candidate; or a candidate judged against the input on the larger of the two
/// texts beside the input's logits kept between candidates; or a candidate run to measure its
/// energy (as `frugal measure` serves it: its matrices read in place from its file) —
/// whichever is largest.
fn memory_plan(job: &TuneJob) -> Result<MemoryPlan, Error> {
    let f = frugal_formats::gguf::GgufFile::open(&job.input)?;
    let shape = super::calib_shape(Some(&job.calib));
    let write = frugal_compress::quant::memory_plan(
        &f,
        shape,
        frugal_compress::quant::Method::Rtn,
        &frugal_models::scratch::Placement::Memory,
    )?
    .max(frugal_compress::quant::calibration::gains_memory_plan(
        &f,
        job.calib.ctx,
    )?);
    let config =
        frugal_models::llama::LlamaConfig::from_gguf(&f).map_err(frugal_compress::Error::from)?;
    let mut judge = MemoryPlan::new();
    let mut chunks = 0u64;
    for spec in std::iter::once(&job.search).chain(&job.heldout) {
        let files = frugal_eval::LmEvalFiles {
            model: job.input.clone(),
            reference: Some(job.input.clone()),
            text: spec.text.clone(),
            opts_ctx: spec.ctx,
            max_chunks: spec.chunks,
            load: frugal_models::llama::LoadOptions::GGML,
            split: frugal_eval::RankSplit::Chunks,
        };
        judge = judge.max(files.memory_plan()?);
        // At most the chunks the text holds (a token is at least a byte).
        let bytes = std::fs::metadata(&spec.text).map_or(u64::MAX, |m| m.len());
        let in_text = bytes / spec.ctx.max(1) as u64;
        chunks += spec.chunks.map_or(in_text, |c| (c as u64).min(in_text));
    }
    let logits_per_chunk = 4 * (job.search.ctx as u64 / 2) * config.n_vocab as u64;
    judge.add(
        "the input's logits kept between candidates (--reference-cache-mib)",
        (job.reference_cache_bytes as u64).min(chunks.saturating_mul(logits_per_chunk)),
    );
    let mut plan = write.max(judge);
    if job.measure_energy || job.objective == Objective::Energy {
        // Shaped as the input: the candidates' types are all read in place.
        let mut measure = MemoryPlan::new();
        measure
            .add(
                "a candidate's weights not read in place, to measure its energy",
                frugal_models::memory::stored_model_bytes(&f),
            )
            .add(
                "its decoding (key/value cache, logits)",
                frugal_models::memory::decode_bytes(
                    &config,
                    crate::measure::PROMPT_TOKENS + crate::measure::MeasureJob::TUNE_TOKENS,
                ),
            );
        plan = plan.max(measure);
    }
    Ok(plan)
}

impl ToText for TuneOutcome {
    fn to_text(&self) -> String {
        match self {
            TuneOutcome::LanguageModel(r) => lm_text(r),
            TuneOutcome::Classifier(r) => classifier_text(r),
        }
    }
}

fn classifier_text(r: &ClassifierTuneReport) -> String {
    let mut t = format!(
        "frugal tune: {} → {} ({}, accuracy drop ≤ {} points)\n",
        r.input, r.output, r.data, r.max_accuracy_drop_pt
    );
    t += &format!(
        "  {:>3} {:>10} {:>12} {:>12}  plan\n",
        "#", "bytes", "search pt", "held-out pt"
    );
    for (k, c) in r.candidates.iter().enumerate() {
        t += &format!(
            "  {k:>3} {:>10} {:>12.2} {:>12}  {}{}\n",
            c.file_bytes,
            c.search.accuracy_drop_pt,
            c.heldout
                .map_or("-".into(), |h| format!("{:.2}", h.accuracy_drop_pt)),
            c.plan
                .iter()
                .map(|(t, s)| format!("{t}={s}"))
                .collect::<Vec<_>>()
                .join(" "),
            if k == r.chosen { "  (chosen)" } else { "" }
        );
    }
    t += &format!(
        "  input {:.2} % / {:.2} % (search / held-out, {} / {} images); {} of {} bytes ({:.2}×) in {:.1} s\n",
        r.reference_search_pct, r.reference_heldout_pct, r.n_search, r.n_heldout,
        r.output_bytes, r.input_bytes,
        r.input_bytes as f64 / r.output_bytes.max(1) as f64, r.seconds
    );
    t += &format!("  plan     {}\n", r.plan_file);
    t
}

fn lm_text(r: &TuneReport) -> String {
    let mut t = format!("frugal tune: {} → {}\n", r.input, r.output);
    t += &format!(
        "  {:>3} {:>9} {:>6} {:>10} {:>10} {:>11} {:>16}\n",
        "#", "MiB", "bpw", "search", "held-out", "kernel µs", "J/token (95 %)"
    );
    let v = |j: &Judged| r.limit.value(j);
    for (k, c) in r.candidates.iter().enumerate() {
        t += &format!(
            "  {k:>3} {:>9.2} {:>6.3} {:>10.5} {:>10} {:>11} {:>16}  {}\n",
            mib(c.bytes),
            c.bits_per_weight,
            v(&c.search),
            c.heldout
                .iter()
                .map(v)
                .max_by(f64::total_cmp)
                .map_or("-".into(), |h| format!("{h:.5}")),
            if c.kernel_us_per_token > 0.0 {
                format!("{:.0}", c.kernel_us_per_token)
            } else {
                "-".into()
            },
            c.energy.as_ref().map_or("-".into(), |e| format!(
                "{:.3} ± {:.3}",
                e.joules_per_token.mean,
                0.5 * (e.joules_per_token.ci95.1 - e.joules_per_token.ci95.0)
            )),
            if k == r.chosen {
                "chosen"
            } else if c.meets_search {
                "meets"
            } else {
                "misses"
            }
        );
    }
    t += &format!(
        "  limit    {:?}, objective {:?}; {} of {} bytes ({:.2}×); {:.0} s (imatrix {:.0}, sensitivity {:.0}, pricing {:.0}, search {:.0} of which energy {:.0})\n",
        r.limit, r.objective, r.output_bytes, r.input_bytes,
        r.input_bytes as f64 / r.output_bytes.max(1) as f64,
        r.seconds.total, r.seconds.imatrix, r.seconds.sensitivity, r.seconds.pricing,
        r.seconds.search, r.seconds.energy
    );
    if let Some(w) = &r.energy_workload {
        let e = r.candidates[r.chosen].energy.as_ref();
        t += &format!(
            "  energy   {w}; {}\n",
            e.map_or(String::new(), |e| format!(
                "{} ({})",
                if e.measured { "measured" } else { "estimated" },
                e.provenance
            ))
        );
    }
    t += &format!("  holds    {}\n", r.guarantee);
    t += &format!("  recipe   {}\n", r.recipe);
    t += &format!(
        "  report   {}\n",
        crate::tune::report_path(Path::new(&r.output)).display()
    );
    t
}
