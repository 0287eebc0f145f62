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

pub fn run(args: Args) -> Result<()> {
    let Args {
        policy,
        report,
        list,
        json,
    } = args;
    use frugal_report::policy::{check, Limit, Policy, CLAUSES};
    if list {
        for c in CLAUSES {
            println!("{:26} {:>6}  {}", c.key, c.unit.name, c.doc);
        }
        return Ok(());
    }
    let (Some(policy), Some(report)) = (policy, report) else {
        return Err(BadUsage("--policy P REPORT".into()).into());
    };
    let p = Policy::load(&policy).map_err(|e| BadUsage(e.to_string()))?;
    let r = read_json_report(&report)?;
    let metrics = frugal_report::metrics::Metrics::from_report(&r)
        .map_err(|e| BadUsage(format!("{}: {e}", report.display())))?;
    let outcomes = check(&p, &metrics);
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    let out = serde_json::json!({
        "policy": policy.display().to_string(),
        "report": report.display().to_string(),
        "pass": failed == 0,
        "clauses": outcomes,
    });
    emit(json, &out, |_| {
        for o in &outcomes {
            let limit = match &o.limit {
                Limit::Number(x) => format!("{x} {}", o.unit),
                Limit::Require(b) => format!("required: {b}"),
                Limit::Text(t) => t.clone(),
                Limit::Grades(g) => format!("{g:?} {}", o.unit),
            };
            let value = o.value.map_or("-".to_string(), |v| format!("{v:.6}"));
            println!(
                "{} {:26} value {:>12}  limit {:<14} {}{}",
                if o.pass { "PASS" } else { "FAIL" },
                o.key,
                value,
                limit,
                o.from
                    .as_deref()
                    .map(|f| format!("({f}) "))
                    .unwrap_or_default(),
                o.note
            );
        }
        println!(
            "{}: {} of {} clauses pass",
            policy.display(),
            outcomes.len() - failed,
            outcomes.len()
        );
    })?;
    if failed > 0 {
        anyhow::bail!("{failed} policy clause(s) failed");
    }
    Ok(())
}
