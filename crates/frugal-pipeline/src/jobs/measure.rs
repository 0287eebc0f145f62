//! `frugal measure`: the energy of a model's built-in inference workload (with emissions, the
//! SCI score and a compression's break-even), or of any command (with the standard exports).

use super::{opt_input, Job, Progress, ToText};
use crate::data::Dataset;
use crate::measure::{
    CarbonOptions, CommandJob, CommandReport, MeasureJob, Weights, WorkloadReport,
};
use crate::Error;
use frugal_energy::MeterOptions;
use frugal_formats::guard::{Expect, IoPlan};
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Measure {
    /// A model whose built-in workload runs …
    pub model: Option<PathBuf>,
    /// … or a command and its arguments.
    pub command: Vec<OsString>,
    /// Grid region (ISO 3166-1 alpha-3 code or country name) and data-centre PUE.
    pub region: Option<String>,
    pub pue: f64,
    /// The machine's embodied emissions (kg CO2e) and expected life (years), for SCI.
    pub embodied_kg: f64,
    pub life_years: f64,
    /// Queries per metered run of the model (default 100), or those the command served.
    pub queries: Option<u64>,
    /// Commands: the exports' folder, what the command does, its floating-point operations.
    pub export: Option<PathBuf>,
    pub training_type: frugal_report::exports::Activity,
    pub flops: Option<f64>,
    /// Commands: the model the work made or served, and its version, for the SPDX and
    /// CycloneDX records (default: the command line, `unspecified`).
    pub model_name: Option<String>,
    pub model_version: String,
    pub supplier: Option<String>,
    /// Models: the images of a classifier's queries.
    pub data: Option<Dataset>,
    /// Models: the reports of the model replaced and of the compression that made this one.
    pub baseline: Option<PathBuf>,
    pub cost: Option<PathBuf>,
    pub repeats: usize,
    pub warmup: usize,
    pub tokens: usize,
    pub weights: Weights,
    /// Language models: the memory budget (`--max-memory`; default what the machine has).
    pub max_memory: Option<u64>,
    /// Commands: their standard output to our standard error (a JSON caller's stdout stays clean).
    pub quiet_stdout: bool,
}

impl Measure {
    /// Every setting its default (a model or a command still to give).
    pub fn new() -> Measure {
        Measure {
            model: None,
            command: Vec::new(),
            region: None,
            pue: 1.0,
            embodied_kg: 1000.0,
            life_years: 4.0,
            queries: None,
            export: None,
            training_type: frugal_report::exports::Activity::FineTuning,
            flops: None,
            model_name: None,
            model_version: "unspecified".into(),
            supplier: None,
            data: None,
            baseline: None,
            cost: None,
            repeats: 5,
            warmup: 5,
            tokens: 16,
            weights: Weights::default(),
            max_memory: None,
            quiet_stdout: false,
        }
    }
}

impl Default for Measure {
    fn default() -> Self {
        Measure::new()
    }
}

/// A measured command: its record, and how it ended.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CommandOutcome {
    #[serde(flatten)]
    pub report: CommandReport,
    /// The command's exit status (the binary exits with its code when it failed).
    #[serde(skip)]
    pub status: Option<std::process::ExitStatus>,
}

/// What `frugal measure` measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per command run: its size does not matter
pub enum MeasureOutcome {
    Model(WorkloadReport),
    Command(CommandOutcome),
}

impl Job for Measure {
    type Report = MeasureOutcome;
    const KIND: &'static str = "measure";

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        if let Some(m) = &self.model {
            p.add_input("model", m, Expect::FileOrDir);
        }
        opt_input(&mut p, "--baseline", self.baseline.as_deref());
        opt_input(&mut p, "--cost", self.cost.as_deref());
        if let Some(d) = &self.export {
            p.output_into("--export", d, &crate::measure::EXPORT_FILES);
        }
        p
    }

    fn run(&self, _progress: Progress) -> Result<MeasureOutcome, Error> {
        let usage = |m: &str| Err(Error::Usage(m.into()));
        let carbon = self
            .region
            .as_deref()
            .map(|r| {
                Ok::<_, frugal_energy::Error>(CarbonOptions {
                    grid: frugal_energy::carbon::intensity(r)?,
                    pue: self.pue,
                    embodied_kg: self.embodied_kg,
                    life_years: self.life_years,
                })
            })
            .transpose()
            .map_err(|e| Error::Usage(e.to_string()))?;
        // Checked before running anything.
        frugal_energy::carbon::operational_g(0.0, self.pue, 0.0)
            .map_err(|e| Error::Usage(e.to_string()))?;
        // Read before anything runs: a bad path must not waste a measurement.
        let break_even = match (&self.baseline, &self.cost) {
            (Some(b), Some(c)) => Some((
                crate::measure::read_baseline(b)?,
                crate::measure::Cost::from_report(c)?,
            )),
            _ => None,
        };
        let opts = MeterOptions::detect();
        let Some(model) = &self.model else {
            if break_even.is_some() {
                return usage(
                    "--baseline and --cost go with a MODEL's workload, not with -- COMMAND",
                );
            }
            if self.command.is_empty() {
                return usage("frugal measure MODEL, or frugal measure -- COMMAND [ARGS…]");
            }
            return self.command(opts, carbon).map(MeasureOutcome::Command);
        };
        if !self.command.is_empty() {
            return usage("measure either MODEL or -- COMMAND, not both");
        }
        if self.export.is_some()
            || self.flops.is_some()
            || self.model_name.is_some()
            || self.supplier.is_some()
        {
            return usage("--export, --flops, --model-name and --supplier describe a measured command (a training or compression job), not a MODEL's inference workload");
        }
        let job = MeasureJob {
            model: model.clone(),
            data: self.data,
            queries: self.queries.unwrap_or(100) as usize,
            repeats: self.repeats,
            warmup: self.warmup,
            tokens: self.tokens,
            weights: self.weights,
            // The built-in workloads run on the CPU: a GPU's whole-device counter would add
            // other processes' and idle energy.
            meters: MeterOptions {
                nvml: false,
                ..opts
            },
            max_memory: self.max_memory,
        };
        let mut w = crate::measure::measure_model(&job)?;
        if let Some(c) = &carbon {
            crate::measure::add_carbon(&mut w, c)?;
        }
        if let Some((b, c)) = &break_even {
            crate::measure::add_break_even(&mut w, b, c)?;
        }
        Ok(MeasureOutcome::Model(w))
    }
}

impl Measure {
    fn command(
        &self,
        meters: MeterOptions,
        carbon: Option<CarbonOptions>,
    ) -> Result<CommandOutcome, Error> {
        let (report, record, status) = crate::measure::measure_command(&CommandJob {
            command: self.command.clone(),
            meters,
            carbon,
            queries: self.queries,
            training_type: self.training_type,
            flops: self.flops,
            model_name: self.model_name.clone(),
            model_version: self.model_version.clone(),
            supplier: self.supplier.clone(),
            stdout_to_stderr: self.quiet_stdout,
        })?;
        if let Some(dir) = &self.export {
            crate::measure::write_exports(dir, &record)?;
        }
        Ok(CommandOutcome {
            report,
            status: Some(status),
        })
    }
}

impl ToText for MeasureOutcome {
    fn to_text(&self) -> String {
        match self {
            MeasureOutcome::Model(w) => workload_text(w),
            MeasureOutcome::Command(c) => command_text(&c.report),
        }
    }
}

fn workload_text(w: &WorkloadReport) -> String {
    let how = if w.runs.iter().all(|r| r.measured) {
        "measured"
    } else {
        "estimated"
    };
    let mut t = format!(
        "{} ({}): {} queries × {} runs after {} warm-up; a query is {}{}\n",
        w.model,
        w.kind,
        w.queries,
        w.runs.len(),
        w.warmup,
        w.query,
        w.served
            .as_deref()
            .map_or(String::new(), |s| format!(", {s}"))
    );
    t +=
        &format!(
        "  {:.4} J per {} (95 % CI {:.4}–{:.4}), {:.4} Wh per 1,000 queries ({:.4}–{:.4}), {how}\n",
        w.joules_per_unit.mean, w.unit, w.joules_per_unit.ci95.0, w.joules_per_unit.ci95.1,
        w.wh_per_1k_queries.mean, w.wh_per_1k_queries.ci95.0, w.wh_per_1k_queries.ci95.1
    );
    t +=
        &format!(
        "  {:.1} queries/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; peak RSS {:.0} MiB\n",
        w.queries_per_second.mean, w.latency_ms.p50, w.latency_ms.p90, w.latency_ms.p99,
        w.peak_rss_bytes as f64 / 1048576.0
    );
    let p = &w.per_1k_queries;
    if let (Some(sci), Some(s)) = (p.sci_gco2e, &p.sci) {
        t += &format!(
            "  SCI {sci:.6} gCO2e per 1,000 queries (embodied {:.6} g of it: {})\n",
            s.embodied_g_per_1k, s.embodied_source
        );
    }
    if let (Some(g), Some(region), Some(pue)) = (p.gco2e, &p.region, p.pue) {
        t += &format!("  {g:.6} gCO2e per 1,000 queries in {region} at PUE {pue}\n");
    }
    if let Some(b) = &w.break_even {
        t += &format!(
            "  compression {:.1} J; {}: {}\n",
            b.compression_joules,
            b.verdict,
            b.queries.map_or("no break-even".into(), |q| format!(
                "pays back after {q:.3e} queries"
            ))
        );
    }
    t
}

fn command_text(c: &CommandReport) -> String {
    let r = &c.energy;
    let how = if r.all_measured() {
        "measured"
    } else {
        "estimated"
    };
    let mut t = format!(
        "{:.3} s, {:.3} J ({:.6} Wh), {how}\n",
        r.seconds,
        r.joules(),
        r.joules() / 3600.0
    );
    for s in &r.sources {
        let how = match &s.provenance {
            frugal_energy::Provenance::Measured { counter } => format!("measured by {counter}"),
            frugal_energy::Provenance::Estimated { model, constants } => format!(
                "estimated: {model}; {}",
                constants
                    .iter()
                    .map(|(k, v)| format!("{k} = {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        t += &format!(
            "  {:14} {:12.3} J ± {:.0} %  {how}\n",
            s.source,
            s.joules,
            100.0 * s.uncertainty
        );
    }
    if let Some(k) = &c.carbon {
        t += &format!(
            "  {:.6} gCO2e operational at PUE {} in {} ({} g/kWh, {}; {} energy)\n",
            k.operational_g, k.pue, k.grid.country, k.grid.g_per_kwh, k.grid.year, how
        );
    }
    t
}
