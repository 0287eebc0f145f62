//! `frugal run`: a compression recipe, or without one the embedded default on digits.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// A recipe file (TOML).
    pub recipe: Option<PathBuf>,
    /// Folder for artifacts and report.json.
    #[arg(long, short, default_value = "frugal-out")]
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

pub fn run(args: Args) -> Result<()> {
    let Args {
        recipe,
        out,
        seed,
        force,
        json,
    } = args;
    if let Some(recipe) = recipe {
        let bar = progress_bar("");
        let (report, path) = frugal_pipeline::recipe::run_recipe(
            &recipe,
            &out,
            &frugal_pipeline::recipe::RecipeRunOptions { force },
            &|what, done, total| show_stage(&bar, what, done, total),
        )?;
        bar.finish_and_clear();
        emit(json, &report, |r| {
            println!("frugal run: {} ({})", r.recipe, r.recipe_file);
            println!("  model    {}", r.model);
            for s in &r.steps {
                let q = s
                    .result
                    .get("quality")
                    .filter(|q| !q.is_null())
                    .unwrap_or(&s.result);
                let kld = q.pointer("/kld/mean").and_then(|v| v.as_f64());
                let ppl = q.pointer("/ppl/value").and_then(|v| v.as_f64());
                println!(
                    "  {:>2} {:9} {:>8.1} s{}  {}{}{}",
                    s.index,
                    s.kind,
                    s.seconds,
                    if s.resumed {
                        " (kept from the last run)"
                    } else {
                        ""
                    },
                    s.output.as_deref().unwrap_or("-"),
                    kld.map_or(String::new(), |k| format!("  KLD {k:.5}")),
                    ppl.map_or(String::new(), |p| format!("  PPL {p:.3}")),
                );
            }
            println!("  total    {:.1} s", r.seconds);
            println!("  report   {}", path.display());
        })?;
        // A failed check step is the run's verdict: exit 1, as `frugal check` does.
        let failed = report.failed_checks();
        if let Some((i, policy, keys)) = failed.first() {
            anyhow::bail!("step {i}: policy {policy} fails: {}", keys.join(", "));
        }
        return Ok(());
    }
    let opts = frugal_pipeline::RunOptions {
        out_dir: out,
        seed,
        force,
        ..Default::default()
    };
    let bar = progress_bar("");
    let (report, path) = frugal_pipeline::run(&opts, &|step, done, total, loss| {
        show_stage(&bar, step, done, total);
        bar.set_message(format!("{step} loss {loss:.4}"));
    })?;
    bar.finish_and_clear();
    emit(json, &report, |report| {
        let d = &report.data;
        println!("frugal run: {} (embedded default)", report.recipe);
        println!(
            "  data     {} — {} images {}×{}, {} classes",
            d.dataset, d.n_images, d.image_shape[0], d.image_shape[1], d.n_classes
        );
        println!(
            "  split    {} train / {} test (stratified, seed {})",
            d.n_train, d.n_test, d.seed
        );
        println!(
            "  {:18} {:>9} {:>9} {:>10} {:>18} {:>8} {:>14}",
            "model", "KiB", "weights", "nonzero %", "test accuracy %", "s", "mWh/1k queries"
        );
        for (m, e) in report.classifier.models.iter().zip(&report.measure) {
            println!(
                "  {:18} {:>9.1} {:>9} {:>10.1} {:>7.2} [{:.1}, {:.1}] {:>8.2} {:>10.3}{}",
                m.name,
                m.file_bytes as f64 / 1024.0,
                m.weights,
                100.0 * m.nonzero_weights as f64 / m.weights.max(1) as f64,
                m.eval.accuracy_pct,
                m.eval.ci95_pct.0,
                m.eval.ci95_pct.1,
                m.seconds,
                1e3 * e.wh_per_1k_queries.mean,
                if e.measured { "" } else { " est." }
            );
        }
        println!(
            "  energy   {}",
            report.measure.first().map_or("-", |e| e.method.as_str())
        );
        println!("  total    {:.1} s", report.seconds);
        for b in &report.break_even {
            println!(
                "  pays back {:18} {:>9.1} J to make, {}",
                b.model,
                b.compression_joules,
                b.break_even_queries
                    .map_or("never (no saving per query)".into(), |q| {
                        format!("after {q:.3e} queries")
                    })
            );
        }
        for c in &report.check {
            let failed: Vec<&str> = c
                .outcomes
                .iter()
                .filter(|o| !o.pass)
                .map(|o| o.key)
                .collect();
            println!(
                "  policy   {:18} {}{}",
                c.model,
                if c.pass { "pass" } else { "FAIL" },
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failed.join(", "))
                }
            );
        }
        println!(
            "  report   {} (and report.md, report.html beside it)",
            path.display()
        );
    })?;
    Ok(())
}
