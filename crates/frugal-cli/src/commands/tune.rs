//! `frugal tune`: the smallest (or lowest-energy) quantized model within a quality limit.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF, or CNN classifier (.safetensors): the reference the limit is measured
    /// against.
    pub input: PathBuf,
    /// Output file.
    #[arg(short = 'o', long = "out")]
    pub output: PathBuf,
    /// Mean KL divergence per token from the input, nats.
    #[arg(long, conflicts_with_all = ["max_ppl_increase_pct", "policy", "max_accuracy_drop_pt"])]
    pub max_kld: Option<f64>,
    /// Perplexity increase over the input's, per cent.
    #[arg(long, conflicts_with_all = ["policy", "max_accuracy_drop_pt"])]
    pub max_ppl_increase_pct: Option<f64>,
    /// Classifiers: test-accuracy drop from the input's, in points.
    #[arg(long, conflicts_with = "policy", requires = "data")]
    pub max_accuracy_drop_pt: Option<f64>,
    /// A policy file: its `max_kld` (else `max_ppl_increase_pct`; classifiers:
    /// `max_accuracy_drop_pt`) is the limit.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Classifiers: `digits` or `fashion-mnist` (its test images, halved).
    #[arg(long)]
    pub data: Option<String>,
    /// Classifiers: seed of the split of the test images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The GGUF type whose rules decide which tensors are quantized (and name the file).
    #[arg(long = "type", default_value = "Q4_K_M")]
    pub ty: String,
    /// Language models: calibration text (importance matrix).
    #[arg(long, required_unless_present = "data")]
    pub calib: Option<PathBuf>,
    /// At most this many calibration tokens (whole chunks).
    #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
    pub calib_tokens: usize,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
    pub calib_ctx: usize,
    /// Language models: text the search judges candidates on.
    #[arg(long = "eval", required_unless_present = "data")]
    pub search: Option<PathBuf>,
    /// Language models: different text the result is verified on.
    #[arg(long, required_unless_present = "data")]
    pub heldout: Option<PathBuf>,
    /// Chunks of 512 tokens of each text to judge on.
    #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
    pub eval_chunks: usize,
    /// Stop bisecting when the bracket is narrower than this (bits per weight).
    #[arg(long, default_value_t = 0.1)]
    pub bpw_tolerance: f64,
    /// At most this many candidates judged in all.
    #[arg(long, default_value_t = 10)]
    pub max_evals: usize,
    /// Language models: what to minimise — `size` (bytes) or `energy` (the kernel time per
    /// generated token of the served model, F16 and F32 tensors allowed where faster).
    #[arg(long, default_value = "size")]
    pub objective: String,
    /// Language models, size objective: skip measuring every candidate's energy per token
    /// on `frugal measure`'s workload (about 20 s a candidate on 2 cores; the report's
    /// energy chart is then empty).
    #[arg(long)]
    pub no_energy: bool,
    /// Language models: keep at most this many MiB of the input's logits between
    /// candidates, so its forward pass runs once per chunk (50 MiB a 512-token chunk of
    /// SmolLM2); 0 recomputes them for every candidate.
    #[arg(long, default_value_t = 2048)]
    pub reference_cache_mib: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        input,
        output,
        max_kld,
        max_ppl_increase_pct,
        max_accuracy_drop_pt,
        policy,
        data,
        seed,
        ty,
        calib,
        calib_tokens,
        calib_ctx,
        search,
        heldout,
        eval_chunks,
        bpw_tolerance,
        max_evals,
        objective,
        no_energy,
        reference_cache_mib,
        json,
    } = args;
    use frugal_pipeline::tune::{Objective, QualityLimit};
    let objective = match objective.as_str() {
        "size" => Objective::Size,
        "energy" => Objective::Energy,
        o => return Err(BadUsage(format!("--objective {o}: size or energy")).into()),
    };
    if let Some(data) = data {
        if objective == Objective::Energy {
            return Err(BadUsage(
                "--objective energy is for GGUF language models: the classifier workload multiplies decoded f32 weights, so every plan costs the same energy".into(),
            )
            .into());
        }
        let limit = match (max_kld, max_ppl_increase_pct, max_accuracy_drop_pt, &policy) {
            (None, None, Some(d), None) => d,
            (None, None, None, Some(p)) => {
                let p = frugal_report::policy::Policy::load(p)
                    .map_err(|e| BadUsage(e.to_string()))?;
                p.number("max_accuracy_drop_pt")
                    .ok_or_else(|| {
                        BadUsage(format!(
                            "{}: no max_accuracy_drop_pt clause to tune a classifier for",
                            p.path
                        ))
                    })?
            }
            _ => {
                return Err(BadUsage(
                    "a classifier (--data) is tuned for --max-accuracy-drop-pt or a --policy with that clause".into(),
                )
                .into())
            }
        };
        let job = frugal_pipeline::tune_classifier::ClassifierTuneJob {
            input,
            output,
            data,
            max_drop_pt: limit,
            seed,
            max_evals,
        };
        let bar = progress_bar("");
        let r = frugal_pipeline::tune_classifier::tune_classifier(&job, &|what, d, t| {
            show_stage(&bar, what, d, t)
        })?;
        bar.finish_and_clear();
        return emit(json, &r, |r| {
            println!(
                "frugal tune: {} → {} ({}, accuracy drop ≤ {} points)",
                r.input, r.output, r.data, r.max_accuracy_drop_pt
            );
            println!(
                "  {:>3} {:>10} {:>12} {:>12}  plan",
                "#", "bytes", "search pt", "held-out pt"
            );
            for (k, c) in r.candidates.iter().enumerate() {
                println!(
                    "  {k:>3} {:>10} {:>12.2} {:>12}  {}{}",
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
            println!(
                "  input {:.2} % / {:.2} % (search / held-out, {} / {} images); {} of {} bytes ({:.2}×) in {:.1} s",
                r.reference_search_pct, r.reference_heldout_pct, r.n_search, r.n_heldout,
                r.output_bytes, r.input_bytes,
                r.input_bytes as f64 / r.output_bytes.max(1) as f64, r.seconds
            );
            println!("  plan     {}", r.plan_file);
        });
    }
    let (Some(calib), Some(search), Some(heldout)) = (calib, search, heldout) else {
        return Err(BadUsage(
            "a language model is tuned with --calib, --eval and --heldout".into(),
        )
        .into());
    };
    let limit = match (max_kld, max_ppl_increase_pct, &policy) {
        (Some(x), None, None) => QualityLimit::MaxKld(x),
        (None, Some(x), None) => QualityLimit::MaxPplIncreasePct(x),
        (None, None, Some(p)) => {
            let p = frugal_report::policy::Policy::load(p).map_err(|e| BadUsage(e.to_string()))?;
            QualityLimit::from_policy(&p).ok_or_else(|| {
                BadUsage(format!(
                    "{}: no max_kld or max_ppl_increase_pct clause to tune for",
                    p.path
                ))
            })?
        }
        _ => {
            return Err(BadUsage(
                "give one limit: --max-kld, --max-ppl-increase-pct or --policy".into(),
            )
            .into())
        }
    };
    let spec = |text: PathBuf| frugal_pipeline::quantize::EvalSpec {
        text,
        ctx: 512,
        chunks: Some(eval_chunks),
    };
    let job = frugal_pipeline::tune::TuneJob {
        input,
        output,
        limit,
        target: ty,
        calib: frugal_pipeline::quantize::CalibSpec {
            text: calib,
            ctx: calib_ctx,
            max_tokens: calib_tokens,
        },
        search: spec(search),
        heldout: spec(heldout),
        bpw_tolerance,
        max_evals,
        objective,
        measure_energy: !no_energy,
        reference_cache_bytes: reference_cache_mib.saturating_mul(1 << 20),
    };
    let bar = progress_bar("");
    let report = frugal_pipeline::tune::tune(&job, &|what, done, total| {
        show_stage(&bar, what, done, total)
    })?;
    bar.finish_and_clear();
    let html = frugal_pipeline::tune::report_path(&job.output);
    emit(json, &report, |r| {
        println!("frugal tune: {} → {}", r.input, r.output);
        println!(
            "  {:>3} {:>9} {:>6} {:>10} {:>10} {:>11} {:>16}",
            "#", "MiB", "bpw", "search", "held-out", "kernel µs", "J/token (95 %)"
        );
        for (k, c) in r.candidates.iter().enumerate() {
            let v = |j: &frugal_pipeline::tune::Judged| match r.limit {
                QualityLimit::MaxKld(_) => j.kld,
                QualityLimit::MaxPplIncreasePct(_) => j.ppl_increase_pct,
            };
            println!(
                "  {k:>3} {:>9.2} {:>6.3} {:>10.5} {:>10} {:>11} {:>16}  {}",
                c.bytes as f64 / 1048576.0,
                c.bits_per_weight,
                v(&c.search),
                c.heldout
                    .as_ref()
                    .map_or("-".into(), |h| format!("{:.5}", v(h))),
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
        println!(
            "  limit    {:?}, objective {:?}; {} of {} bytes ({:.2}×); {:.0} s (imatrix {:.0}, sensitivity {:.0}, pricing {:.0}, search {:.0} of which energy {:.0})",
            r.limit,
            r.objective,
            r.output_bytes,
            r.input_bytes,
            r.input_bytes as f64 / r.output_bytes.max(1) as f64,
            r.seconds.total,
            r.seconds.imatrix,
            r.seconds.sensitivity,
            r.seconds.pricing,
            r.seconds.search,
            r.seconds.energy
        );
        if let Some(w) = &r.energy_workload {
            let e = r.candidates[r.chosen].energy.as_ref();
            println!(
                "  energy   {w}; {}",
                e.map_or(String::new(), |e| format!(
                    "{} ({})",
                    if e.measured { "measured" } else { "estimated" },
                    e.provenance
                ))
            );
        }
        println!("  recipe   {}", r.recipe);
        println!("  report   {}", html.display());
    })?;
    Ok(())
}
