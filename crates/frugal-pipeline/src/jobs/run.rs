//! `frugal run`: a compression recipe, or without one the embedded default on digits.

use super::{Job, Progress, ToText};
use crate::recipe::{RecipeReport, RecipeRunOptions};
use crate::{Error, Report, RunOptions};
use frugal_formats::guard::IoPlan;
use serde::Serialize;
use std::path::PathBuf;

/// A run: a recipe's, or the embedded default's.
#[derive(Debug, Clone)]
pub struct Run {
    pub recipe: Option<PathBuf>,
    /// The folder, seed and `--force` (a recipe uses the folder and `force`).
    pub opts: RunOptions,
}

/// A report and the path it was written to.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Written<T> {
    #[serde(flatten)]
    pub report: T,
    #[serde(skip)]
    pub path: PathBuf,
}

/// What `frugal run` did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RunOutcome {
    Recipe(Written<RecipeReport>),
    Default(Box<Written<Report>>),
}

impl RunOutcome {
    /// The first failed check step of a recipe: `(step, policy, failed clauses)` — the run's
    /// verdict (exit 1, as `frugal check`).
    pub fn failed_check(&self) -> Option<(usize, String, Vec<String>)> {
        match self {
            RunOutcome::Recipe(r) => r.report.failed_checks().into_iter().next(),
            RunOutcome::Default(_) => None,
        }
    }
}

impl Job for Run {
    type Report = RunOutcome;
    const KIND: &'static str = "run";

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        if let Some(r) = &self.recipe {
            p.input("recipe", r);
        }
        p
    }

    fn run(&self, progress: Progress) -> Result<RunOutcome, Error> {
        if let Some(recipe) = &self.recipe {
            let opts = RecipeRunOptions {
                force: self.opts.force,
            };
            let (report, path) =
                crate::recipe::run_recipe(recipe, &self.opts.out_dir, &opts, progress)?;
            return Ok(RunOutcome::Recipe(Written { report, path }));
        }
        let (report, path) = crate::run(&self.opts, &|step, done, total, loss| {
            progress(&format!("{step} loss {loss:.4}"), done, total)
        })?;
        Ok(RunOutcome::Default(Box::new(Written { report, path })))
    }
}

impl ToText for RunOutcome {
    fn to_text(&self) -> String {
        match self {
            RunOutcome::Recipe(w) => {
                format!("{}  report   {}\n", w.report.to_text(), w.path.display())
            }
            RunOutcome::Default(w) => format!(
                "{}  report   {} (and report.md, report.html beside it)\n",
                w.report.to_text(),
                w.path.display()
            ),
        }
    }
}
