//! `frugal check`: a report against a sustainability policy (exit 1 when a model fails).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (TOML; see policies/ and `--list`).
    #[arg(long, required_unless_present = "list")]
    pub policy: Option<PathBuf>,
    /// A JSON report: any command's `--json` output, or a run's `report.json`.
    #[arg(required_unless_present = "list")]
    pub report: Option<PathBuf>,
    /// Check only this model of a report that holds several (a run's students, a recipe's
    /// outputs).
    #[arg(long)]
    pub model: Option<String>,
    /// List every clause a policy may hold.
    #[arg(long)]
    pub list: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.list {
        print!("{}", frugal_report::policy::clause_list());
        return Ok(());
    }
    let (Some(policy), Some(report)) = (a.policy, a.report) else {
        return Err(BadUsage("--policy P REPORT".into()).into());
    };
    let r = execute(
        &frugal_pipeline::jobs::check::Check {
            policy,
            report,
            model: a.model,
        },
        a.json,
    )?;
    match r.failed() {
        0 => Ok(()),
        n => anyhow::bail!("{n} of {} model(s) failed the policy", r.models.len()),
    }
}
