//! The commands of the `frugal` binary, one file each: each turns its arguments into the
//! library's options, calls the library and prints the result. What they share: usage errors,
//! printing a report (JSON or text, with a metered command's energy), progress bars.

pub mod brown_text;
pub mod check;
pub mod dequantize;
pub mod distill;
pub mod eval;
pub mod inspect;
pub mod measure;
pub mod prune;
pub mod quantize;
pub mod run;
pub mod tune;

pub(crate) use anyhow::Result;
pub(crate) use std::path::PathBuf;

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

/// Reads a JSON report Frugal wrote (at most 256 MiB; a device, FIFO or endless file refused).
pub(crate) fn read_json_report(p: &std::path::Path) -> Result<serde_json::Value> {
    let bytes = frugal_formats::guard::read_capped(p, "report", 256 << 20)?;
    Ok(serde_json::from_slice(&bytes)
        .map_err(|e| BadUsage(format!("{}: not a JSON report: {e}", p.display())))?)
}

/// The evaluation of a compressed LM: `--eval-text`, or Brown cj01–cj12 written into `tmp`.
pub(crate) fn eval_spec(
    no_eval: bool,
    eval_text: Option<PathBuf>,
    chunks: usize,
    tmp: &std::path::Path,
) -> Result<Option<frugal_pipeline::quantize::EvalSpec>> {
    let text = match (no_eval, eval_text) {
        (true, _) => None,
        (false, Some(t)) => Some(t),
        (false, None) => {
            let dir = frugal_formats::assets::brown_dir();
            if dir.exists() {
                let ids = frugal_formats::brown::select_ids(&dir, "cj01-cj12")?;
                let p = tmp.join("brown-cj01-cj12.txt");
                std::fs::write(&p, frugal_formats::brown::plain_text(&dir, &ids)?)?;
                Some(p)
            } else {
                eprintln!("frugal: no evaluation text: pass --eval-text FILE, or fetch the Brown corpus (scripts/fetch-assets.sh brown); skipping the evaluation");
                None
            }
        }
    };
    Ok(text.map(|text| frugal_pipeline::quantize::EvalSpec {
        text,
        ctx: 512,
        chunks: Some(chunks),
    }))
}

thread_local! {
    /// The energy meter of a compression command (quantize, prune, distill), started before
    /// its work and read when its result is printed: the cost a break-even is computed from.
    pub(crate) static METER: std::cell::RefCell<Option<frugal_energy::Session>> =
        const { std::cell::RefCell::new(None) };
}

/// Prints `value` (JSON, or `text`); a metered command's energy goes with it (`energy` in the
/// JSON object, a line of text).
pub(crate) fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T),
) -> Result<()> {
    let energy = METER
        .with(|m| m.borrow_mut().take())
        .map(frugal_energy::Session::stop)
        .transpose()?;
    if !frugal_dist::is_root() {
        return Ok(()); // rank 0 prints the job's result
    }
    if json {
        let mut v = serde_json::to_value(value)?;
        if let (Some(e), Some(o)) = (&energy, v.as_object_mut()) {
            o.insert("energy".into(), serde_json::to_value(e)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        text(value);
        if let Some(e) = energy {
            println!(
                "energy     {:.1} J over {:.1} s ({}: {})",
                e.joules(),
                e.seconds,
                if e.all_measured() {
                    "measured"
                } else {
                    "estimated"
                },
                e.method()
            );
        }
    }
    Ok(())
}

/// A progress bar on standard error, hidden when it is not a terminal.
/// Shows a staged step's progress (`what` is the stage: imatrix, gptq, tensors, chunks).
pub(crate) fn show_stage(bar: &indicatif::ProgressBar, what: &str, done: usize, total: usize) {
    bar.set_message(what.to_string());
    bar.set_length(total as u64);
    bar.set_position(done as u64);
}

pub(crate) fn progress_bar(unit: &str) -> indicatif::ProgressBar {
    if !frugal_dist::is_root() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit}{{msg}} (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// Whether `path` is a Frugal CNN classifier (safetensors with its config in the metadata).
pub(crate) fn is_cnn_file(path: &std::path::Path) -> bool {
    path.is_file()
        && frugal_formats::safetensors::SafetensorsFile::open(path).is_ok_and(|f| {
            f.header
                .metadata
                .contains_key(frugal_models::cnn::CONFIG_KEY)
        })
}
