//! `frugal dequantize`: every tensor of a GGUF model decoded to F32 (the reference).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF.
    pub input: PathBuf,
    /// Output GGUF (F32).
    pub output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let Args { input, output } = args;
    IoPlan::new()
        .input("input model", &input)
        .output("output", &output)
        .check()?;
    let n = frugal_models::convert::dequantize_gguf(&input, &output)?;
    eprintln!("wrote {} ({n} bytes, all tensors F32)", output.display());
    Ok(())
}
