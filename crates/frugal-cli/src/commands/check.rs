//! `frugal check`: a report against a sustainability policy (exit 1 when a clause fails).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (TOML; see policies/ and `--list`).
    #[arg(long, required_unless_present = "list")]
    pub policy: Option<PathBuf>,
    /// A JSON report: `frugal eval|quantize|prune|measure --json` output or a `report.json`.
    #[arg(required_unless_present = "list")]
    pub report: Option<PathBuf>,
    /// List every clause a policy may hold.
    #[arg(long)]
    pub list: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.list {
        for c in frugal_report::policy::CLAUSES {
            println!("{:26} {:>6}  {}", c.key, c.unit.name, c.doc);
        }
        return Ok(());
    }
    let (Some(policy), Some(report)) = (a.policy, a.report) else {
        return Err(BadUsage("--policy P REPORT".into()).into());
    };
    let r = execute(
        &frugal_pipeline::jobs::check::Check { policy, report },
        a.json,
    )?;
    match r.failed() {
        0 => Ok(()),
        n => anyhow::bail!("{n} policy clause(s) failed"),
    }
}
