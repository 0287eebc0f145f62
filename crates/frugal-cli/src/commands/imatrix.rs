//! `frugal imatrix`: a GGUF model's importance matrix measured on a text, written in
//! llama.cpp's format (what `llama-quantize --imatrix` and `frugal quantize --imatrix` read).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (F32 or any type Frugal decodes).
    pub model: PathBuf,
    /// Calibration text.
    #[arg(long)]
    pub calib: PathBuf,
    #[command(flatten)]
    pub chunks: CalibChunks,
    /// Also measure every weight's KL gain (SmolLM2: 64 s instead of 25): with it, `frugal quantize
    /// --imatrix FILE --target-bpw B` plans as it would calibrating on the text, without
    /// measuring anything (llama.cpp passes over these tensors).
    #[arg(long)]
    pub gains: bool,
    /// Output file (GGUF, llama.cpp's imatrix format).
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    IoPlan::new()
        .input("model", &a.model)
        .input("--calib", &a.calib)
        .output("output", &a.out)
        .check()?;
    let spec = frugal_pipeline::steps::CalibSpec {
        text: a.calib,
        ctx: a.chunks.calib_ctx,
        max_tokens: a.chunks.calib_tokens,
        label: None,
    };
    let bar = progress_bar();
    let r = frugal_pipeline::steps::imatrix_step(&a.model, &a.out, &spec, a.gains, &|s, d, t| {
        show_stage(&bar, s, d, t)
    })?;
    bar.finish_and_clear();
    println!("{}", r.to_text());
    Ok(())
}
