//! One job per `frugal` command, the whole command apart from parsing and printing: its
//! options (with their defaults), the paths it reads and writes ([`Job::io_plan`], checked
//! before any work), the routing by model kind ([`crate::kind::ModelKind`]) and a typed
//! report with its text ([`ToText`]). The binary turns arguments into a job, runs it
//! (metered where [`Job::METERED`]) and prints the report.

pub mod check;
pub mod distill;
pub mod eval;
pub mod measure;
pub mod prune;
pub mod quantize;
pub mod run;
pub mod tune;

use crate::steps::EvalSpec;
use crate::Error;
use frugal_formats::guard::IoPlan;
use frugal_models::memory::MemoryPlan;
use frugal_models::scratch::Placement;
use std::path::{Path, PathBuf};

/// Progress of a job: the stage's name (`imatrix`, `gptq`, `tensors`, `chunks`, `epoch 2,
/// loss 0.31`), work done and work in all.
pub type Progress<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// A command's work.
pub trait Job {
    /// What the command prints (`--json`, or its [`ToText`]).
    type Report: serde::Serialize + ToText;
    /// The command's name: the report's `report` tag ([`crate::schema::Document`]).
    const KIND: &'static str;
    /// Whether the command's own energy is metered and reported (compressions: the cost a
    /// break-even is computed from).
    const METERED: bool = false;
    /// Every path the job reads and writes.
    fn io_plan(&self) -> IoPlan;
    /// Does the work.
    fn run(&self, progress: Progress) -> Result<Self::Report, Error>;
}

/// A report as text, as the command prints it without `--json`.
pub trait ToText {
    fn to_text(&self) -> String;
}

impl<T: ToText> ToText for frugal_energy::Metered<T> {
    fn to_text(&self) -> String {
        format!("{}{}\n", self.report.to_text(), self.energy_line())
    }
}

/// The text a compressed language model is judged on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EvalText {
    /// No evaluation (`--no-eval`).
    Skip,
    /// This file (`--eval-text`).
    File(PathBuf),
    /// Brown cj01–cj12 from the fetched corpus (skipped, with a warning, when not fetched).
    #[default]
    Brown,
}

impl EvalText {
    /// From `--no-eval` and `--eval-text`.
    pub fn from_options(skip: bool, file: Option<PathBuf>) -> EvalText {
        match (skip, file) {
            (true, _) => EvalText::Skip,
            (false, Some(f)) => EvalText::File(f),
            (false, None) => EvalText::Brown,
        }
    }

    /// The file read, if any (for the I/O plan).
    pub fn file(&self) -> Option<&Path> {
        match self {
            EvalText::File(f) => Some(f),
            _ => None,
        }
    }

    /// The evaluation of `chunks` chunks of 512 tokens; Brown's text is written into `tmp`.
    pub fn spec(&self, chunks: usize, tmp: &Path) -> Result<Option<EvalSpec>, Error> {
        let text = match self {
            EvalText::Skip => return Ok(None),
            EvalText::File(f) => f.clone(),
            EvalText::Brown => {
                let dir = frugal_formats::assets::brown_dir();
                if !dir.exists() {
                    eprintln!("frugal: no evaluation text: pass --eval-text FILE, or fetch the Brown corpus (scripts/fetch-assets.sh brown); skipping the evaluation");
                    return Ok(None);
                }
                let ids = frugal_formats::brown::select_ids(&dir, "cj01-cj12")?;
                let p = tmp.join("brown-cj01-cj12.txt");
                let text = frugal_formats::brown::plain_text(&dir, &ids)?;
                std::fs::write(&p, text)
                    .map_err(|e| frugal_formats::Error::io(&p, "writing the evaluation text", e))?;
                p
            }
        };
        Ok(Some(EvalSpec {
            text,
            ctx: 512,
            chunks: Some(chunks),
        }))
    }
}

/// A temporary folder for texts a job writes (Brown's evaluation text).
pub(crate) fn scratch() -> Result<tempfile::TempDir, Error> {
    tempfile::TempDir::new().map_err(|e| {
        frugal_formats::Error::io(&std::env::temp_dir(), "creating a temporary folder", e).into()
    })
}

/// Adds `path` as an input when given.
pub(crate) fn opt_input(p: &mut IoPlan, what: &str, path: Option<&Path>) {
    if let Some(x) = path {
        p.input(what, x);
    }
}

/// MiB, for text.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Prints a run's memory plan (rank 0) and refuses it, before any work, when it exceeds the
/// budget: `max_memory` (`--max-memory`), or by default what the machine has available less a
/// margin. `remedy` says what would make it fit.
pub(crate) fn check_memory(
    plan: &frugal_models::memory::MemoryPlan,
    max_memory: Option<u64>,
    remedy: &str,
) -> Result<(), Error> {
    let budget = frugal_models::memory::Budget::from_option(max_memory);
    if frugal_dist::world().rank() == 0 {
        eprintln!("frugal: {}", plan.to_text());
    }
    plan.check(&budget, remedy)
        .map_err(|e| frugal_compress::Error::from(e).into())
}

/// Where a run's scratch buffers go, and its plan so: in files in `forced` when given; else in
/// memory when the memory plan fits the budget (`max_memory`, or what the machine has), else in
/// unnamed scratch files in the output's folder when the plan is smaller so — the plan
/// returned is then checked as usual.
pub(crate) fn choose_placement(
    plan_in: &dyn Fn(&Placement) -> Result<MemoryPlan, Error>,
    output: &Path,
    max_memory: Option<u64>,
    forced: Option<&Path>,
) -> Result<(Placement, MemoryPlan), Error> {
    if let Some(dir) = forced {
        let files = Placement::Files(dir.to_path_buf());
        let plan = plan_in(&files)?;
        return Ok((files, plan));
    }
    let budget = frugal_models::memory::Budget::from_option(max_memory);
    let in_memory = plan_in(&Placement::Memory)?;
    if in_memory.total() <= budget.bytes {
        return Ok((Placement::Memory, in_memory));
    }
    let dir = frugal_compress::quant::spill_dir(output);
    let files = Placement::Files(std::path::absolute(&dir).unwrap_or(dir));
    let in_files = plan_in(&files)?;
    Ok(if in_files.total() < in_memory.total() {
        (files, in_files)
    } else {
        (Placement::Memory, in_memory)
    })
}

/// The calibration's shape for a memory plan: chunks and their tokens — as many chunks as the
/// token budget allows, and no more than the text's bytes could make (a token is at least a
/// byte).
pub(crate) fn calib_shape(c: Option<&crate::steps::CalibSpec>) -> Option<(usize, usize)> {
    c.map(|c| {
        let bytes = std::fs::metadata(&c.text).map_or(u64::MAX, |m| m.len());
        let tokens = (c.max_tokens as u64).min(bytes) as usize;
        (tokens / c.ctx.max(1), c.ctx)
    })
}

/// `plan`, or the evaluation of the output against `input` when larger (the output shaped as
/// the input), for a compression judged by `spec`.
pub(crate) fn with_judge_plan(
    plan: frugal_models::memory::MemoryPlan,
    input: &Path,
    spec: Option<&EvalSpec>,
) -> Result<frugal_models::memory::MemoryPlan, Error> {
    let Some(e) = spec else {
        return Ok(plan);
    };
    let judge = frugal_eval::LmEvalFiles {
        model: input.to_path_buf(),
        reference: Some(input.to_path_buf()),
        text: e.text.clone(),
        opts_ctx: e.ctx,
        max_chunks: e.chunks,
        load: frugal_models::llama::LoadOptions::GGML,
        split: frugal_eval::RankSplit::Chunks,
    };
    Ok(plan.max(judge.memory_plan()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of `fixed` bytes in memory and `scratch` bytes placed as asked.
    fn plan(p: &Placement, fixed: u64, scratch: u64) -> MemoryPlan {
        let mut m = MemoryPlan::placed(p.clone());
        m.add("block", fixed).add_scratch("grams", scratch);
        m
    }

    #[test]
    fn scratch_goes_to_files_only_when_memory_would_not_fit_and_files_help() {
        let out = Path::new("/some/folder/out.gguf");
        let gib = 1u64 << 30;
        let gptq = |p: &Placement| Ok(plan(p, gib, 3 * gib));
        // Fits: in memory.
        let (p, m) = choose_placement(&gptq, out, Some(8 * gib), None).unwrap();
        assert_eq!((p, m.disk_total()), (Placement::Memory, 0));
        // Does not fit: the scratch in files beside the output, the rest in memory.
        let (p, m) = choose_placement(&gptq, out, Some(2 * gib), None).unwrap();
        assert_eq!(p, Placement::Files("/some/folder".into()));
        assert_eq!(m.disk_total(), 3 * gib);
        assert!(m.total() < 2 * gib);
        // Files would not make it smaller (another part dominates): memory, refused later.
        let eval = |p: &Placement| Ok(plan(p, 5 * gib, 0).max(plan(p, gib, 3 * gib)));
        let (p, _) = choose_placement(&eval, out, Some(2 * gib), None).unwrap();
        assert_eq!(p, Placement::Memory);
        // A folder given: files there, whatever fits.
        let (p, m) = choose_placement(&gptq, out, Some(8 * gib), Some(Path::new("/fast"))).unwrap();
        assert_eq!(
            (p, m.disk_total()),
            (Placement::Files("/fast".into()), 3 * gib)
        );
    }
}
