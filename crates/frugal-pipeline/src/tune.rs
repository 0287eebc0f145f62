//! `frugal tune`: the smallest quantized model that keeps its quality within a limit.
//!
//! 1. The importance matrix is measured once on the calibration text.
//! 2. Every tensor's sensitivity is measured once: for each candidate block type, the bytes it
//!    takes and the importance-weighted output error of rounding that tensor alone
//!    ([`frugal_compress::quant::BudgetPlan`]).
//! 3. For a size budget, a knapsack-style assignment spends the bytes where they buy the most
//!    error reduction per byte (the greedy walk along each tensor's lower convex hull).
//! 4. The budget is searched by bisection: each candidate is written and judged against the
//!    input on the search text (KL divergence, perplexity), until the smallest budget that
//!    meets the limit is bracketed within `bpw_tolerance`.
//! 5. The chosen candidate is verified on every held-out text; if it misses on any, the budget
//!    is raised step by step (each step judged on all texts) until it holds on all.
//!
//! A KLD limit is a guarantee on the mean KLD's upper 95 % bound over chunks (Student t on the
//! chunks' means, [`frugal_eval::KldStats::mean_upper95`]), not on the mean itself: a file
//! whose mean sits just under the limit on the texts it was chosen on would miss it on the
//! user's text about half the time. The report says which texts the guarantee was measured on.
//!
//! With [`Objective::Energy`] the currency is energy instead of bytes: every candidate type of
//! every budget tensor (F16 and F32 included) is priced by the time one product with one input
//! row takes through the kernels the served model runs for it ([`matvec_seconds`] on the
//! tensor's shape), the assignment minimises the error within a budget of that time per token,
//! and the bisection searches the smallest such budget. At a fixed power draw, kernel time is
//! the energy the decoder's products take; each candidate's energy is then measured on the
//! `frugal measure` workload (which says whether it was metered or estimated).
//!
//! The output is the verified model, a recipe that rebuilds it (`OUT.recipe.toml`: the same
//! quantize step with the found `target_bpw`, or with every budget tensor's type for the energy
//! objective), and a report with every candidate, which the HTML report draws as size and
//! energy per query against quality with the Pareto front.
//!
//! [`matvec_seconds`]: frugal_models::linear::matvec_seconds

use crate::steps::{judge_cached, load_calibration, CalibSpec, EvalSpec};
use crate::Error;
use frugal_compress::quant::alloc::Candidates;
use frugal_compress::quant::{calibration, BudgetPlan, QuantizeOptions};
use frugal_formats::gguf::GgufFile;
use frugal_formats::output::{write_atomic, AtomicDir};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The quality a tuned model must keep, against its input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "limit", rename_all = "snake_case")]
pub enum QualityLimit {
    /// Mean KL divergence per token, nats.
    MaxKld(f64),
    /// Perplexity increase over the input's, per cent.
    MaxPplIncreasePct(f64),
    /// The 99.9th percentile of the per-token KL divergence, nats (the tail).
    MaxKldP999(f64),
}

impl QualityLimit {
    /// The figure this limit reads from an evaluation: for a mean KLD, its upper 95 % bound over
    /// chunks (infinite with one chunk, which bounds nothing).
    pub fn value(&self, e: &Judged) -> f64 {
        match self {
            QualityLimit::MaxKld(_) => e.kld_upper95.unwrap_or(f64::INFINITY),
            QualityLimit::MaxPplIncreasePct(_) => e.ppl_increase_pct,
            QualityLimit::MaxKldP999(_) => e.kld_p999,
        }
    }
    pub fn limit(&self) -> f64 {
        match *self {
            QualityLimit::MaxKld(x)
            | QualityLimit::MaxPplIncreasePct(x)
            | QualityLimit::MaxKldP999(x) => x,
        }
    }
    /// What the limit bounds, in words (the report's guarantee).
    pub fn figure(&self) -> &'static str {
        match self {
            QualityLimit::MaxKld(_) => {
                "the mean KLD's upper 95 % bound (Student t over the chunks' means)"
            }
            QualityLimit::MaxPplIncreasePct(_) => "the mean PPL increase, per cent",
            QualityLimit::MaxKldP999(_) => "the 99.9th-percentile KLD",
        }
    }
    fn meets(&self, e: &Judged) -> bool {
        self.value(e) <= self.limit()
    }

    /// The quality clause of a policy (`max_kld` first, then `max_ppl_increase_pct`).
    pub fn from_policy(p: &frugal_report::policy::Policy) -> Option<QualityLimit> {
        const LM: Option<frugal_report::metrics::ModelKind> =
            Some(frugal_report::metrics::ModelKind::LanguageModel);
        p.number_for(LM, "max_kld")
            .map(QualityLimit::MaxKld)
            .or_else(|| {
                p.number_for(LM, "max_ppl_increase_pct")
                    .map(QualityLimit::MaxPplIncreasePct)
            })
    }
}

frugal_formats::name_table! {
    "snake_case";
    /// What a tuned model minimises.
    #[derive(Default)]
    pub enum Objective {
        /// Bytes.
        #[default]
        Size,
        /// Energy per generated token: the decoder's kernel time per token.
        Energy,
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Size => "size",
            Objective::Energy => "energy",
        })
    }
}

/// What to tune.
#[derive(Debug, Clone)]
pub struct TuneJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub limit: QualityLimit,
    /// The GGUF type whose rules decide which tensors are quantized (norms stay F32, …) and
    /// which names the file; the budget then picks each tensor's type.
    pub target: String,
    pub calib: CalibSpec,
    /// The Brown selection the calibration text was made from, when it was (the default: the
    /// multi-genre mix); the recipe names it instead of the scratch file.
    pub calib_brown: Option<String>,
    /// An importance matrix in llama.cpp's format to use instead of measuring one: with
    /// Frugal's statistics (`frugal imatrix --gains`) nothing is measured on `calib`; without
    /// them, what the search needs is measured there ([`frugal_compress::quant::complete_imatrix`]).
    pub imatrix: Option<PathBuf>,
    /// Text the search judges candidates on.
    pub search: EvalSpec,
    /// Different texts the chosen model is verified on: it must meet the limit on each.
    pub heldout: Vec<EvalSpec>,
    /// Stop bisecting when the bracket is narrower than this (bits per weight).
    pub bpw_tolerance: f64,
    /// At most this many candidates judged in all (search and verification).
    pub max_evals: usize,
    pub objective: Objective,
    /// Measure every candidate's energy per token on the `frugal measure` workload (always with
    /// [`Objective::Energy`]).
    pub measure_energy: bool,
    /// Keep at most this many bytes of the input's logits between candidates (each 512-token
    /// chunk of SmolLM2 takes 50 MB); 0 computes them for every candidate.
    pub reference_cache_bytes: usize,
}

/// A candidate's energy on the `frugal measure` workload.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CandidateEnergy {
    /// Joules per generated token (mean and 95 % interval over the metered runs).
    pub joules_per_token: crate::measure::Estimate,
    pub wh_per_1k_queries: crate::measure::Estimate,
    /// Every counter read (or estimated) and its provenance.
    pub provenance: String,
    pub measured: bool,
}

/// The chosen model's quality on the held-out text (the figures a policy reads).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HeldoutQuality {
    pub ppl: f64,
    pub kld: HeldoutKld,
    pub same_top1_pct: f64,
    /// The held-out text.
    pub text: String,
}

/// The mean KL divergence from the input (with its upper 95 % bound over chunks and the
/// 99.9th percentile), and the input's perplexity.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HeldoutKld {
    pub mean: f64,
    #[serde(default)]
    pub mean_upper95: Option<f64>,
    #[serde(default)]
    pub p99_9: f64,
    pub reference_ppl: f64,
}

/// One judged evaluation.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Judged {
    /// Mean KLD.
    pub kld: f64,
    /// Its upper 95 % bound over chunks (none for one chunk).
    #[serde(default)]
    pub kld_upper95: Option<f64>,
    /// The 99.9th percentile of the per-token KLD.
    #[serde(default)]
    pub kld_p999: f64,
    pub ppl: f64,
    pub reference_ppl: f64,
    pub ppl_increase_pct: f64,
    pub same_top1_pct: f64,
}

/// One candidate of the search.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// The budget asked for: bits per weight of the budget's tensors (size), or their kernel
    /// nanoseconds per token (energy).
    pub budget: f64,
    /// The whole file's tensor bytes over its weights (F32 norms included).
    pub bits_per_weight: f64,
    pub bytes: u64,
    pub search: Judged,
    /// Judged on each held-out text too, in their order (the verified ones; empty otherwise).
    #[serde(default)]
    pub heldout: Vec<Judged>,
    pub meets_search: bool,
    /// Predicted kernel time per generated token of the budget's tensors, microseconds.
    pub kernel_us_per_token: f64,
    /// Measured on the `frugal measure` workload.
    pub energy: Option<CandidateEnergy>,
    /// The types it gave, by count.
    pub type_counts: std::collections::BTreeMap<String, usize>,
    /// Every tensor's type (a budget that gives the same plan is not judged again).
    #[serde(skip)]
    types: Vec<Option<frugal_formats::gguf::GgmlType>>,
}

/// `frugal tune`'s record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TuneReport {
    pub input: String,
    pub output: String,
    pub recipe: String,
    pub limit: QualityLimit,
    pub objective: Objective,
    pub target: String,
    pub calibration_tokens: usize,
    /// The calibration text: a file, or the Brown selection it was made from.
    #[serde(default)]
    pub calibration_text: String,
    /// The importance-matrix file given (`--imatrix`), if any.
    #[serde(default)]
    pub imatrix_file: Option<String>,
    /// Whether statistics were measured on the calibration text (false when the importance
    /// matrix file carried every one the search needs; reports from before `--imatrix`
    /// always measured).
    #[serde(default = "measured")]
    pub calibration_measured: bool,
    pub search_text: String,
    /// The held-out texts, each of which the chosen model meets the limit on.
    pub heldout_texts: Vec<String>,
    /// What was guaranteed, on which texts: the limit's figure, its value, the texts.
    pub guarantee: String,
    /// The budget range the tensors allow: bits per weight (size), or kernel microseconds per
    /// token (energy).
    pub budget_range: (f64, f64),
    /// The measure workload the candidates' energy comes from (when measured).
    pub energy_workload: Option<String>,
    /// Every candidate judged, in the order they were.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen one in `candidates`.
    pub chosen: usize,
    /// The chosen model meets the limit on the held-out text (always, in a returned report:
    /// otherwise tune fails with nothing written).
    pub meets_heldout: bool,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Seconds: importance matrix, sensitivity, search and verification, and in all.
    pub seconds: Seconds,
    /// Chunks whose reference logits came from the cache instead of a forward pass of the input.
    pub reference_chunks_reused: usize,
    /// The figures a policy reads: the chosen model's evaluation on the held-out text where
    /// it comes closest to the limit.
    pub quality: HeldoutQuality,
}

fn measured() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Seconds {
    pub imatrix: f64,
    pub sensitivity: f64,
    /// Timing the kernels (energy objective).
    pub pricing: f64,
    /// Measuring the candidates' energy (part of `total`: the search's candidates and any
    /// judged while verifying).
    pub energy: f64,
    /// The bisection, kernel pricing excluded (verification on held-out text is in `total`
    /// only).
    pub search: f64,
    pub total: f64,
}

fn bad(m: String) -> Error {
    Error::Compress(frugal_compress::Error::BadOptions(m))
}

fn judged(r: &frugal_eval::LmEvalReport) -> Result<Judged, Error> {
    let k = r
        .result
        .kld
        .as_ref()
        .ok_or_else(|| bad("evaluation without a reference".into()))?;
    Ok(Judged {
        kld: k.mean,
        kld_upper95: k.mean_upper95,
        kld_p999: k.p99_9,
        ppl: r.result.ppl,
        reference_ppl: k.reference_ppl,
        ppl_increase_pct: 100.0 * (r.result.ppl - k.reference_ppl) / k.reference_ppl,
        same_top1_pct: k.same_top1_pct,
    })
}

/// Runs the search; writes `OUT.recipe.toml`, `OUT.report.html` and then `job.output`, and
/// returns the report.
/// `progress(stage, done, total)`.
pub fn tune(
    job: &TuneJob,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<TuneReport, Error> {
    let t0 = std::time::Instant::now();
    // Each phase's seconds: the time since the phase before it ended.
    let mut lap = {
        let mut last = 0f64;
        move || {
            let now = t0.elapsed().as_secs_f64();
            now - std::mem::replace(&mut last, now)
        }
    };
    if job.max_evals < 2 {
        return Err(bad("--max-evals must be at least 2".into()));
    }
    if !(job.limit.limit().is_finite() && job.limit.limit() >= 0.0) {
        return Err(bad(format!(
            "limit {} must be a non-negative number",
            job.limit.limit()
        )));
    }
    let target = match frugal_compress::quant::target(&job.target) {
        Some(frugal_compress::quant::Target::Gguf(t)) => Some(t),
        _ => None,
    }
    .filter(|t| frugal_compress::quant::codec::codec(t.base).is_some_and(|c| c.quantized()))
    .ok_or_else(|| bad(format!("`{}` is not a quantized GGUF type", job.target)))?;
    let same = frugal_formats::output::same_file;
    if job.heldout.is_empty() {
        return Err(bad("give at least one held-out text (--heldout)".into()));
    }
    let mut inputs = vec![&job.input, &job.calib.text, &job.search.text];
    inputs.extend(job.heldout.iter().map(|h| &h.text));
    inputs.extend(&job.imatrix);
    if inputs.iter().any(|i| same(i, &job.output)) || job.output.is_dir() {
        return Err(bad(format!(
            "{}: the output must not be one of the inputs (model, texts) or a folder",
            job.output.display()
        )));
    }
    for (k, h) in job.heldout.iter().enumerate() {
        if same(&job.search.text, &h.text) {
            return Err(bad(format!(
                "{}: a held-out text must differ from the search text (else nothing is verified)",
                h.text.display()
            )));
        }
        if job.heldout[..k].iter().any(|o| same(&o.text, &h.text)) {
            return Err(bad(format!(
                "{}: given twice as a held-out text",
                h.text.display()
            )));
        }
    }
    if !(job.bpw_tolerance.is_finite() && job.bpw_tolerance >= 1e-3) {
        return Err(bad(format!(
            "--bpw-tolerance {} must be at least 0.001",
            job.bpw_tolerance
        )));
    }
    for spec in std::iter::once(&job.search).chain(&job.heldout) {
        if spec.chunks == Some(0) {
            return Err(bad("--eval-chunks must be at least 1".into()));
        }
        if matches!(job.limit, QualityLimit::MaxKld(_)) && spec.chunks == Some(1) {
            return Err(bad(
                "--eval-chunks must be at least 2 for --max-kld: the limit holds on the mean's upper 95 % bound over chunks, which one chunk cannot give".into(),
            ));
        }
        // Long enough for two chunks in the model's tokens: found now, not after the search.
        crate::steps::check_eval(&job.input, Some(spec))?;
    }
    for p in [&job.input, &job.calib.text]
        .into_iter()
        .chain(job.heldout.iter().map(|h| &h.text))
        .chain(&job.imatrix)
    {
        if p.to_str().is_none() {
            return Err(bad(format!(
                "{}: the recipe needs paths that are valid UTF-8",
                p.display()
            )));
        }
    }
    let f = GgufFile::open(&job.input)?;
    // Read by the absolute path the recipe names, so that the output records the same
    // `quantize.imatrix.file` as the recipe's rebuild.
    let from_file = job
        .imatrix
        .as_deref()
        .map(|p| frugal_compress::quant::imatrix_file::read_imatrix(Path::new(&abs(p))))
        .transpose()?;
    if let Some(m) = &from_file {
        frugal_compress::quant::check_imatrix_entries(&f, m)?;
    }
    // Candidates are written into a scratch folder next to the output, removed at the end (or
    // on an interruption); the chosen one is renamed into place. Made first, so that an
    // unwritable output folder fails before any work.
    let scratch = AtomicDir::create(&beside(&job.output, ".tune"))?;
    // 1. Importance matrix: measured, or read and completed with what the file lacks.
    let calib: calibration::Calibration = load_calibration(&job.input, &job.calib)?;
    let (imatrix, calibration_measured) = match from_file {
        Some(mut m) => {
            let measured = frugal_compress::quant::complete_imatrix(&f, &mut m, &calib, progress)?;
            (m, measured)
        }
        None => {
            let mut m =
                calibration::collect_imatrix(&f, &calib, &|d, t| progress("imatrix", d, t))?;
            m.gains = calibration::collect_gains(&f, &calib, &|d, t| progress("gains", d, t))?;
            (m, true)
        }
    };
    let calibration_tokens = imatrix.n_tokens as usize;
    let t_imatrix = lap();
    let mut opts = QuantizeOptions::new(target);
    opts.imatrix = Some(imatrix);
    // 2. Sensitivity of every tensor to every type, once.
    let energy = job.objective == Objective::Energy;
    let which = if energy {
        Candidates::WithFloat
    } else {
        Candidates::All
    };
    let plan = BudgetPlan::measure_among(&f, &opts, which, &|d, t| progress("sensitivity", d, t))?;
    let t_sens = lap();
    // Kernel prices (ns per token) of every candidate type of every budget tensor.
    let prices = if energy || job.measure_energy {
        Some(kernel_prices(&f, &plan, progress)?)
    } else {
        None
    };
    let t_pricing = lap();
    let plan = match (&prices, energy) {
        (Some(p), true) => plan.priced(&|i, ty| p.get(&(i, ty)).copied())?,
        _ => plan,
    };
    let budget_tensors: Vec<usize> = plan.candidates().iter().map(|c| c.0).collect();
    let (budget_lo, budget_hi) = plan.budget_range();
    let energy_seconds = std::cell::Cell::new(0f64);
    let measure_energy = energy || job.measure_energy;
    let workload = crate::measure::MeasureJob {
        model: PathBuf::new(),
        data: None,
        queries: 2,
        repeats: 3,
        warmup: 1,
        tokens: crate::measure::MeasureJob::TUNE_TOKENS,
        weights: crate::measure::Weights::Stored,
        max_memory: None,
        meters: frugal_energy::MeterOptions::detect_cpu(),
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    // Every candidate is judged against the same reference on the same two texts: its logits
    // are computed once per chunk (the reference is loaded only until they are all kept).
    let cache =
        frugal_eval::ReferenceCache::new(Some(job.input.clone()), job.reference_cache_bytes);
    let judge =
        |path: &Path, spec: &EvalSpec| judge_cached(path, &job.input, spec, Some(&cache), progress);
    // A candidate on every held-out text, in their order.
    let judge_heldout = |path: &Path| -> Result<Vec<Judged>, Error> {
        job.heldout
            .iter()
            .map(|h| judged(&judge(path, h)?))
            .collect()
    };
    let judge_at =
        |bpw: f64, heldout: bool, candidates: &mut Vec<Candidate>| -> Result<usize, Error> {
            let k = candidates.len();
            if k >= job.max_evals {
                return Err(Error::LimitNotMet(format!(
                    "no verified model within --max-evals {} candidates",
                    job.max_evals
                )));
            }
            let choices = plan.choices(bpw);
            let types: Vec<_> = choices.iter().map(|c| c.map(|c| c.ty)).collect();
            if let Some(j) = candidates.iter().position(|c| c.types == types) {
                // The same plan as a candidate already judged.
                if heldout && candidates[j].heldout.is_empty() {
                    candidates[j].heldout = judge_heldout(&files_at(&scratch, j))?;
                }
                return Ok(j);
            }
            let path = files_at(&scratch, k);
            let w = frugal_compress::quant::write_planned(&f, &path, &opts, &choices, &|d, t| {
                progress("write", d, t)
            })?;
            progress("search", k + 1, job.max_evals);
            let s = judged(&judge(&path, &job.search)?)?;
            let h = if heldout && job.limit.meets(&s) {
                judge_heldout(&path)?
            } else {
                Vec::new()
            };
            let energy = if measure_energy {
                let t = std::time::Instant::now();
                progress("energy", k + 1, job.max_evals);
                let r = crate::measure::measure_model(&crate::measure::MeasureJob {
                    model: path.clone(),
                    ..workload.clone()
                })?;
                energy_seconds.set(energy_seconds.get() + t.elapsed().as_secs_f64());
                Some(CandidateEnergy {
                    joules_per_token: r.joules_per_unit,
                    wh_per_1k_queries: r.wh_per_1k_queries,
                    provenance: r.energy.method(),
                    measured: r.energy.all_measured(),
                })
            } else {
                None
            };
            let kernel_us_per_token = prices.as_ref().map_or(0.0, |p| {
                budget_tensors
                    .iter()
                    .filter_map(|&i| choices[i].and_then(|c| p.get(&(i, c.ty))))
                    .sum::<u64>() as f64
                    / 1e3
            });
            candidates.push(Candidate {
                budget: bpw,
                bits_per_weight: w.bits_per_weight,
                bytes: w.output_bytes,
                meets_search: job.limit.meets(&s),
                kernel_us_per_token,
                energy,
                search: s,
                heldout: h,
                type_counts: w.type_counts,
                types,
            });
            Ok(k)
        };

    // 3-4. Bisection on the budget: `hi` meets the limit on the search text, `lo` does not.
    let top = judge_at(budget_hi, false, &mut candidates)?;
    if !candidates[top].meets_search {
        return Err(Error::LimitNotMet(format!(
            "even the most accurate types ({:.2} bits per weight) miss the limit on the search text: {} = {:.5} > {}",
            candidates[top].bits_per_weight,
            limit_name(&job.limit),
            job.limit.value(&candidates[top].search),
            job.limit.limit()
        )));
    }
    // The largest budget may not be spent in full (a type with more bytes and no less error
    // is never chosen): bisect from what it used.
    let (mut lo, mut hi, mut best) = (budget_lo, plan.used_budget(budget_hi), top);
    // The bracket's width at which to stop: bits per weight, or for energy 1 % of the largest
    // kernel time (and at least 1 µs).
    let tolerance = if energy {
        (0.01 * hi).max(1e3)
    } else {
        job.bpw_tolerance
    };
    // Keep one evaluation in reserve for the held-out check of the result.
    while hi - lo > tolerance && candidates.len() + 2 <= job.max_evals {
        let mid = 0.5 * (lo + hi);
        // A plan judged before is not judged again; the bracket still halves, so the loop
        // ends (the tolerance is at least 0.001).
        let k = judge_at(mid, false, &mut candidates)?;
        if candidates[k].meets_search {
            hi = mid;
            best = k;
        } else {
            lo = mid;
        }
    }
    let t_search = lap();
    // 5. Verification on held-out text; raise the budget until it holds.
    let verify = |k: usize, candidates: &mut Vec<Candidate>| -> Result<bool, Error> {
        if candidates[k].heldout.is_empty() {
            candidates[k].heldout = judge_heldout(&files_at(&scratch, k))?;
        }
        Ok(candidates[k].heldout.iter().all(|h| job.limit.meets(h)))
    };
    let mut ok = verify(best, &mut candidates)?;
    let mut step = (hi - lo)
        .max(tolerance)
        .max(if energy { 0.02 * hi } else { 0.05 });
    while !ok && candidates.len() < job.max_evals {
        let bpw = (candidates[best].budget + step).min(budget_hi);
        let k = judge_at(bpw, true, &mut candidates)?;
        if candidates[k].meets_search {
            best = k;
            ok = verify(k, &mut candidates)?;
        }
        step *= 2.0;
        if bpw >= budget_hi {
            break;
        }
    }
    if !ok {
        // Out of evaluations: the candidates already judged that met the limit on the search
        // text and are larger than the one that failed, verified smallest first — the largest
        // types last, the best this method can do.
        let mut larger: Vec<usize> = (0..candidates.len())
            .filter(|&k| candidates[k].meets_search && candidates[k].bytes > candidates[best].bytes)
            .collect();
        larger.sort_by_key(|&k| candidates[k].bytes);
        for k in larger {
            if verify(k, &mut candidates)? {
                best = k;
                ok = true;
                break;
            }
        }
    }
    if !ok {
        let h = *worst(&job.limit, &candidates[best].heldout)
            .expect("verified")
            .1;
        return Err(Error::LimitNotMet(format!(
            "no candidate within --max-evals {} meets the limit on every held-out text (best: {} = {:.5} > {} at {:.2} bits per weight); nothing written",
            job.max_evals,
            limit_name(&job.limit),
            job.limit.value(&h),
            job.limit.limit(),
            candidates[best].bits_per_weight
        )));
    }
    let c = &candidates[best];
    let recipe = recipe_path(&job.output);
    let pinned: Vec<(String, frugal_formats::gguf::GgmlType)> = if energy {
        budget_tensors
            .iter()
            .filter_map(|&i| c.types[i].map(|ty| (f.header.tensors[i].name.clone(), ty)))
            .collect()
    } else {
        Vec::new()
    };
    write_recipe(&recipe, job, c.budget, &pinned)?;
    let (worst_k, heldout) = worst(&job.limit, &c.heldout).expect("the chosen model was verified");
    let heldout = *heldout;
    let heldout_texts: Vec<String> = job
        .heldout
        .iter()
        .map(|h| h.text.display().to_string())
        .collect();
    let guarantee = format!(
        "{} ≤ {} on each held-out text ({}; {} chunks of {} tokens each at most), the worst {:.5} on {}; the search text was {}",
        job.limit.figure(),
        job.limit.limit(),
        heldout_texts.join(", "),
        job.heldout[0].chunks.map_or("all".to_string(), |c| c.to_string()),
        job.heldout[0].ctx,
        job.limit.value(&heldout),
        heldout_texts[worst_k],
        job.search.text.display()
    );
    let input_bytes = f.file_len();
    let report = TuneReport {
        input: job.input.display().to_string(),
        output: job.output.display().to_string(),
        recipe: recipe.display().to_string(),
        limit: job.limit,
        objective: job.objective,
        target: job.target.clone(),
        calibration_tokens,
        calibration_text: job.calib.name(),
        imatrix_file: job.imatrix.as_ref().map(|p| p.display().to_string()),
        calibration_measured,
        search_text: job.search.text.display().to_string(),
        heldout_texts,
        guarantee,
        budget_range: if energy {
            (budget_lo / 1e3, budget_hi / 1e3)
        } else {
            (budget_lo, budget_hi)
        },
        energy_workload: measure_energy.then(|| {
            format!(
                "frugal measure: {} prompts × {} generated tokens, {} metered runs after {} warm-up, weights as stored",
                workload.queries, workload.tokens, workload.repeats, workload.warmup
            )
        }),
        chosen: best,
        meets_heldout: ok,
        reference_chunks_reused: cache.hits(),
        input_bytes,
        output_bytes: c.bytes,
        quality: HeldoutQuality {
            ppl: heldout.ppl,
            kld: HeldoutKld {
                mean: heldout.kld,
                mean_upper95: heldout.kld_upper95,
                p99_9: heldout.kld_p999,
                reference_ppl: heldout.reference_ppl,
            },
            same_top1_pct: heldout.same_top1_pct,
            text: job.heldout[worst_k].text.display().to_string(),
        },
        candidates,
        seconds: Seconds {
            imatrix: t_imatrix,
            sensitivity: t_sens,
            pricing: t_pricing,
            energy: energy_seconds.get(),
            search: t_search,
            total: t0.elapsed().as_secs_f64(),
        },
    };
    // The report page, then the model into place last (the output is never an input).
    let page = frugal_report::html::html(&view(&report));
    write_atomic(&report_path(&job.output), &[&job.input], |f| {
        f.write_all(page.as_bytes())
    })?;
    std::fs::rename(files_at(&scratch, report.chosen), &job.output).map_err(|e| {
        frugal_formats::Error::io(&job.output, "renaming the tuned model into place", e)
    })?;
    drop(scratch);
    Ok(report)
}

/// Nanoseconds per generated token of every candidate type of every budget tensor: one
/// product of its shape with one input row through the kernels the served model runs
/// ([`frugal_models::linear::matvec_seconds`]), timed once per shape and type. A tensor no
/// product reads (a token embedding with a separate output matrix; it is looked up row by row)
/// is priced by its bytes at 1 ns per KiB, which only breaks ties towards the smaller type.
fn kernel_prices(
    f: &GgufFile,
    plan: &BudgetPlan,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<std::collections::HashMap<(usize, frugal_formats::gguf::GgmlType), u64>, Error> {
    use std::collections::HashMap;
    let tied = !f.header.tensors.iter().any(|t| t.name == "output.weight");
    let list = plan.candidates();
    let mut timed: HashMap<(frugal_formats::gguf::GgmlType, usize, usize), Option<u64>> =
        HashMap::new();
    let mut prices = HashMap::new();
    for (k, (i, types)) in list.iter().enumerate() {
        let t = &f.header.tensors[*i];
        let (n_in, n_out) = (
            t.dims[0] as usize,
            t.n_elements() as usize / t.dims[0].max(1) as usize,
        );
        let looked_up = t.name == "token_embd.weight" && !tied;
        for &ty in types {
            // Every type is timed as a served model multiplies it (F16 and BF16 from their
            // 16-bit values: `frugal_models::gemm`).
            let price = if looked_up {
                ty.bytes_for(t.n_elements()).map(|b| b / 1024)
            } else {
                match timed.get(&(ty, n_out, n_in)) {
                    Some(&p) => p,
                    None => {
                        // About 20 ms per round whatever the shape; the copies of the
                        // weight span 256 MiB, beyond any CPU's last-level cache.
                        let calls = (20_000_000 / (n_out * n_in).max(1)).clamp(2, 2000);
                        let p = frugal_models::linear::matvec_seconds(
                            ty,
                            n_out,
                            n_in,
                            calls,
                            256 << 20,
                        )
                        .map_err(frugal_eval::Error::from)?
                        .map(|s| (s * 1e9).round().max(1.0) as u64);
                        timed.insert((ty, n_out, n_in), p);
                        p
                    }
                }
            };
            if let Some(p) = price {
                prices.insert((*i, ty), p);
            }
        }
        progress("pricing", k + 1, list.len());
    }
    Ok(prices)
}

/// The held-out evaluation closest to (or furthest over) the limit, and its index.
fn worst<'a>(limit: &QualityLimit, h: &'a [Judged]) -> Option<(usize, &'a Judged)> {
    h.iter()
        .enumerate()
        .max_by(|a, b| limit.value(a.1).total_cmp(&limit.value(b.1)))
}

fn files_at(scratch: &AtomicDir, k: usize) -> PathBuf {
    scratch.tmp_path().join(format!("candidate-{k}.gguf"))
}

fn limit_name(l: &QualityLimit) -> &'static str {
    match l {
        QualityLimit::MaxKld(_) => "mean KLD (upper 95 % bound)",
        QualityLimit::MaxPplIncreasePct(_) => "PPL increase %",
        QualityLimit::MaxKldP999(_) => "99.9 % KLD",
    }
}

/// `OUT` with `suffix` appended (`OUT.recipe.toml`, …).
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `OUT.report.html`.
pub fn report_path(output: &Path) -> PathBuf {
    beside(output, ".report.html")
}

/// `OUT.recipe.toml`.
pub fn recipe_path(output: &Path) -> PathBuf {
    beside(output, ".recipe.toml")
}

fn abs(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The recipe that rebuilds the tuned model: the same calibration and type, and the found
/// budget — or, when `pinned` lists the budget tensors' types (the energy objective, whose
/// budget depends on this machine's kernel timings), those types.
fn write_recipe(
    path: &Path,
    job: &TuneJob,
    bpw: f64,
    pinned: &[(String, frugal_formats::gguf::GgmlType)],
) -> Result<(), Error> {
    let q = |s: String| toml::Value::String(s).to_string();
    let assignment = if pinned.is_empty() {
        format!("target_bpw = {bpw:?}")
    } else {
        let lines: Vec<String> = pinned
            .iter()
            .map(|(name, ty)| {
                format!(
                    "  {},",
                    q(format!("^{}$={}", regex::escape(name), ty.name()))
                )
            })
            .collect();
        format!("tensor_types = [\n{}\n]", lines.join("\n"))
    };
    let text = format!(
        "# Written by `frugal tune` ({limit} ≤ {value} against the input, verified on held-out text).\n\
         # `frugal run` on this recipe rebuilds the same file.\n\
         name = {name}\nmodel = {model}\n\n[eval]\ntext = {{ file = {heldout} }}\nchunks = {chunks}\n\n\
         [[step]]\nkind = \"quantize\"\ntype = {ty}\n{assignment}\n\
         calib = {{ {calib}, tokens = {tokens}, ctx = {ctx} }}\n{imatrix}\n[[step]]\nkind = \"eval\"\n",
        limit = limit_name(&job.limit),
        value = job.limit.limit(),
        name = q(format!(
            "tune-{}",
            job.output.file_stem().unwrap_or_default().to_string_lossy()
        )),
        model = q(abs(&job.input)),
        heldout = q(abs(&job.heldout[0].text)),
        chunks = job.heldout[0].chunks.unwrap_or(8),
        ty = q(job.target.clone()),
        calib = match &job.calib_brown {
            Some(sel) => format!("brown = {}", q(sel.clone())),
            None => format!("file = {}", q(abs(&job.calib.text))),
        },
        tokens = job.calib.max_tokens,
        ctx = job.calib.ctx,
        imatrix = match &job.imatrix {
            Some(m) => format!("imatrix = {}\n", q(abs(m))),
            None => String::new(),
        },
    );
    write_atomic(path, &[&job.input], |f| f.write_all(text.as_bytes()))?;
    Ok(())
}

/// The report's view: every candidate as a point of size against quality (on the search text),
/// the chosen one's held-out figure beside it.
pub fn view(r: &TuneReport) -> frugal_report::html::View {
    let quality_label = match r.limit {
        QualityLimit::MaxKld(_) => "mean KLD, upper 95 % bound (search text)",
        QualityLimit::MaxPplIncreasePct(_) => "PPL increase % (search text)",
        QualityLimit::MaxKldP999(_) => "99.9 % KLD (search text)",
    };
    let mut variants: Vec<frugal_report::html::Variant> = r
        .candidates
        .iter()
        .enumerate()
        .map(|(k, c)| frugal_report::html::Variant {
            name: format!(
                "{}{:.2} bpw{}",
                if k == r.chosen { "chosen " } else { "" },
                c.bits_per_weight,
                if c.kernel_us_per_token > 0.0 {
                    format!(", {:.0} µs kernels/token", c.kernel_us_per_token)
                } else {
                    String::new()
                }
            ),
            bytes: c.bytes,
            quality: r.limit.value(&c.search),
            wh_per_1k: c.energy.as_ref().map(|e| {
                let w = &e.wh_per_1k_queries;
                (w.mean, w.ci95, e.measured)
            }),
        })
        .collect();
    variants.sort_by_key(|v| v.bytes);
    let c = &r.candidates[r.chosen];
    let h = *worst(&r.limit, &c.heldout).expect("verified").1;
    let chosen_name = variants
        .iter()
        .find(|v| v.name.starts_with("chosen "))
        .map(|v| v.name.clone());
    frugal_report::html::View {
        title: format!("frugal tune: {} → {}", r.input, r.output),
        verdict: Some(frugal_report::html::Verdict {
            ship: chosen_name,
            headline: format!(
                "Ship {}: {:.2} bits per weight, {:.1}× smaller, {} ≤ {} on every held-out text",
                r.output,
                c.bits_per_weight,
                r.input_bytes as f64 / r.output_bytes.max(1) as f64,
                limit_name(&r.limit),
                r.limit.limit()
            ),
            reasons: vec![format!(
                "worst held-out text: mean KLD {:.5} (upper 95 % bound {}), 99.9 % KLD {:.4}, PPL {:.4} against the input's {:.4}, same top-1 {:.2} %",
                h.kld,
                h.kld_upper95.map_or("-".into(), |u| format!("{u:.5}")),
                h.kld_p999,
                h.ppl,
                h.reference_ppl,
                h.same_top1_pct
            )],
        }),
        quality_label: quality_label.into(),
        higher_is_better: false,
        variants,
        energy_sources: Vec::new(),
        label_thresholds: frugal_report::html::DEFAULT_LABEL_WH_PER_1K,
        bits: Vec::new(),
        tables: vec![(
            "The chosen model on every text".into(),
            [
                "text",
                "mean KLD",
                "upper 95 %",
                "99.9 % KLD",
                "PPL (input's)",
                "same top-1 %",
            ]
            .map(String::from)
            .to_vec(),
            std::iter::once((format!("search: {}", r.search_text), &c.search))
                .chain(
                    r.heldout_texts
                        .iter()
                        .zip(&c.heldout)
                        .map(|(t, j)| (format!("held-out: {t}"), j)),
                )
                .map(|(n, j)| {
                    vec![
                        n,
                        format!("{:.5}", j.kld),
                        j.kld_upper95.map_or("-".into(), |u| format!("{u:.5}")),
                        format!("{:.4}", j.kld_p999),
                        format!("{:.4} ({:.4})", j.ppl, j.reference_ppl),
                        format!("{:.2}", j.same_top1_pct),
                    ]
                })
                .collect(),
        )],
        notes: vec![
            format!(
                "Guarantee: {}; {} of {} bytes ({:.2} bits per weight over the whole file).",
                r.guarantee, r.output_bytes, r.input_bytes, c.bits_per_weight,
            ),
            format!(
                "{} candidates judged on {}, the chosen one verified on {}.",
                r.candidates.len(),
                r.search_text,
                r.heldout_texts.join(", ")
            ),
            match r.objective {
                Objective::Size => "Objective: size (bytes).".to_string(),
                Objective::Energy => format!(
                    "Objective: energy — each budget tensor's type priced by the time one product with one input row takes through the served kernels (F16 and F32 included), {:.0} µs of kernels per token for the chosen model.",
                    c.kernel_us_per_token
                ),
            },
        ]
        .into_iter()
        .chain(r.energy_workload.iter().map(|w| {
            let how = c
                .energy
                .as_ref()
                .map(|e| {
                    if e.measured {
                        format!("measured ({})", e.provenance)
                    } else {
                        format!("estimated, not measured ({})", e.provenance)
                    }
                })
                .unwrap_or_default();
            format!("Energy per query of every candidate: {w}; {how}.")
        }))
        .collect(),
    }
}
