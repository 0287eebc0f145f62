//! `frugal run`: a compression recipe, or without one the embedded default on digits.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// A recipe file (TOML).
    pub recipe: Option<PathBuf>,
    /// Folder for artifacts and report.json.
    #[arg(long, short, default_value_os_t = frugal_pipeline::RunOptions::default().out_dir)]
    pub out: PathBuf,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run into a folder that holds another run (another recipe's, or the embedded
    /// default's): its report is replaced and nothing of it reused.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = frugal_pipeline::jobs::run::Run {
        recipe: a.recipe,
        opts: frugal_pipeline::RunOptions {
            out_dir: a.out,
            seed: a.seed,
            force: a.force,
            ..Default::default()
        },
    };
    // A failed check step is the run's verdict: exit 1, as `frugal check` does.
    if let Some((i, policy, keys)) = execute(&job, a.json)?.failed_check() {
        anyhow::bail!("step {i}: policy {policy} fails: {}", keys.join(", "));
    }
    Ok(())
}
