//! `frugal inspect`: a GGUF or safetensors file's metadata, tensors and bits per weight.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List every tensor (text output lists the first 12).
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args { file, json, all } = args;
    let summary = frugal_formats::inspect::inspect(&file)?;
    emit(json, &summary, |summary| {
        print!("{}", summary.to_text(all));
    })?;
    Ok(())
}
