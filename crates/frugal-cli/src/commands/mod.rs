//! The commands of the `frugal` binary, one file each: each turns its arguments into the
//! library's options, calls the library and prints the result. What they share: usage errors,
//! printing a report (JSON or text, with a metered command's energy), progress bars.

pub mod brown_text;
pub mod check;
pub mod convert;
pub mod dequantize;
pub mod distill;
pub mod eval;
pub mod export;
pub mod imatrix;
pub mod inspect;
pub mod measure;
pub mod prune;
pub mod quantize;
pub mod run;
pub mod tune;

pub(crate) use anyhow::Result;
pub(crate) use frugal_formats::guard::IoPlan;
pub(crate) use frugal_pipeline::checks::{names, parse};
pub(crate) use frugal_pipeline::jobs::{Job, ToText};
pub(crate) use frugal_pipeline::schema::Document;
pub(crate) use std::path::PathBuf;

/// How calibration text is cut: the options `quantize`, `prune` and `tune` share.
#[derive(clap::Args)]
pub struct CalibChunks {
    /// At most this many calibration tokens (whole chunks).
    #[arg(long, default_value_t = frugal_pipeline::steps::CalibSpec::DEFAULT_TOKENS, value_parser = parse::count)]
    pub calib_tokens: usize,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = frugal_pipeline::steps::CalibSpec::DEFAULT_CTX, value_parser = parse::seq_ctx)]
    pub calib_ctx: usize,
}

/// The memory budget of a command that runs a language model: its plan is printed before
/// any work and refused when over the budget.
#[derive(clap::Args)]
pub struct MemoryArgs {
    /// At most this much memory (e.g. 6G, 512M; default: what the machine has available,
    /// less a tenth). The run's plan is printed first; a plan over the budget is refused.
    #[arg(long, value_parser = frugal_models::memory::parse_size)]
    pub max_memory: Option<u64>,
}

/// The evaluation of a compressed language model against its input (a distilled one: its
/// teacher): the options `quantize`, `prune` and `distill` share.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Text to evaluate the output on (default: Brown cj01–cj12 from the fetched corpus).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Chunks of 512 tokens to evaluate.
    #[arg(long, default_value_t = frugal_pipeline::steps::EvalSpec::DEFAULT_CHUNKS, value_parser = parse::count)]
    pub eval_chunks: usize,
    /// Skip the evaluation of the output.
    #[arg(long)]
    pub no_eval: bool,
}

impl EvalArgs {
    /// The text the output is judged on.
    pub fn text(&self) -> frugal_pipeline::jobs::EvalText {
        frugal_pipeline::jobs::EvalText::from_options(self.no_eval, self.eval_text.clone())
    }
}

/// A usage error found after parsing (options that do not fit the input): exit code 2.
#[derive(Debug)]
pub(crate) struct BadUsage(pub String);

impl std::fmt::Display for BadUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadUsage {}

/// `frugal measure -- CMD` whose command failed: Frugal exits with the command's code.
#[derive(Debug)]
pub(crate) struct ChildExit {
    pub code: u8,
    pub status: String,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the measured command failed ({})", self.status)
    }
}

impl std::error::Error for ChildExit {}

/// Checks a job's paths, runs it under a progress bar (metered where the job says so) and
/// prints its report: JSON, or its text. Returns the report.
// The library's error is returned once per run: its size does not matter here.
#[allow(clippy::result_large_err)]
pub(crate) fn execute<J: Job>(job: &J, json: bool) -> Result<J::Report> {
    job.io_plan().check()?;
    let bar = progress_bar();
    let progress = |what: &str, done: usize, total: usize| show_stage(&bar, what, done, total);
    if J::METERED {
        let meters = frugal_energy::MeterOptions::detect_cpu();
        let m = frugal_energy::metered(&meters, || job.run(&progress))?;
        bar.finish_and_clear();
        print(json, J::KIND, &m)?;
        Ok(m.report)
    } else {
        let r = job.run(&progress)?;
        bar.finish_and_clear();
        print(json, J::KIND, &r)?;
        Ok(r)
    }
}

/// Prints a report on rank 0 (the job's result): JSON (a [`Document`] of the command
/// `kind`), or its text.
fn print<T: serde::Serialize + ToText>(json: bool, kind: &'static str, report: &T) -> Result<()> {
    if !frugal_dist::is_root() {
        return Ok(());
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Document::new(kind, report))?
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Shows a staged step's progress (`what` is the stage: imatrix, gptq, tensors, chunks).
pub(crate) fn show_stage(bar: &indicatif::ProgressBar, what: &str, done: usize, total: usize) {
    bar.set_message(what.to_string());
    bar.set_length(total as u64);
    bar.set_position(done as u64);
}

/// A progress bar on standard error, hidden when it is not a terminal.
pub(crate) fn progress_bar() -> indicatif::ProgressBar {
    if !frugal_dist::is_root() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} {msg} (eta {eta})",
        )
        .expect("valid template"),
    );
    bar
}
