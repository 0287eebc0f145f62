//! `frugal prune`: unstructured, N:M or structured pruning of a GGUF model or a CNN.

use super::*;
use frugal_compress::prune::Score;
use frugal_compress::structured::Structure;
use frugal_pipeline::data::Dataset;
use frugal_pipeline::jobs::prune::{Prune, Storage};

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (F32 or any type Frugal decodes), or a Frugal CNN .safetensors.
    pub input: PathBuf,
    /// Output GGUF (or .safetensors for a CNN).
    pub output: PathBuf,
    /// Structured removal instead of zeros, writing a smaller model: `mlp-neurons` removes at
    /// least `--sparsity` of every block's MLP neurons (kept count a multiple of 32);
    /// `attn-heads` that share of each key/value group's query heads; `layers` that share of
    /// the decoder blocks, those that change their input least on --calib text.
    /// magnitude: weight norms; wanda: activation × weight norms; sparsegpt: the same choice,
    /// then ffn_down (attn_output) refitted by least squares on the calibration activations.
    #[arg(long, value_enum)]
    pub structure: Option<Structure>,
    /// CNN only: `fashion-mnist` or `digits`, for recovery and evaluation.
    #[arg(long, value_parser = names::dataset)]
    pub data: Option<Dataset>,
    /// CNN only: epochs of distillation from the unpruned model, mask held (0: none).
    #[arg(long, default_value_t = Prune::recovery().epochs)]
    pub recover_epochs: usize,
    /// CNN only: peak learning rate of the recovery.
    #[arg(long, default_value_t = Prune::recovery().lr)]
    pub recover_lr: f64,
    /// CNN only: seed of the recovery's shuffles (and of the digits split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CNN only: `sparse` stores the pruned weights as values plus a bitmask (or N:M
    /// positions for an N:M pattern), decoded exactly on load; `dense` as plain F32.
    #[arg(long, value_enum, default_value_t = Storage::default())]
    pub storage: Storage,
    #[arg(long, value_enum, default_value_t = Prune::SCORE)]
    pub method: Score,
    /// Fraction of each weight set to zero (unstructured; N:M implies 1 − N/M).
    #[arg(long, default_value_t = Prune::SPARSITY, value_parser = parse::sparsity)]
    pub sparsity: f64,
    /// `unstructured`, or N:M such as `2:4` (keep N of every M consecutive inputs).
    #[arg(long, default_value = "unstructured")]
    pub pattern: frugal_compress::prune::Pattern,
    /// Calibration text (Wanda and SparseGPT need it).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    #[command(flatten)]
    pub chunks: CalibChunks,
    /// SparseGPT dampening, a fraction of the mean diagonal of XᵀX.
    #[arg(long, default_value_t = frugal_compress::quant::gptq::GptqOptions::default().damp, value_parser = parse::damp)]
    pub damp: f64,
    #[command(flatten)]
    pub eval: EvalArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = Prune {
        score: a.method,
        sparsity: a.sparsity,
        pattern: a.pattern,
        structure: a.structure,
        calib: a.calib,
        calib_tokens: a.chunks.calib_tokens,
        calib_ctx: a.chunks.calib_ctx,
        damp: a.damp,
        eval: a.eval.text(),
        eval_chunks: a.eval.eval_chunks,
        data: a.data,
        recover: frugal_compress::distill::TrainOptions {
            epochs: a.recover_epochs,
            lr: a.recover_lr,
            seed: a.seed,
            ..Prune::recovery()
        },
        storage: a.storage,
        max_memory: a.memory.max_memory,
        ..Prune::new(a.input, a.output)
    };
    execute(&job, a.json).map(drop)
}
