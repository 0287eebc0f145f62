//! `frugal eval`: evaluate a model against its reference.

use super::*;
use frugal_eval::encoder::EncoderData;
use frugal_eval::RankSplit;
use frugal_models::llama::LoadOptions;
use frugal_pipeline::data::Dataset;
use frugal_pipeline::jobs::eval::Eval;

#[derive(clap::Args)]
pub struct Args {
    /// The model to evaluate: a GGUF file or an encoder folder.
    pub model: PathBuf,
    /// Plain text to score (language models).
    #[arg(long, required_unless_present_any = ["per_genre", "passages", "data"])]
    pub text: Option<PathBuf>,
    /// The reference model (the original) to compare with.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Encoders: Brown sentences per genre.
    #[arg(long, conflicts_with = "passages")]
    pub per_genre: Option<usize>,
    /// Encoders: this many Brown passages of `--passage-tokens` tokens instead of sentences.
    #[arg(long)]
    pub passages: Option<usize>,
    /// Encoders: tokens per passage, `[CLS]` and `[SEP]` included.
    #[arg(long, default_value_t = 128)]
    pub passage_tokens: usize,
    /// Encoders: also write the evaluated items (token ids, genre, document) as JSON, so a
    /// peer can be run on exactly the same input.
    #[arg(long)]
    pub dump_items: Option<PathBuf>,
    /// Classifiers (a Frugal CNN .safetensors): the test set, `fashion-mnist` or `digits`
    /// (the seeded 20 % split `frugal run --seed` makes).
    #[arg(long, value_parser = names::dataset)]
    pub data: Option<Dataset>,
    /// Classifiers on `digits`: the seed of the split (as given to `frugal run`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, default_value_t = Eval::new(PathBuf::new()).ctx, value_parser = parse::eval_ctx)]
    pub ctx: usize,
    /// At most this many chunks.
    #[arg(long, value_parser = parse::count)]
    pub chunks: Option<usize>,
    /// Exact f32 activations. By default each layer's input is rounded as llama.cpp's
    /// kernels round it for that weight type (8-bit blocks for quantized weights), so numbers
    /// compare one to one with llama.cpp's.
    #[arg(long)]
    pub f32_activations: bool,
    /// Use candle's quantized kernels instead of decoding weights to f32 (slow on CPU).
    #[arg(long, conflicts_with = "f32_activations")]
    pub quantized_kernels: bool,
    /// Under `mpirun`: split the chunks across the ranks, or the blocks (each rank reads and
    /// runs only its share of the blocks, handing the states on; the same figures either way).
    #[arg(long, value_enum, default_value_t = RankSplit::default())]
    pub rank_split: RankSplit,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = Eval {
        reference: a.reference,
        text: a.text,
        ctx: a.ctx,
        chunks: a.chunks,
        load: match (a.quantized_kernels, a.f32_activations) {
            (true, _) => LoadOptions::KERNELS,
            (false, true) => LoadOptions::EXACT,
            (false, false) => LoadOptions::GGML,
        },
        encoder_data: match (a.passages, a.per_genre) {
            (Some(n), _) => EncoderData::Passages {
                n,
                tokens: a.passage_tokens,
            },
            (None, Some(per_genre)) => EncoderData::Sentences { per_genre },
            (None, None) => Eval::new(a.model.clone()).encoder_data,
        },
        dump_items: a.dump_items,
        data: a.data,
        seed: a.seed,
        max_memory: a.memory.max_memory,
        split: a.rank_split,
        ..Eval::new(a.model)
    };
    execute(&job, a.json).map(drop)
}
