//! `frugal measure MODEL`: a built-in inference workload run under the energy meters, with
//! warm-up, repeats and confidence intervals.
//!
//! - Classifier (a Frugal CNN `.safetensors`): N images of its data set, one query each
//!   (batch 1, the hand-written forward pass, weights decoded once); the unit is an image.
//! - Encoder (a sentence-transformers folder): N Brown sentences, one query each; the unit is a
//!   sentence.
//! - Language model (GGUF): N prompts of 32 tokens of Brown text, each followed by M greedily
//!   generated tokens; the unit is a generated token (each token re-runs the whole sequence:
//!   this decoder has no KV cache, so the figures are an upper bound for a cached server).
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
    /// Classifiers: `digits` or `fashion-mnist`.
    pub data: Option<String>,
    pub queries: usize,
    pub repeats: usize,
    pub warmup: usize,
    /// Language models: tokens generated per prompt.
    pub tokens: usize,
    pub meters: MeterOptions,
}

/// A mean with its 95 % interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub ci95: (f64, f64),
}

/// The two-sided 95 % Student-t quantile for `df` degrees of freedom.
fn t95(df: usize) -> f64 {
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

/// Mean and 95 % interval of `xs` (the interval is the mean alone for one value).
pub fn estimate(xs: &[f64]) -> Estimate {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n.max(1.0);
    if xs.len() < 2 {
        return Estimate {
            mean,
            ci95: (mean, mean),
        };
    }
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let h = t95(xs.len() - 1) * sd / n.sqrt();
    Estimate {
        mean,
        ci95: (mean - h, mean + h),
    }
}

/// One metered run.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatRecord {
    pub seconds: f64,
    pub joules: f64,
    pub measured: bool,
}

/// What the workload measured.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub model: String,
    pub kind: &'static str,
    /// What one query is, and what the energy is divided by.
    pub query: String,
    pub unit: &'static str,
    pub queries: usize,
    pub units_per_query: usize,
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
    pub per_1k_queries: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
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
    let (kind, query, unit, per_query, mut run): (&str, String, &str, usize, Query) = if path
        .is_dir()
    {
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
    } else if is_gguf(path) {
        let f = frugal_formats::gguf::GgufFile::open(path)?;
        let model =
            frugal_models::llama::Llama::load(&f, frugal_models::llama::LoadOptions::EXACT, &dev)
                .map_err(me)?;
        let tok = frugal_models::tokenizer::GgufTokenizer::from_gguf(&f).map_err(me)?;
        let brown = frugal_formats::assets::brown_dir();
        let ids = frugal_formats::brown::select_ids(&brown, "cj13-cj20")?;
        let text = frugal_formats::brown::plain_text(&brown, &ids)?;
        let all = tok.encode(&text, false).map_err(me)?;
        let prompts: Vec<Vec<u32>> = all.chunks_exact(32).take(64).map(|c| c.to_vec()).collect();
        if prompts.is_empty() || job.tokens == 0 {
            return Err(bad(
                "language models need --tokens > 0 and Brown text".into()
            ));
        }
        let m = job.tokens;
        (
            "language-model",
            format!("a 32-token Brown prompt and {m} generated tokens"),
            "token",
            m,
            Box::new(move |i| {
                let mut seq = prompts[i % prompts.len()].clone();
                for _ in 0..m {
                    let logits: Vec<f32> = model
                        .forward_from(&seq, seq.len() - 1)
                        .and_then(|t| Ok(t.flatten_all()?.to_vec1()?))
                        .map_err(me)?;
                    let next = logits
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                        )
                        .0;
                    seq.push(next as u32);
                }
                Ok(())
            }),
        )
    } else {
        let data = job.data.clone().ok_or_else(|| {
            bad("a classifier is measured on images: --data digits|fashion-mnist".into())
        })?;
        let model =
            frugal_models::cnn::Cnn::load(path, &dev).map_err(frugal_compress::Error::from)?;
        let set = match data.as_str() {
            "digits" => frugal_formats::digits::embedded_digits(),
            "fashion-mnist" => {
                frugal_formats::idx::read_fashion_mnist(
                    &frugal_formats::assets::fashion_mnist_dir(),
                )?
                .1
            }
            other => {
                return Err(bad(format!(
                    "unknown data set `{other}` (digits, fashion-mnist)"
                )))
            }
        };
        let n = set.len();
        // The weights decoded and the scratch buffers made once: a query is one forward pass.
        let params = model
            .flat_parameters()
            .map_err(frugal_compress::Error::from)?;
        let mut ws = frugal_models::cnn_kernels::Workspace::default();
        (
            "classifier",
            "one image of the data set classified (batch 1)".into(),
            "image",
            1,
            Box::new(move |i| {
                let (x, _) = frugal_models::cnn::batch_pixels(&set, &[i % n]);
                let logits =
                    frugal_models::cnn_kernels::forward(&model.config, &params, &x, 1, &mut ws);
                std::hint::black_box(logits);
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
        kind,
        query,
        unit,
        queries: job.queries,
        units_per_query: per_query,
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
        per_1k_queries: serde_json::json!({ "queries": job.queries, "wh": wh.mean }),
    })
}

fn is_gguf(path: &Path) -> bool {
    frugal_formats::inspect::sniff_format(path).ok()
        == Some(frugal_formats::inspect::ModelFormat::Gguf)
}

fn bad(m: String) -> Error {
    Error::Compress(frugal_compress::Error::BadOptions(m))
}

/// The model kind a path holds, for messages.
pub fn describe(path: &Path) -> &'static str {
    if path.is_dir() {
        "encoder"
    } else if is_gguf(path) {
        "language model"
    } else {
        "classifier"
    }
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
