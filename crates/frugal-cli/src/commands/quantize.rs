//! `frugal quantize`: GGUF block types and llama.cpp's mixes, encoder and CNN int weights.

use super::*;
use frugal_compress::quant::gptq::GptqOptions;
use frugal_compress::quant::{Fallback, MethodName};
use frugal_pipeline::jobs::quantize::Quantize;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (F32 or any type Frugal decodes).
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// Target type (see `frugal quantize --help`).
    #[arg(long = "type", value_parser = parse_quant_type, long_help = format!("Target type:\n{}", frugal_compress::quant::types_help()))]
    pub ty: frugal_compress::quant::Target,
    /// One type for every weight matrix: no mix rules (llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
    /// Rows a 256-wide type cannot tile: `llama` (its fixed substitutes) or `best` (32-wide
    /// types assigned by measured error within the same bytes).
    #[arg(long, value_enum, default_value_t = Fallback::default())]
    pub fallback: Fallback,
    /// Override the type of tensors whose name matches REGEX (first match wins), e.g.
    /// `--tensor-type 'ffn_down=Q6_K'`. Repeatable.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<frugal_compress::quant::Override>,
    /// Assign types per tensor by measured error so that the file's tensors take at most this
    /// many bits per weight (all of them, norms included, as `frugal inspect` counts).
    #[arg(long, value_parser = parse::bpw)]
    pub target_bpw: Option<f64>,
    /// CNN classifiers: each weight's scheme from a plan (TOML `[tensors]` NAME = "int8" |
    /// "int4-g32" | "int4-g64" | "int4-g128" | "f32"), as `frugal tune` writes it; weights
    /// it does not list get --type.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Calibration text: an importance matrix (llama-imatrix's statistic) is measured on it
    /// and weights every rounding decision. GGUF models with --method gptq, awq or awq-gptq
    /// and no --calib calibrate on Brown's multi-genre mix (`frugal brown-text --files mix`: the
    /// last two files of every genre, interleaved). Encoders (int4): a text file, or `brown`
    /// for Brown passages disjoint from the evaluation's; int4 weights are then GPTQ'd.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    #[command(flatten)]
    pub chunks: CalibChunks,
    /// An importance matrix in llama.cpp's GGUF format (from `llama-imatrix` or `frugal
    /// imatrix`), used as `llama-quantize --imatrix` uses it: the same file gives the same bytes.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// `rtn` (round to nearest, importance-weighted with --calib), `gptq`, `awq` (activation-
    /// aware channel scales folded into the norms and value/up rows, then importance-weighted
    /// rounding) or `awq-gptq` (AWQ's scales, then GPTQ). All but `rtn` calibrate (--calib,
    /// else Brown's multi-genre mix).
    #[arg(long, value_enum, default_value_t = MethodName::default())]
    pub method: MethodName,
    /// GPTQ dampening, a fraction of the mean diagonal of XᵀX.
    #[arg(long, default_value_t = GptqOptions::default().damp, value_parser = parse::damp)]
    pub damp: f64,
    /// GPTQ: quantize input columns in their stored order (scales fitted as each block is
    /// reached) instead of by decreasing activation (scales fitted once), the default.
    #[arg(long)]
    pub no_act_order: bool,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Encoders: Brown passages of 128 tokens to evaluate on.
    #[arg(long, default_value_t = Quantize::EVAL_PASSAGES)]
    pub eval_passages: usize,
    /// Continue a killed block-wise run (GPTQ, AWQ) from its checkpoint, `OUT.checkpoint`
    /// (saved after every block; the same settings and input required).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// GPTQ, AWQ: hold the Gram sums and factorizations in unnamed files in this folder
    /// (default: in memory when the plan fits --max-memory, else in the output's folder).
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = Quantize {
        pure: a.pure,
        fallback: a.fallback,
        overrides: a.tensor_type,
        target_bpw: a.target_bpw,
        plan: a.plan,
        calib: a.calib,
        calib_tokens: a.chunks.calib_tokens,
        calib_ctx: a.chunks.calib_ctx,
        imatrix: a.imatrix,
        method: a.method,
        gptq: GptqOptions {
            damp: a.damp,
            act_order: !a.no_act_order,
        },
        eval: a.eval.text(),
        eval_chunks: a.eval.eval_chunks,
        eval_passages: a.eval_passages,
        max_memory: a.memory.max_memory,
        scratch_dir: a.scratch_dir,
        resume: a.resume,
        ..Quantize::new(a.input, a.output, a.ty)
    };
    execute(&job, a.json).map(drop)
}

pub fn parse_quant_type(s: &str) -> Result<frugal_compress::quant::Target, String> {
    frugal_compress::quant::target(s).ok_or_else(|| {
        format!(
            "unknown type `{s}` (one of: {})",
            frugal_compress::quant::target_names().join(", ")
        )
    })
}
