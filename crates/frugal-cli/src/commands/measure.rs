//! `frugal measure`: the energy of a model's built-in workload or of any command.

use super::*;
use frugal_pipeline::data::Dataset;
use frugal_pipeline::jobs::measure::{Measure, MeasureOutcome};
use frugal_pipeline::measure::Weights;

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
    #[arg(long, default_value_t = Measure::new().pue)]
    pub pue: f64,
    /// Queries per metered run of MODEL (default 100), or the queries the command served
    /// (adds the figures per 1,000 queries).
    #[arg(long)]
    pub queries: Option<u64>,
    /// Also write the exports of this record into DIR: `model-card.md` (Hugging Face
    /// `co2_eq_emissions` front matter), `eu-ai-act.json` (Annex XI 2(d)-(e)), `boamps.json`,
    /// `spdx.json` (SPDX 3.0.1 AI profile) and `cyclonedx.json` (CycloneDX 1.6 ML-BOM).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// What the command does, for the exports.
    #[arg(long, value_enum, default_value_t = Measure::new().training_type)]
    pub training_type: frugal_report::exports::Activity,
    /// The model the command makes or serves, for the SPDX and CycloneDX exports (default:
    /// the command line).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Its version, for the same exports.
    #[arg(long, default_value_t = Measure::new().model_version)]
    pub model_version: String,
    /// Who supplies the model (organisation or person), for the SPDX export.
    #[arg(long)]
    pub supplier: Option<String>,
    /// Floating-point operations of the work, when known (Annex XI asks for them).
    #[arg(long)]
    pub flops: Option<f64>,
    /// MODEL with --region: the machine's embodied emissions (kg CO2e) for the SCI score.
    /// The default is the SCI specification's own example figure, not this machine's LCA.
    #[arg(long, default_value_t = Measure::new().embodied_kg)]
    pub embodied_kg: f64,
    /// MODEL with --region: the machine's expected life in years for the SCI score (the
    /// specification's example: 4).
    #[arg(long, default_value_t = Measure::new().life_years)]
    pub life_years: f64,
    /// A model to run the built-in inference workload on: a Frugal CNN `.safetensors`
    /// (with --data), a sentence-transformers folder, or a Llama GGUF.
    pub model: Option<PathBuf>,
    /// Classifiers: the images' data set (`digits`, `fashion-mnist`).
    #[arg(long, value_parser = names::dataset)]
    pub data: Option<Dataset>,
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
    #[arg(long, default_value_t = Measure::new().repeats)]
    pub repeats: usize,
    /// MODEL: unmetered queries first.
    #[arg(long, default_value_t = Measure::new().warmup)]
    pub warmup: usize,
    /// MODEL (language models): tokens generated per prompt.
    #[arg(long, default_value_t = Measure::new().tokens)]
    pub tokens: usize,
    /// MODEL (language models): multiply in f32 on weights decoded when loading, instead
    /// of the stored types' quantized kernels.
    #[arg(long)]
    pub decoded_weights: bool,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// The command and its arguments, after `--` (instead of MODEL).
    #[arg(last = true)]
    pub command: Vec<std::ffi::OsString>,
}

pub fn run(a: Args) -> Result<()> {
    let job = Measure {
        model: a.model,
        command: a.command,
        region: a.region,
        pue: a.pue,
        embodied_kg: a.embodied_kg,
        life_years: a.life_years,
        queries: a.queries,
        export: a.export,
        training_type: a.training_type,
        flops: a.flops,
        model_name: a.model_name,
        model_version: a.model_version,
        supplier: a.supplier,
        data: a.data,
        baseline: a.baseline,
        cost: a.cost,
        repeats: a.repeats,
        warmup: a.warmup,
        tokens: a.tokens,
        weights: if a.decoded_weights {
            Weights::Decoded
        } else {
            Weights::Stored
        },
        max_memory: a.memory.max_memory,
        quiet_stdout: a.json,
    };
    let MeasureOutcome::Command(c) = execute(&job, a.json)? else {
        return Ok(());
    };
    match c.status {
        Some(status) if !status.success() => {
            use std::os::unix::process::ExitStatusExt;
            // The child's own code; killed by signal N (forwarded from Frugal or not):
            // 128 + N, as a shell reports it.
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .map_or(1, |c| u8::try_from(c).unwrap_or(1));
            Err(ChildExit {
                code,
                status: status.to_string(),
            }
            .into())
        }
        _ => Ok(()),
    }
}
