//! `frugal export`: a GGUF model as a Hugging Face checkpoint folder.

use super::*;
use frugal_compress::hf::OutType;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF.
    pub input: PathBuf,
    /// Output folder (must not exist; it appears whole or not at all).
    pub output: PathBuf,
    /// Floating-point type of the exported weights (f32, f16 or bf16).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: OutType,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    IoPlan::new()
        .input("input model", &a.input)
        .output_dir("output folder", &a.output)
        .check()?;
    let report = frugal_compress::hf::export::export(&a.input, &a.output, a.dtype)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Document::new("export", &report))?
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
