//! `frugal measure MODEL`: a built-in inference workload run under the energy meters, with
//! warm-up, repeats and confidence intervals.
//!
//! - Classifier (a Frugal CNN `.safetensors`): N images of its data set, one query each
//!   (batch 1, the hand-written forward pass, weights decoded once); the unit is an image.
//! - Encoder (a sentence-transformers folder): N Brown sentences, one query each; the unit is a
//!   sentence.
//! - Language model (GGUF): N prompts of 32 tokens of Brown text, each prefilled into a
//!   key/value cache in one batched pass and followed by M greedily generated tokens, one pass
//!   each, as a serving runtime does; the unit is a generated token (the prompt's cost
//!   included). The weights are multiplied as stored — quantized tensors through the kernels
//!   the type table picks (Frugal's or candle's) — unless [`Weights::Decoded`] asks for f32.
//!
//! Each of `repeats` runs is metered on its own (a [`frugal_energy::Session`]) after `warmup`
//! unmetered queries; J per unit and Wh per 1,000 queries are reported as the mean over the
//! runs with a 95 % Student-t interval, latencies as percentiles over every metered query.

use crate::Error;
use frugal_energy::{EnergyReport, MeterOptions, Session};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct MeasureJob {
    pub model: PathBuf,
    /// Classifiers: the data set whose images are the queries.
    pub data: Option<crate::data::Dataset>,
    pub queries: usize,
    pub repeats: usize,
    pub warmup: usize,
    /// Language models: tokens generated per prompt.
    pub tokens: usize,
    /// Language models: how the weights are multiplied.
    pub weights: Weights,
    pub meters: MeterOptions,
    /// Language models: the memory budget the plan is checked against (`--max-memory`; by
    /// default what the machine has available, less a tenth).
    pub max_memory: Option<u64>,
}

/// How a GGUF language model's weights are multiplied in the workload.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weights {
    /// As stored, read in place from the memory-mapped file by Frugal's kernels (8-bit
    /// activations for block-quantized types, 16- and 32-bit floats as they are): how a
    /// quantized model is served, and the process holds no copy of the weights.
    #[default]
    Stored,
    /// Decoded to f32 once when loading, every product in f32.
    Decoded,
}

/// Tokens of a language model's workload prompt.
pub(crate) const PROMPT_TOKENS: usize = 32;

impl MeasureJob {
    /// Tokens generated per prompt when `tune` measures a candidate's energy.
    pub(crate) const TUNE_TOKENS: usize = 8;
}

/// A mean with its 95 % interval, over `n` runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Estimate {
    pub mean: f64,
    pub ci95: (f64, f64),
    /// The runs it comes from (one run has no interval: the mean alone).
    pub n: usize,
}

impl Estimate {
    /// The estimate times `k` (a unit change).
    pub fn scaled(self, k: f64) -> Estimate {
        let (a, b) = (self.ci95.0 * k, self.ci95.1 * k);
        Estimate {
            mean: self.mean * k,
            ci95: (a.min(b), a.max(b)),
            n: self.n,
        }
    }

    fn half_width(&self) -> f64 {
        (self.ci95.1 - self.ci95.0) / 2.0
    }

    /// `self − other` (two independent estimates), with a 95 % interval whose half-width is
    /// the two half-widths combined in quadrature: each half-width already carries its own
    /// Student-t quantile for its few runs, which makes this wider than Welch's interval —
    /// the comparison errs on the side of claiming nothing.
    pub fn minus(&self, other: &Estimate) -> Comparison {
        let mean = self.mean - other.mean;
        let h = self.half_width().hypot(other.half_width());
        let ci95 = (mean - h, mean + h);
        let significant = self.n >= 2 && other.n >= 2 && (ci95.0 > 0.0 || ci95.1 < 0.0);
        Comparison {
            a: *self,
            b: *other,
            difference: mean,
            ci95,
            significant,
        }
    }
}

/// Two estimates compared: `a − b` with its 95 % interval; `significant` only when both have an
/// interval (two runs or more) and the difference's interval excludes zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Comparison {
    pub a: Estimate,
    pub b: Estimate,
    pub difference: f64,
    pub ci95: (f64, f64),
    pub significant: bool,
}

impl Comparison {
    /// The comparison in words, with both intervals: `what` names the quantity of `a − b`
    /// (e.g. "saving"), `unit` its unit.
    pub fn describe(&self, what: &str, unit: &str) -> String {
        let iv = |e: &Estimate| {
            if e.n >= 2 {
                format!("{:.3e} [{:.3e}, {:.3e}]", e.mean, e.ci95.0, e.ci95.1)
            } else {
                format!("{:.3e} (one run, no interval)", e.mean)
            }
        };
        let verdict = if !self.significant {
            format!("no significant {what}")
        } else if self.difference > 0.0 {
            format!("significant {what}")
        } else {
            format!("significant negative {what}")
        };
        format!(
            "{verdict}: {:.3e} [{:.3e}, {:.3e}] {unit} ({} vs {} {unit})",
            self.difference,
            self.ci95.0,
            self.ci95.1,
            iv(&self.b),
            iv(&self.a)
        )
    }
}

/// Mean and 95 % interval of `xs` (the interval is the mean alone for one value).
pub fn estimate(xs: &[f64]) -> Estimate {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n.max(1.0);
    if xs.len() < 2 {
        return Estimate {
            mean,
            ci95: (mean, mean),
            n: xs.len(),
        };
    }
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let h = frugal_eval::t95(xs.len() - 1) * sd / n.sqrt();
    Estimate {
        mean,
        ci95: (mean - h, mean + h),
        n: xs.len(),
    }
}

/// One metered run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RepeatRecord {
    pub seconds: f64,
    pub joules: f64,
    pub measured: bool,
}

/// What the workload measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WorkloadReport {
    pub model: String,
    pub kind: String,
    /// What one query is, and what the energy is divided by.
    pub query: String,
    pub unit: String,
    pub queries: usize,
    pub units_per_query: usize,
    /// How a classifier's products ran (int8 weights through integer products, or f32): the
    /// model as stored; the workload (`query`) is the same either way, so an int8 model can be
    /// compared with its f32 baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
    pub warmup: usize,
    pub runs: Vec<RepeatRecord>,
    pub joules_per_unit: Estimate,
    pub wh_per_1k_queries: Estimate,
    pub queries_per_second: Estimate,
    /// Per-query latency percentiles over every metered query, milliseconds.
    pub latency_ms: Latency,
    pub peak_rss_bytes: u64,
    /// The last run's energy by source, with its provenance.
    pub energy: EnergyReport,
    /// The figures a policy reads (`per_1k_queries.wh`; gCO₂e is added by the caller with a region).
    pub per_1k_queries: WorkloadPer1k,
    /// What making this model cost against what it saves per query ([`add_break_even`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_even: Option<BreakEvenRecord>,
}

/// A workload's figures per 1,000 queries.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WorkloadPer1k {
    pub queries: usize,
    pub wh: f64,
    /// Operational emissions, with a region ([`add_carbon`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gco2e: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pue: Option<f64>,
    /// The SCI score (ISO/IEC 21031) per 1,000 queries and how it was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sci_gco2e: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sci: Option<Sci>,
}

/// The SCI score's parts per 1,000 queries.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Sci {
    pub operational_g_per_1k: f64,
    pub embodied_g_per_1k: f64,
    pub embodied_kg: f64,
    pub life_years: f64,
    pub reserved_hours_per_run: f64,
    pub resource_share: f64,
    pub embodied_source: String,
}

/// What making a model cost against what it saves per query: the saving is the baseline's
/// energy per query less this model's, compared with their intervals; the break-even exists
/// only where the saving is significant (its 95 % interval above zero).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct BreakEvenRecord {
    pub compression_joules: f64,
    /// Baseline minus this model, joules per query (`a` the baseline, `b` this model).
    pub saving_joules_per_query: Comparison,
    /// Queries to pay the compression back: only for a significant saving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries: Option<f64>,
    /// The verdict in words: the saving and both intervals, or "no significant saving".
    pub verdict: String,
    pub measured: bool,
}

impl BreakEvenRecord {
    /// The break-even of a compression that cost `cost` joules, from the baseline's and the
    /// model's joules per query.
    pub fn new(cost: &Cost, baseline: Estimate, this: Estimate, measured: bool) -> Self {
        let saving = baseline.minus(&this);
        let queries = if saving.significant {
            frugal_energy::carbon::break_even_queries(cost.joules, saving.difference)
        } else {
            None
        };
        let mut verdict = saving.describe("saving per query", "J");
        if !measured {
            verdict += " (estimated energy)";
        }
        BreakEvenRecord {
            compression_joules: cost.joules,
            saving_joules_per_query: saving,
            queries,
            verdict,
            measured,
        }
    }

    /// Why there is no break-even, when there is none.
    pub fn why_none(&self) -> Option<String> {
        self.queries.is_none().then(|| {
            if self.saving_joules_per_query.significant {
                format!("never pays back ({})", self.verdict)
            } else {
                self.verdict.clone()
            }
        })
    }
}

/// A measured command's emissions.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CommandCarbon {
    pub grid: frugal_energy::carbon::GridIntensity,
    pub pue: f64,
    pub operational_g: f64,
    pub measured_energy: bool,
}

/// A measured command's figures per 1,000 queries (when told how many it served).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CommandPer1k {
    pub queries: u64,
    pub wh: f64,
    pub gco2e: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let r = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (r - lo as f64)
}

type Query<'a> = Box<dyn FnMut(usize) -> Result<(), Error> + 'a>;

/// A workload: its kind, what a query is, the unit, units per query, and the query function.
type Workload<'a> = (&'static str, String, &'static str, usize, Query<'a>);

/// A language model's memory plan for the workload, printed and checked against the budget
/// before anything is loaded: the weights it holds (none of the matrices as stored, every one
/// decoded to F32 with `--decoded-weights`) and the decoding of a prompt and its tokens.
fn check_lm_memory(f: &frugal_formats::gguf::GgufFile, job: &MeasureJob) -> Result<(), Error> {
    use frugal_models::memory::{self, MemoryPlan};
    let c =
        frugal_models::llama::LlamaConfig::from_gguf(f).map_err(frugal_compress::Error::from)?;
    let mut plan = MemoryPlan::new();
    let remedy = match job.weights {
        Weights::Stored => {
            plan.add(
                "the weights not read in place (vectors in F32, types without an in-place kernel)",
                memory::stored_model_bytes(f),
            );
            "a smaller model, or a larger --max-memory on a machine that has it"
        }
        Weights::Decoded => {
            plan.add(
                "every weight decoded to F32",
                memory::decoded_model_bytes(f),
            );
            "measure the weights as stored (without --decoded-weights): they are read in place"
        }
    };
    let positions = PROMPT_TOKENS + job.tokens;
    plan.add(
        format!("decoding {positions} positions (key/value cache, logits)"),
        memory::decode_bytes(&c, positions),
    );
    crate::jobs::check_memory(&plan, job.max_memory, remedy)
}

/// Runs the workload for `job.model` (its kind from the path: a folder is an encoder, a GGUF a
/// language model, a `.safetensors` file a classifier).
pub fn measure_model(job: &MeasureJob) -> Result<WorkloadReport, Error> {
    if job.queries == 0 || job.repeats == 0 {
        return Err(bad("--queries and --repeats must be positive".into()));
    }
    let dev = candle_core::Device::Cpu;
    let me = frugal_eval::Error::from;
    let path = &job.model;
    // Each workload: its kind, what a query is, units per query, and the query function.
    use crate::kind::ModelKind;
    let detected = ModelKind::detect(path);
    let mut served = None;
    let (kind, query, unit, per_query, mut run): Workload = if detected == ModelKind::Encoder {
        let model = frugal_models::bert::Bert::load(path, &dev).map_err(me)?;
        let docs = frugal_formats::brown::read_brown_dir(&frugal_formats::assets::brown_dir())?;
        let sents: Vec<String> =
            frugal_eval::encoder::brown_sentences(&docs, job.queries.div_ceil(15) + 1, 8)
                .into_iter()
                .map(|s| s.text)
                .collect();
        if sents.is_empty() {
            return Err(bad("no Brown sentences".into()));
        }
        (
            "encoder",
            "one Brown sentence embedded".into(),
            "sentence",
            1,
            Box::new(move |i| {
                model
                    .embed(&[sents[i % sents.len()].as_str()], 1)
                    .map_err(me)?;
                Ok(())
            }),
        )
    } else if detected == ModelKind::LanguageModel {
        let f = frugal_formats::gguf::GgufFile::open(path)?;
        check_lm_memory(&f, job)?;
        let load = match job.weights {
            Weights::Stored => frugal_models::llama::LoadOptions::KERNELS,
            Weights::Decoded => frugal_models::llama::LoadOptions::EXACT,
        };
        let model = frugal_models::llama::Llama::load(&f, load, &dev).map_err(me)?;
        let tok = frugal_models::tokenizer::GgufTokenizer::from_gguf(&f).map_err(me)?;
        let brown = frugal_formats::assets::brown_dir();
        let ids = frugal_formats::brown::select_ids(&brown, "cj13-cj20")?;
        let text = frugal_formats::brown::plain_text(&brown, &ids)?;
        let all = tok.encode(&text, false).map_err(me)?;
        let prompts: Vec<Vec<u32>> = all
            .chunks_exact(PROMPT_TOKENS)
            .take(64)
            .map(|c| c.to_vec())
            .collect();
        if prompts.is_empty() || job.tokens == 0 {
            return Err(bad(
                "language models need --tokens > 0 and Brown text".into()
            ));
        }
        let m = job.tokens;
        let weights = match job.weights {
            Weights::Stored => "weights as stored",
            Weights::Decoded => "weights decoded to f32",
        };
        (
            "language-model",
            format!("a 32-token Brown prompt, prefilled, then {m} tokens generated ({weights})"),
            "token",
            m,
            Box::new(move |i| {
                let prompt = &prompts[i % prompts.len()];
                let mut cache = model.kv_cache(prompt.len() + m).map_err(me)?;
                let mut logits = Some(model.prefill(prompt, &mut cache).map_err(me)?);
                for k in 0..m {
                    let l: Vec<f32> = logits
                        .take()
                        .expect("a prompt has tokens")
                        .to_vec1()
                        .map_err(|e| me(e.into()))?;
                    let next = frugal_models::cnn::argmax(&l);
                    // The last generated token needs no logits after it.
                    if k + 1 < m {
                        logits = Some(model.decode_step(next as u32, &mut cache).map_err(me)?);
                    }
                }
                Ok(())
            }),
        )
    } else {
        let data = job.data.ok_or_else(|| {
            bad("a classifier is measured on images: --data digits|fashion-mnist".into())
        })?;
        let mut model =
            frugal_models::cnn::Cnn::load(path, &dev).map_err(frugal_compress::Error::from)?;
        if job.weights == Weights::Decoded {
            model.int8.clear();
        }
        let set = data.workload_images()?;
        let n = set.len();
        // The weights prepared and the scratch buffers made once: a query is one forward pass
        // on this thread, as the model is served (int8 weights through integer products).
        let mut inference = frugal_models::cnn_infer::CnnInference::new(&model)
            .map_err(frugal_compress::Error::from)?;
        served = Some(
            if inference.is_integer() {
                "int8 weights through integer products"
            } else {
                "f32 products"
            }
            .to_string(),
        );
        (
            "classifier",
            "one image of the data set classified (batch 1, one thread)".into(),
            "image",
            1,
            Box::new(move |i| {
                let (x, _) = frugal_models::cnn::batch_pixels(&set, &[i % n]);
                std::hint::black_box(inference.forward(&x, 1));
                Ok(())
            }),
        )
    };
    for i in 0..job.warmup {
        run(i)?;
    }
    let mut runs = Vec::with_capacity(job.repeats);
    let mut latencies = Vec::with_capacity(job.repeats * job.queries);
    let mut last = None;
    for _ in 0..job.repeats {
        let mut session = Session::start(&job.meters).map_err(|e| bad(e.to_string()))?;
        let t0 = Instant::now();
        let mut sampled = Instant::now();
        for q in 0..job.queries {
            let t = Instant::now();
            run(job.warmup + q)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            // Hardware counters read every second or so, so that a wrap-around is caught.
            if sampled.elapsed().as_secs_f64() >= 1.0 {
                session.sample().map_err(|e| bad(e.to_string()))?;
                sampled = Instant::now();
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        let e = session.stop().map_err(|e| bad(e.to_string()))?;
        runs.push(RepeatRecord {
            seconds,
            joules: e.joules(),
            measured: e.all_measured(),
        });
        last = Some(e);
    }
    latencies.sort_by(f64::total_cmp);
    let units = (job.queries * per_query) as f64;
    let jpu: Vec<f64> = runs.iter().map(|r| r.joules / units).collect();
    let wh1k: Vec<f64> = runs
        .iter()
        .map(|r| r.joules / 3600.0 / job.queries as f64 * 1000.0)
        .collect();
    let qps: Vec<f64> = runs
        .iter()
        .map(|r| job.queries as f64 / r.seconds.max(1e-12))
        .collect();
    let wh = estimate(&wh1k);
    Ok(WorkloadReport {
        model: path.display().to_string(),
        kind: kind.into(),
        query,
        unit: unit.into(),
        queries: job.queries,
        units_per_query: per_query,
        served,
        warmup: job.warmup,
        runs,
        joules_per_unit: estimate(&jpu),
        wh_per_1k_queries: wh,
        queries_per_second: estimate(&qps),
        latency_ms: Latency {
            p50: percentile(&latencies, 50.0),
            p90: percentile(&latencies, 90.0),
            p99: percentile(&latencies, 99.0),
        },
        peak_rss_bytes: frugal_energy::estimate::peak_rss_bytes(),
        energy: last.expect("at least one run"),
        per_1k_queries: WorkloadPer1k {
            queries: job.queries,
            wh: wh.mean,
            gco2e: None,
            region: None,
            pue: None,
            sci_gco2e: None,
            sci: None,
        },
        break_even: None,
    })
}

/// Where and on what hardware the energy is turned into emissions and an SCI score.
#[derive(Debug, Clone)]
pub struct CarbonOptions {
    pub grid: frugal_energy::carbon::GridIntensity,
    pub pue: f64,
    /// The machine's embodied emissions (kg) and expected life (years), for SCI.
    pub embodied_kg: f64,
    pub life_years: f64,
}

/// Adds gCO₂e and SCI per 1,000 queries to a workload's `per_1k_queries`: operational
/// emissions from the mean Wh, plus the embodied share of the machine time a run reserved
/// (all of the process's CPUs) spread over its queries.
pub fn add_carbon(w: &mut WorkloadReport, c: &CarbonOptions) -> Result<(), Error> {
    let energy = |e: frugal_energy::Error| bad(e.to_string());
    let grams = frugal_energy::carbon::operational_g(
        w.wh_per_1k_queries.mean / 1000.0,
        c.pue,
        c.grid.g_per_kwh,
    )
    .map_err(energy)?;
    let embodied = frugal_energy::carbon::Embodied {
        total_g: c.embodied_kg * 1000.0,
        life_hours: c.life_years * 365.0 * 24.0,
        resource_share: 1.0,
    };
    let hours = w.runs.iter().map(|r| r.seconds).sum::<f64>() / w.runs.len() as f64 / 3600.0;
    let m = embodied.share_g(hours).map_err(energy)?;
    let k = w.queries as f64 / 1000.0;
    let sci = frugal_energy::carbon::sci_g_per_unit(grams * k, m, k).map_err(energy)?;
    let p = &mut w.per_1k_queries;
    p.gco2e = Some(grams);
    p.region = Some(c.grid.country.clone());
    p.pue = Some(c.pue);
    p.sci_gco2e = Some(sci);
    p.sci = Some(Sci {
        operational_g_per_1k: grams,
        embodied_g_per_1k: m / k,
        embodied_kg: c.embodied_kg,
        life_years: c.life_years,
        reserved_hours_per_run: hours,
        resource_share: 1.0,
        embodied_source: if c.embodied_kg == 1000.0 && c.life_years == 4.0 {
            "the SCI specification's example (1,000 kg, 4 years), not this machine's LCA"
        } else {
            "given on the command line"
        }
        .into(),
    });
    Ok(())
}

/// What a compression cost: its energy in joules, and whether every figure was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub joules: f64,
    pub measured: bool,
}

impl Cost {
    /// The sum of these sources.
    pub fn of<'a>(sources: impl IntoIterator<Item = &'a frugal_energy::SourceReading>) -> Cost {
        let mut c = Cost {
            joules: 0.0,
            measured: true,
        };
        let mut any = false;
        for s in sources {
            any = true;
            c.joules += s.joules;
            c.measured &= matches!(s.provenance, frugal_energy::Provenance::Measured { .. });
        }
        c.measured &= any;
        c
    }

    /// The energy of a report that carries one (a compression command's `--json` output, or
    /// `frugal measure -- CMD --json`'s).
    pub fn from_report(path: &Path) -> Result<Cost, Error> {
        #[derive(serde::Deserialize)]
        struct WithEnergy {
            energy: EnergyReport,
        }
        let bytes = frugal_formats::guard::read_capped(path, "report", 256 << 20)?;
        let r: WithEnergy = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "the cost report has no energy.sources (give the compression command's --json output): {}: {e}",
                path.display()
            ))
        })?;
        Ok(Cost::of(&r.energy.sources))
    }
}

/// A baseline's workload report, from `frugal measure BASELINE --json` output.
pub fn read_baseline(path: &Path) -> Result<WorkloadReport, Error> {
    let bytes = frugal_formats::guard::read_capped(path, "report", 256 << 20)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "the baseline report has no joules_per_unit (give `frugal measure BASELINE --json` output): {}: {e}",
            path.display()
        ))
    })
}

/// Adds the break-even of compressing: `cost` is the energy of the job that made this model,
/// `baseline` the `frugal measure` report of the model it replaces, run on the same workload.
/// Queries to pay back = cost J / (baseline − this model's J per query).
pub fn add_break_even(
    w: &mut WorkloadReport,
    baseline: &WorkloadReport,
    cost: &Cost,
) -> Result<(), Error> {
    if baseline.kind != w.kind || baseline.query != w.query {
        return Err(bad(format!(
            "the baseline was measured on another workload ({} / {}), not {} / {}",
            baseline.kind, baseline.query, w.kind, w.query
        )));
    }
    let base = baseline
        .joules_per_unit
        .scaled(baseline.units_per_query as f64);
    let this = w.joules_per_unit.scaled(w.units_per_query as f64);
    let base_measured = baseline.runs.iter().all(|r| r.measured);
    let measured = cost.measured && base_measured && w.runs.iter().all(|r| r.measured);
    w.break_even = Some(BreakEvenRecord::new(cost, base, this, measured));
    Ok(())
}

/// `frugal measure -- CMD`'s record: the command's energy, emissions where a grid is given,
/// the per-1,000-query figures when the number of queries is, and the EU AI Act block.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CommandReport {
    pub command: Vec<String>,
    pub exit_status: Option<i32>,
    pub energy: EnergyReport,
    pub carbon: Option<CommandCarbon>,
    pub per_1k_queries: Option<CommandPer1k>,
    pub eu_ai_act: frugal_report::exports::EuAiAct,
}

/// What a measured command was, for its exports.
#[derive(Debug, Clone)]
pub struct CommandJob {
    pub command: Vec<std::ffi::OsString>,
    pub meters: MeterOptions,
    /// Region and PUE (the embodied figures are not used for a command).
    pub carbon: Option<CarbonOptions>,
    pub queries: Option<u64>,
    pub training_type: frugal_report::exports::Activity,
    pub flops: Option<f64>,
    /// The model's name and version for the exports (default: the command line).
    pub model_name: Option<String>,
    pub model_version: String,
    pub supplier: Option<String>,
    /// The command's standard output to our standard error (for JSON callers).
    pub stdout_to_stderr: bool,
}

/// Runs and meters a command; returns its record, the exports' record and its exit status.
pub fn measure_command(
    job: &CommandJob,
) -> Result<(CommandReport, crate::ExportRecord, std::process::ExitStatus), Error> {
    let (program, args) = job
        .command
        .split_first()
        .ok_or_else(|| bad("no command to measure".into()))?;
    let (status, r) =
        frugal_energy::measure_command(program, args, &job.meters, job.stdout_to_stderr)
            .map_err(|e| bad(e.to_string()))?;
    let grams = job
        .carbon
        .as_ref()
        .map(|c| frugal_energy::carbon::operational_g(r.kwh(), c.pue, c.grid.g_per_kwh))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let carbon = job.carbon.as_ref().zip(grams).map(|(c, g)| CommandCarbon {
        grid: c.grid.clone(),
        pue: c.pue,
        operational_g: g,
        measured_energy: r.all_measured(),
    });
    let per_1k_queries = job.queries.filter(|&q| q > 0).map(|q| {
        let k = 1000.0 / q as f64;
        CommandPer1k {
            queries: q,
            wh: r.joules() / 3600.0 * k,
            gco2e: grams.map(|g| g * k),
        }
    });
    let record = frugal_report::exports::Record {
        seconds: r.seconds,
        joules: r.joules(),
        measured: r.all_measured(),
        method: r.method(),
        grams,
        region: job.carbon.as_ref().map(|c| c.grid.country.clone()),
        hardware: format!(
            "{} logical CPUs, {}",
            job.meters.estimate.logical_cpus, job.meters.estimate.cpu_model
        ),
        training_type: job.training_type,
        flops: job.flops,
        model: job.model_name.clone().unwrap_or_else(|| {
            job.command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        }),
        model_version: job.model_version.clone(),
        supplier: job.supplier.clone(),
    };
    let report = CommandReport {
        command: job
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        exit_status: status.code(),
        eu_ai_act: frugal_report::exports::eu_ai_act(&record),
        energy: r,
        carbon,
        per_1k_queries,
    };
    Ok((report, record, status))
}

/// The files `--export DIR` writes.
pub const EXPORT_FILES: [&str; 5] = [
    "model-card.md",
    "eu-ai-act.json",
    "boamps.json",
    "spdx.json",
    "cyclonedx.json",
];

/// Writes the exports of `record` into `dir` (created if needed), each file atomically:
/// `model-card.md`, `eu-ai-act.json`, `boamps.json`, `spdx.json` (SPDX 3.0.1, AI profile),
/// `cyclonedx.json` (CycloneDX 1.6 ML-BOM).
pub fn write_exports(dir: &Path, record: &crate::ExportRecord) -> Result<(), Error> {
    use frugal_report::exports::{boamps, cyclonedx, eu_ai_act, model_card, spdx, Stamp};
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|source| Error::OutputDir {
        path: dir.to_path_buf(),
        source,
    })?;
    fn json<T: Serialize>(v: T) -> String {
        serde_json::to_string_pretty(&v).expect("JSON serializes") + "\n"
    }
    let stamp = Stamp::now();
    let [card, eu, bo, sp, cdx] = EXPORT_FILES;
    for (name, text) in [
        (card, model_card(record)),
        (eu, json(eu_ai_act(record))),
        (bo, json(boamps(record))),
        (sp, json(spdx(record, &stamp))),
        (cdx, json(cyclonedx(record, &stamp))),
    ] {
        frugal_formats::output::write_atomic(&dir.join(name), &[], |f| {
            f.write_all(text.as_bytes())
        })?;
    }
    Ok(())
}

fn bad(m: String) -> Error {
    Error::Compress(frugal_compress::Error::BadOptions(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_percentiles_by_hand() {
        let e = estimate(&[1.0, 2.0, 3.0]);
        // sd 1, t(2) 4.303: 2 ± 4.303/√3.
        assert!((e.mean - 2.0).abs() < 1e-12);
        assert!((e.ci95.1 - (2.0 + 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert_eq!(estimate(&[5.0]).ci95, (5.0, 5.0));
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&s, 50.0), 3.0);
        assert!((percentile(&s, 90.0) - 4.6).abs() < 1e-12);
    }
}
