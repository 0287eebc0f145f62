//! `frugal brown-text`: plain text from the Brown corpus (detagged), e.g. `--files cj01-cj12`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Files: a range `cj01-cj12`, a genre `cj`, a comma-separated list, or `mix` (the
    /// multi-genre calibration text: the last two files of every genre, their sentences
    /// interleaved).
    #[arg(long, default_value = "cj01-cj12")]
    pub files: String,
    /// The corpus folder (default: the fetched asset).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Output file.
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let Args { files, dir, out } = args;
    let mut plan = IoPlan::new();
    if let Some(d) = &dir {
        plan.add_input("--dir", d, frugal_formats::guard::Expect::Dir);
    }
    plan.output("output", &out).check()?;
    let dir = dir.unwrap_or_else(frugal_formats::assets::brown_dir);
    let (ids, text) = frugal_formats::brown::selection_text(&dir, &files)?;
    let inputs: Vec<PathBuf> = ids.iter().map(|id| dir.join(id)).collect();
    let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    frugal_formats::output::write_atomic(&out, &inputs, |f| {
        std::io::Write::write_all(f, text.as_bytes())
    })?;
    eprintln!(
        "wrote {} ({} files, {} bytes)",
        out.display(),
        ids.len(),
        text.len()
    );
    Ok(())
}
