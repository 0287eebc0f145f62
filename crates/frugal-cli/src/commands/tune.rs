//! `frugal tune`: the smallest (or lowest-energy) quantized model within a quality limit.

use super::*;
use frugal_pipeline::data::Dataset;
use frugal_pipeline::jobs::tune::{Limit, Tune};
use frugal_pipeline::steps::EvalSpec;
use frugal_pipeline::tune::Objective;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF, or CNN classifier (.safetensors): the reference the limit is measured
    /// against.
    pub input: PathBuf,
    /// Output file.
    #[arg(short = 'o', long = "out")]
    pub output: PathBuf,
    /// Mean KL divergence per token from the input, nats: met by the mean's upper 95 % bound
    /// over chunks (Student t) on every held-out text, not only by the mean.
    #[arg(long, conflicts_with_all = ["max_ppl_increase_pct", "max_kld_p999", "policy", "max_accuracy_drop_pt"])]
    pub max_kld: Option<f64>,
    /// Perplexity increase over the input's, per cent.
    #[arg(long, conflicts_with_all = ["max_kld_p999", "policy", "max_accuracy_drop_pt"])]
    pub max_ppl_increase_pct: Option<f64>,
    /// The tail: the 99.9th percentile of the per-token KL divergence, nats.
    #[arg(long, conflicts_with_all = ["policy", "max_accuracy_drop_pt"])]
    pub max_kld_p999: Option<f64>,
    /// Classifiers: test-accuracy drop from the input's, in points.
    #[arg(long, conflicts_with = "policy", requires = "data")]
    pub max_accuracy_drop_pt: Option<f64>,
    /// A policy file: its `max_kld` (else `max_ppl_increase_pct`; classifiers:
    /// `max_accuracy_drop_pt`) is the limit.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Classifiers: `digits` or `fashion-mnist` (its test images, halved).
    #[arg(long, value_parser = names::dataset)]
    pub data: Option<Dataset>,
    /// Classifiers: seed of the split of the test images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The GGUF type whose rules decide which tensors are quantized (and name the file).
    #[arg(long = "type", default_value_t = defaults().target)]
    pub ty: String,
    /// Language models: calibration text (importance matrix); default Brown's multi-genre
    /// mix (`frugal brown-text --files mix`: the last two files of every genre, interleaved).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    #[command(flatten)]
    pub chunks: CalibChunks,
    /// Language models: an importance matrix in llama.cpp's GGUF format instead of one
    /// measured here; from `frugal imatrix --gains` it carries every statistic the search
    /// needs, so nothing is measured on the calibration text (one calibration for many
    /// limits); from llama-imatrix, Frugal's are measured on --calib. The recipe names it.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Language models: text the search judges candidates on.
    #[arg(long = "eval", required_unless_present = "data")]
    pub search: Option<PathBuf>,
    /// Language models: different text the result is verified on; repeat for several texts
    /// (the limit must hold on each; the report names them).
    #[arg(long, required_unless_present = "data")]
    pub heldout: Vec<PathBuf>,
    /// Chunks of 512 tokens of each text to judge on.
    #[arg(long, default_value_t = EvalSpec::DEFAULT_CHUNKS, value_parser = parse::count)]
    pub eval_chunks: usize,
    /// Stop bisecting when the bracket is narrower than this (bits per weight).
    #[arg(long, default_value_t = defaults().bpw_tolerance)]
    pub bpw_tolerance: f64,
    /// At most this many candidates judged in all.
    #[arg(long, default_value_t = defaults().max_evals)]
    pub max_evals: usize,
    /// Language models: what to minimise — `size` (bytes) or `energy` (the kernel time per
    /// generated token of the served model, F16 and F32 tensors allowed where faster).
    #[arg(long, default_value_t = Objective::default(), value_parser = names::objective)]
    pub objective: Objective,
    /// Language models, size objective: skip measuring every candidate's energy per token
    /// on `frugal measure`'s workload (about 20 s a candidate on 2 cores; the report's
    /// energy chart is then empty).
    #[arg(long)]
    pub no_energy: bool,
    /// Language models: keep at most this many MiB of the input's logits between
    /// candidates, so its forward pass runs once per chunk (50 MiB a 512-token chunk of
    /// SmolLM2); 0 recomputes them for every candidate.
    #[arg(long, default_value_t = defaults().reference_cache_bytes >> 20)]
    pub reference_cache_mib: usize,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The job's defaults (shown in `--help`).
fn defaults() -> Tune {
    Tune::new(PathBuf::new(), PathBuf::new())
}

pub fn run(a: Args) -> Result<()> {
    let job = Tune {
        limit: Limit::from_options(
            a.max_kld,
            a.max_ppl_increase_pct,
            a.max_kld_p999,
            a.max_accuracy_drop_pt,
            a.policy,
        ),
        data: a.data,
        seed: a.seed,
        target: a.ty,
        calib: a.calib,
        imatrix: a.imatrix,
        calib_tokens: a.chunks.calib_tokens,
        calib_ctx: a.chunks.calib_ctx,
        search: a.search,
        heldout: a.heldout,
        eval_chunks: a.eval_chunks,
        bpw_tolerance: a.bpw_tolerance,
        max_evals: a.max_evals,
        objective: a.objective,
        measure_energy: !a.no_energy,
        reference_cache_bytes: a.reference_cache_mib.saturating_mul(1 << 20),
        max_memory: a.memory.max_memory,
        ..Tune::new(a.input, a.output)
    };
    execute(&job, a.json).map(drop)
}
