//! `frugal convert`: a Hugging Face checkpoint folder to GGUF, as llama.cpp's
//! `convert_hf_to_gguf.py` writes it.

use super::*;
use frugal_compress::hf::OutType;
use frugal_formats::guard::Expect;

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint folder (config.json, model.safetensors or shards with their index,
    /// tokenizer.json).
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// Encoding of the 2-D weights (norms, biases and embeddings of positions stay F32).
    #[arg(long, value_enum, default_value = "f16")]
    pub outtype: OutType,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    IoPlan::new()
        .add_input("checkpoint folder", &a.input, Expect::Dir)
        .output("output", &a.output)
        .check()?;
    let report = frugal_compress::hf::convert::convert(&a.input, &a.output, a.outtype)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Document::new("convert", &report))?
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
