//! `frugal inspect`: a GGUF or safetensors file's metadata, tensors and bits per weight (of a
//! Hugging Face checkpoint folder: those of the GGUF it converts to).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (or a Hugging Face checkpoint folder).
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List every tensor (text output lists the first 12).
    #[arg(long)]
    pub all: bool,
}

pub fn run(a: Args) -> Result<()> {
    IoPlan::new()
        .add_input("model", &a.file, frugal_formats::guard::Expect::FileOrDir)
        .check()?;
    let summary = frugal_formats::inspect::inspect(&a.file)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Document::new("inspect", &summary))?
        );
    } else {
        print!("{}", summary.to_text(a.all));
    }
    Ok(())
}
