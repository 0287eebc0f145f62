//! `frugal measure`: the energy of a model's built-in workload or of any command.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Grid region for the emissions: ISO 3166-1 alpha-3 code (FRA, USA, …) or country name
    /// (shipped table of 213 regions, data/grid-intensity.csv).
    #[arg(long)]
    pub region: Option<String>,
    /// Power usage effectiveness of the data centre (1 = none counted).
    #[arg(long, default_value_t = 1.0)]
    pub pue: f64,
    /// Queries per metered run of MODEL (default 100), or the queries the command served
    /// (adds the figures per 1,000 queries).
    #[arg(long)]
    pub queries: Option<u64>,
    /// Also write the exports of this record into DIR: `model-card.md` (Hugging Face
    /// `co2_eq_emissions` front matter), `eu-ai-act.json` (Annex XI 2(d)-(e)), `boamps.json`.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// What the command does, for the exports (`fine-tuning`, `pre-training`,
    /// `quantization`, `inference`, …).
    #[arg(long, default_value = "fine-tuning")]
    pub training_type: String,
    /// Floating-point operations of the work, when known (Annex XI asks for them).
    #[arg(long)]
    pub flops: Option<f64>,
    /// MODEL with --region: the machine's embodied emissions (kg CO2e) for the SCI score.
    /// The default is the SCI specification's own example figure, not this machine's LCA.
    #[arg(long, default_value_t = 1000.0)]
    pub embodied_kg: f64,
    /// MODEL with --region: the machine's expected life in years for the SCI score (the
    /// specification's example: 4).
    #[arg(long, default_value_t = 4.0)]
    pub life_years: f64,
    /// A model to run the built-in inference workload on: a Frugal CNN `.safetensors`
    /// (with --data), a sentence-transformers folder, or a Llama GGUF.
    pub model: Option<PathBuf>,
    /// Classifiers: the images' data set (`digits`, `fashion-mnist`).
    #[arg(long)]
    pub data: Option<String>,
    /// MODEL: the `frugal measure --json` report of the model MODEL replaces (same
    /// workload), for the break-even of compressing (with --cost).
    #[arg(long, requires = "cost")]
    pub baseline: Option<PathBuf>,
    /// MODEL: the `--json` report of the compression that made MODEL (its `energy`, which
    /// includes the evaluation the command runs unless given --no-eval), or of `frugal
    /// measure -- CMD` around it: break-even = its joules / the saving per query.
    #[arg(long, requires = "baseline")]
    pub cost: Option<PathBuf>,
    /// MODEL: metered runs (each gives one energy figure; the interval is over them).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// MODEL: unmetered queries first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// MODEL (language models): tokens generated per prompt.
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// MODEL (language models): multiply in f32 on weights decoded when loading, instead
    /// of the stored types' quantized kernels.
    #[arg(long)]
    pub decoded_weights: bool,
    /// The command and its arguments, after `--` (instead of MODEL).
    #[arg(last = true)]
    pub command: Vec<std::ffi::OsString>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        json,
        region,
        pue,
        queries,
        export,
        training_type,
        flops,
        embodied_kg,
        life_years,
        model,
        data,
        repeats,
        warmup,
        tokens,
        decoded_weights,
        baseline,
        cost,
        command,
    } = args;
    let carbon = region
        .as_deref()
        .map(|r| {
            Ok::<_, frugal_energy::Error>(frugal_pipeline::measure::CarbonOptions {
                grid: frugal_energy::carbon::intensity(r)?,
                pue,
                embodied_kg,
                life_years,
            })
        })
        .transpose()
        .map_err(|e| BadUsage(e.to_string()))?;
    // Checked before running anything.
    frugal_energy::carbon::operational_g(0.0, pue, 0.0).map_err(|e| BadUsage(e.to_string()))?;
    // Read before anything runs: a bad path must not waste a measurement.
    let break_even_inputs = match (&baseline, &cost) {
        (Some(b), Some(c)) => Some((read_json_report(b)?, read_json_report(c)?)),
        _ => None,
    };
    let opts = frugal_energy::MeterOptions::detect();
    if let Some(model) = model {
        if !command.is_empty() {
            return Err(BadUsage("measure either MODEL or -- COMMAND, not both".into()).into());
        }
        if export.is_some() || flops.is_some() {
            return Err(BadUsage(
                "--export and --flops describe a measured command (a training or compression job), not a MODEL's inference workload".into(),
            )
            .into());
        }
        let job = frugal_pipeline::measure::MeasureJob {
            model,
            data,
            queries: queries.unwrap_or(100) as usize,
            repeats,
            warmup,
            tokens,
            weights: if decoded_weights {
                frugal_pipeline::measure::Weights::Decoded
            } else {
                frugal_pipeline::measure::Weights::Stored
            },
            // The built-in workloads run on the CPU: a GPU's whole-device counter would
            // add other processes' and idle energy.
            meters: frugal_energy::MeterOptions {
                nvml: false,
                ..opts
            },
        };
        let mut w = frugal_pipeline::measure::measure_model(&job)?;
        if let Some(c) = &carbon {
            frugal_pipeline::measure::add_carbon(&mut w, c)?;
        }
        if let Some((b, c)) = &break_even_inputs {
            frugal_pipeline::measure::add_break_even(&mut w, b, c)?;
        }
        return emit(json, &w, |w| {
            let how = if w.runs.iter().all(|r| r.measured) {
                "measured"
            } else {
                "estimated"
            };
            println!(
                "{} ({}): {} queries × {} runs after {} warm-up; a query is {}",
                w.model,
                w.kind,
                w.queries,
                w.runs.len(),
                w.warmup,
                w.query
            );
            println!(
                "  {:.4} J per {} (95 % CI {:.4}–{:.4}), {:.4} Wh per 1,000 queries ({:.4}–{:.4}), {how}",
                w.joules_per_unit.mean, w.unit, w.joules_per_unit.ci95.0, w.joules_per_unit.ci95.1,
                w.wh_per_1k_queries.mean, w.wh_per_1k_queries.ci95.0, w.wh_per_1k_queries.ci95.1
            );
            println!(
                "  {:.1} queries/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; peak RSS {:.0} MiB",
                w.queries_per_second.mean, w.latency_ms.p50, w.latency_ms.p90, w.latency_ms.p99,
                w.peak_rss_bytes as f64 / 1048576.0
            );
            if let Some(sci) = w.per_1k_queries["sci_gco2e"].as_f64() {
                println!(
                    "  SCI {sci:.6} gCO2e per 1,000 queries (embodied {:.6} g of it: {})",
                    w.per_1k_queries["sci"]["embodied_g_per_1k"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    w.per_1k_queries["sci"]["embodied_source"]
                        .as_str()
                        .unwrap_or("")
                );
            }
            if let Some(g) = w.per_1k_queries["gco2e"].as_f64() {
                println!(
                    "  {g:.6} gCO2e per 1,000 queries in {} at PUE {pue}",
                    w.per_1k_queries["region"]
                );
            }
            if let Some(b) = &w.break_even {
                println!(
                    "  compression {:.1} J, saving {:.3e} J per query: {}",
                    b["compression_joules"].as_f64().unwrap_or(f64::NAN),
                    b["saving_joules_per_query"].as_f64().unwrap_or(f64::NAN),
                    b["queries"].as_f64().map_or("never pays back".into(), |q| {
                        format!("pays back after {q:.3e} queries")
                    })
                );
            }
        });
    }
    if break_even_inputs.is_some() {
        return Err(BadUsage(
            "--baseline and --cost go with a MODEL's workload, not with -- COMMAND".into(),
        )
        .into());
    }
    if command.is_empty() {
        return Err(
            BadUsage("frugal measure MODEL, or frugal measure -- COMMAND [ARGS…]".into()).into(),
        );
    }
    let (out, record, status) =
        frugal_pipeline::measure::measure_command(&frugal_pipeline::measure::CommandJob {
            command,
            meters: opts,
            carbon,
            queries,
            training_type,
            flops,
            stdout_to_stderr: json,
        })?;
    if let Some(dir) = &export {
        frugal_pipeline::measure::write_exports(dir, &record)?;
    }
    let r = &out.energy;
    emit(json, &out, |_| {
        println!(
            "{} s, {:.3} J ({:.6} Wh), {}",
            format_args!("{:.3}", r.seconds),
            r.joules(),
            r.joules() / 3600.0,
            if r.all_measured() {
                "measured"
            } else {
                "estimated"
            }
        );
        for s in &r.sources {
            let how = match &s.provenance {
                frugal_energy::Provenance::Measured { counter } => {
                    format!("measured by {counter}")
                }
                frugal_energy::Provenance::Estimated { model, constants } => format!(
                    "estimated: {model}; {}",
                    constants
                        .iter()
                        .map(|(k, v)| format!("{k} = {v:.4}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            println!(
                "  {:14} {:12.3} J ± {:.0} %  {how}",
                s.source,
                s.joules,
                100.0 * s.uncertainty
            );
        }
        if let Some(c) = out.carbon.as_ref().and_then(|c| c.as_object()) {
            println!(
                "  {:.6} gCO2e operational at PUE {pue} in {} ({} g/kWh, {}; {})",
                c["operational_g"].as_f64().unwrap_or(f64::NAN),
                c["grid"]["country"].as_str().unwrap_or("?"),
                c["grid"]["g_per_kwh"],
                c["grid"]["year"],
                if r.all_measured() {
                    "measured energy"
                } else {
                    "estimated energy"
                }
            );
        }
    })?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        // The child's own code; killed by signal N (forwarded from Frugal or not):
        // 128 + N, as a shell reports it.
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .map_or(1, |c| u8::try_from(c).unwrap_or(1));
        return Err(ChildExit {
            code,
            status: status.to_string(),
        }
        .into());
    }
    Ok(())
}
