//! The `frugal` command: parses arguments, calls one library function per subcommand, and turns
//! errors into exit codes in one place (0 success, 1 failure, 2 bad input or usage, 130 Ctrl-C;
//! `frugal measure -- CMD` exits with the command's code, 128 + N when a signal N ended it).

mod io_plan;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "frugal",
    version,
    about = "Make AI models smaller, faster and greener — and prove it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF or safetensors file: metadata, tensors, parameters, bits per weight.
    Inspect {
        /// The model file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// List every tensor (text output lists the first 12).
        #[arg(long)]
        all: bool,
    },
    /// Evaluate a model against its reference. A language model (GGUF): perplexity with
    /// llama.cpp's protocol, and KL divergence, top-1 agreement and Δp against `--reference`.
    /// A sentence encoder (a folder with model.safetensors and tokenizer.json): 1-NN genre
    /// accuracy on Brown corpus sentences and cosine similarity to `--reference`.
    Eval {
        /// The model to evaluate: a GGUF file or an encoder folder.
        model: PathBuf,
        /// Plain text to score (language models).
        #[arg(long, required_unless_present_any = ["per_genre", "passages", "data"])]
        text: Option<PathBuf>,
        /// The reference model (the original) to compare with.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Encoders: Brown sentences per genre.
        #[arg(long, conflicts_with = "passages")]
        per_genre: Option<usize>,
        /// Encoders: this many Brown passages of `--passage-tokens` tokens instead of sentences.
        #[arg(long)]
        passages: Option<usize>,
        /// Encoders: tokens per passage, `[CLS]` and `[SEP]` included.
        #[arg(long, default_value_t = 128)]
        passage_tokens: usize,
        /// Encoders: also write the evaluated items (token ids, genre, document) as JSON, so a
        /// peer can be run on exactly the same input.
        #[arg(long)]
        dump_items: Option<PathBuf>,
        /// Classifiers (a Frugal CNN .safetensors): the test set, `fashion-mnist` or `digits`
        /// (the seeded 20 % split `frugal run --seed` makes).
        #[arg(long)]
        data: Option<String>,
        /// Classifiers on `digits`: the seed of the split (as given to `frugal run`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Tokens per chunk; the second half of each chunk is scored.
        #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::eval_ctx)]
        ctx: usize,
        /// At most this many chunks.
        #[arg(long, value_parser = frugal_pipeline::checks::parse::count)]
        chunks: Option<usize>,
        /// Exact f32 activations. By default each layer's input is rounded as llama.cpp's
        /// kernels round it for that weight type (8-bit blocks for quantized weights), so numbers
        /// compare one to one with llama.cpp's.
        #[arg(long)]
        f32_activations: bool,
        /// Use candle's quantized kernels instead of decoding weights to f32 (slow on CPU).
        #[arg(long, conflicts_with = "f32_activations")]
        quantized_kernels: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train an image classifier, distilling from a teacher when one is given:
    /// α·T²·KL(teacher ‖ student) + (1−α)·CE, AdamW, warm-up and cosine schedule, seeded
    /// shuffles, a checkpoint after every epoch (`OUT.checkpoint`, `--resume` to continue);
    /// then the test-set accuracy. With `--student S.gguf --teacher T.gguf --text FILE`:
    /// logit distillation of a language model from the teacher's cached top-k log-probs.
    Distill {
        /// Classifiers: `fashion-mnist` or `digits`.
        #[arg(long, required_unless_present = "student")]
        data: Option<String>,
        /// The model to write (.safetensors for a classifier, .gguf for a language model).
        #[arg(long)]
        out: PathBuf,
        /// Language models: the student GGUF (e.g. a pruned model) to distil from `--teacher`
        /// on `--text`; its MLP weights are trained, on the teacher's cached top-k log-probs.
        #[arg(long, requires_all = ["teacher", "text"])]
        student: Option<PathBuf>,
        /// Language models: training text.
        #[arg(long)]
        text: Option<PathBuf>,
        /// Language models: tokens per training sequence.
        #[arg(long, default_value_t = 256, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
        ctx: usize,
        /// Language models: at most this many training tokens (whole sequences).
        #[arg(long, default_value_t = 16384, value_parser = frugal_pipeline::checks::parse::count)]
        max_tokens: usize,
        /// Language models: teacher tokens cached per position.
        #[arg(long, default_value_t = 64, value_parser = frugal_pipeline::checks::parse::count)]
        top_k: usize,
        /// Language models: sequences per optimizer step, their gradients averaged (under
        /// mpirun the ranks share each step's sequences: data-parallel).
        #[arg(long, default_value_t = 1, value_parser = frugal_pipeline::checks::parse::count)]
        seq_batch: usize,
        /// Language models: text to evaluate the output against the teacher on (default: Brown
        /// cj01–cj12).
        #[arg(long)]
        eval_text: Option<PathBuf>,
        /// Language models: chunks of 512 tokens to evaluate.
        #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
        eval_chunks: usize,
        /// Language models: skip the evaluation.
        #[arg(long)]
        no_eval: bool,
        /// Teacher model; without it, the network learns from labels alone. Classifiers: repeat it
        /// to distil from an ensemble (the mean of the teachers' logits).
        #[arg(long)]
        teacher: Vec<PathBuf>,
        /// `teacher` (conv 32-64, fc 128) or `student` (conv 8-16, fc 32).
        #[arg(long, default_value = "student")]
        arch: String,
        /// Epochs (classifiers 3, language models 1).
        #[arg(long, value_parser = frugal_pipeline::checks::parse::count)]
        epochs: Option<usize>,
        #[arg(long, default_value_t = 128, value_parser = frugal_pipeline::checks::parse::count)]
        batch: usize,
        /// Peak learning rate, after a linear warm-up, then cosine to zero (classifiers at batch
        /// 128: 1.2e-2 for the teacher, 2.4e-2 for the student; language models 5e-5).
        #[arg(long, value_parser = frugal_pipeline::checks::parse::lr)]
        lr: Option<f64>,
        /// AdamW's decoupled weight decay (classifiers 1e-4, language models 0).
        #[arg(long)]
        weight_decay: Option<f64>,
        /// Distillation temperature T (classifiers; language models use 1).
        #[arg(long, default_value_t = 4.0)]
        temperature: f64,
        /// Weight of the teacher's soft targets (classifiers 0.7, language models 0.9).
        #[arg(long, value_parser = frugal_pipeline::checks::parse::alpha)]
        alpha: Option<f64>,
        /// Seed of the initialisation and the shuffles (and of the digits split).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Continue from `OUT.checkpoint` (same settings required).
        #[arg(long)]
        resume: bool,
        /// Classifiers: mixup — each image blended with another of its batch (λ ~ U(0, 1)),
        /// hard targets blended alike, the teacher labelling the blended image.
        #[arg(long)]
        mixup: bool,
        /// Classifiers: move every training image by up to this many pixels per step (fresh
        /// draws; the teacher labels the moved image).
        #[arg(long, default_value_t = 0)]
        shift: usize,
        /// Classifiers: mirror half the training images per step (Fashion-MNIST, not digits).
        #[arg(long)]
        flip: bool,
        /// Classifiers: decoupled distillation (Zhao et al. 2022) — the soft term becomes
        /// TCKD + β·NCKD with this β (8 in the paper) instead of Hinton's KL.
        #[arg(long)]
        nckd_weight: Option<f64>,
        /// Classifiers: attention transfer (Zagoruyko & Komodakis 2017) with this weight β:
        /// the student matches the teacher's spatial attention after every conv block. The term
        /// is a mean over pixels, so small maps need a small β: 1000 (the paper's) suits
        /// Fashion-MNIST, digits' 8×8 images about 10 (BENCHMARKS.md).
        #[arg(long)]
        attention_weight: Option<f64>,
        /// Classifiers: the attention weight falls linearly to 0 over the run.
        #[arg(long)]
        attention_decay: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prune a Llama GGUF model's decoder weights (magnitude, Wanda or SparseGPT; unstructured
    /// or N:M), write them as F32, then evaluate the output against the input. A CNN classifier
    /// (.safetensors from `frugal distill`) is pruned by global magnitude over all its weights and
    /// recovered by distillation from its unpruned self on `--data`.
    Prune {
        /// Input GGUF (F32 or any type Frugal decodes), or a Frugal CNN .safetensors.
        input: PathBuf,
        /// Output GGUF (or .safetensors for a CNN).
        output: PathBuf,
        /// Structured removal instead of zeros, writing a smaller model: `mlp-neurons` removes at
        /// least `--sparsity` of every block's MLP neurons (kept count a multiple of 32);
        /// `attn-heads` that share of each key/value group's query heads; `layers` that share of
        /// the decoder blocks, those that change their input least on --calib text.
        /// magnitude: weight norms; wanda: activation × weight norms; sparsegpt: the same choice,
        /// then ffn_down (attn_output) refitted by least squares on the calibration activations.
        #[arg(long, value_enum)]
        structure: Option<StructureArg>,
        /// CNN only: `fashion-mnist` or `digits`, for recovery and evaluation.
        #[arg(long)]
        data: Option<String>,
        /// CNN only: epochs of distillation from the unpruned model, mask held (0: none).
        #[arg(long, default_value_t = 3)]
        recover_epochs: usize,
        /// CNN only: peak learning rate of the recovery.
        #[arg(long, default_value_t = 1e-3)]
        recover_lr: f64,
        /// CNN only: seed of the recovery's shuffles (and of the digits split).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// CNN only: `sparse` stores the pruned weights as values plus a bitmask (or N:M
        /// positions for an N:M pattern), decoded exactly on load; `dense` as plain F32.
        #[arg(long, value_enum, default_value = "sparse")]
        storage: StorageArg,
        #[arg(long, value_enum, default_value = "sparsegpt")]
        method: PruneMethodArg,
        /// Fraction of each weight set to zero (unstructured; N:M implies 1 − N/M).
        #[arg(long, default_value_t = 0.5, value_parser = frugal_pipeline::checks::parse::sparsity)]
        sparsity: f64,
        /// `unstructured`, or N:M such as `2:4` (keep N of every M consecutive inputs).
        #[arg(long, default_value = "unstructured")]
        pattern: frugal_compress::prune::Pattern,
        /// Calibration text (Wanda and SparseGPT need it).
        #[arg(long)]
        calib: Option<PathBuf>,
        /// At most this many calibration tokens (whole chunks).
        #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
        calib_tokens: usize,
        /// Tokens per calibration chunk.
        #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
        calib_ctx: usize,
        /// SparseGPT dampening, a fraction of the mean diagonal of XᵀX.
        #[arg(long, default_value_t = 0.01, value_parser = frugal_pipeline::checks::parse::damp)]
        damp: f64,
        /// Text to evaluate the output on (default: Brown cj01–cj12 from the fetched corpus).
        #[arg(long)]
        eval_text: Option<PathBuf>,
        /// Chunks of 512 tokens to evaluate.
        #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
        eval_chunks: usize,
        /// Skip the evaluation.
        #[arg(long)]
        no_eval: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a GGUF model to a block type or one of llama.cpp's named mixes (the same file
    /// as `llama-quantize` without calibration), then evaluate the output against the input.
    Quantize {
        /// Input GGUF (F32 or any type Frugal decodes).
        input: PathBuf,
        /// Output GGUF.
        output: PathBuf,
        /// Target type (see `frugal quantize --help`).
        #[arg(long = "type", value_parser = parse_quant_type, long_help = format!("Target type:\n{}", frugal_compress::quant::types_help()))]
        ty: frugal_compress::quant::Target,
        /// One type for every weight matrix: no mix rules (llama-quantize --pure).
        #[arg(long)]
        pure: bool,
        /// Rows a 256-wide type cannot tile: `llama` (its fixed substitutes) or `best` (32-wide
        /// types assigned by measured error within the same bytes).
        #[arg(long, value_enum, default_value = "llama")]
        fallback: FallbackArg,
        /// Override the type of tensors whose name matches REGEX (first match wins), e.g.
        /// `--tensor-type 'ffn_down=Q6_K'`. Repeatable.
        #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
        tensor_type: Vec<frugal_compress::quant::Override>,
        /// Assign types per tensor by measured error to reach this many bits per weight.
        #[arg(long, value_parser = frugal_pipeline::checks::parse::bpw)]
        target_bpw: Option<f64>,
        /// CNN classifiers: each weight's scheme from a plan (TOML `[tensors]` NAME = "int8" |
        /// "int4-g32" | "int4-g64" | "int4-g128" | "f32"), as `frugal tune` writes it; weights
        /// it does not list get --type.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Calibration text: an importance matrix (llama-imatrix's statistic) is measured on it
        /// and weights every rounding decision; GPTQ needs it. Encoders (int4): a text file, or
        /// `brown` for Brown passages disjoint from the evaluation's; int4 weights are then GPTQ'd.
        #[arg(long)]
        calib: Option<PathBuf>,
        /// At most this many calibration tokens (whole chunks).
        #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
        calib_tokens: usize,
        /// Tokens per calibration chunk.
        #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
        calib_ctx: usize,
        /// `rtn` (round to nearest, importance-weighted with --calib), `gptq`, `awq` (activation-
        /// aware channel scales folded into the norms and value/up rows, then importance-weighted
        /// rounding) or `awq-gptq` (AWQ's scales, then GPTQ). All but `rtn` need --calib.
        #[arg(long, value_enum, default_value = "rtn")]
        method: MethodArg,
        /// GPTQ dampening, a fraction of the mean diagonal of XᵀX.
        #[arg(long, default_value_t = 0.01, value_parser = frugal_pipeline::checks::parse::damp)]
        damp: f64,
        /// GPTQ: quantize input columns in their stored order (scales fitted as each block is
        /// reached) instead of by decreasing activation (scales fitted once), the default.
        #[arg(long)]
        no_act_order: bool,
        /// Text to evaluate the output on (default: Brown cj01–cj12 from the fetched corpus).
        #[arg(long)]
        eval_text: Option<PathBuf>,
        /// Chunks of 512 tokens to evaluate.
        #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
        eval_chunks: usize,
        /// Encoders: Brown passages of 128 tokens to evaluate on.
        #[arg(long, default_value_t = 500)]
        eval_passages: usize,
        /// Skip the evaluation of the output against the input.
        #[arg(long)]
        no_eval: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The smallest quantized model that keeps its quality within a limit: every tensor's
    /// sensitivity to every block type measured once, a knapsack-style assignment for a size
    /// budget, the budget bisected with each candidate judged on the search text, the result
    /// verified on held-out text. Writes OUT, OUT.recipe.toml (rebuilds it with `frugal run`)
    /// and OUT.report.html (every candidate, size against quality). For a CNN classifier
    /// (`.safetensors`, with --data and --max-accuracy-drop-pt): a per-tensor mix of int8, int4
    /// groups and F32, judged on half of the test images and verified on the other half;
    /// writes OUT, OUT.plan.toml (`frugal quantize IN OUT --type int8 --plan OUT.plan.toml`
    /// rebuilds it) and OUT.report.html.
    Tune {
        /// Input GGUF, or CNN classifier (.safetensors): the reference the limit is measured
        /// against.
        input: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "out")]
        output: PathBuf,
        /// Mean KL divergence per token from the input, nats.
        #[arg(long, conflicts_with_all = ["max_ppl_increase_pct", "policy", "max_accuracy_drop_pt"])]
        max_kld: Option<f64>,
        /// Perplexity increase over the input's, per cent.
        #[arg(long, conflicts_with_all = ["policy", "max_accuracy_drop_pt"])]
        max_ppl_increase_pct: Option<f64>,
        /// Classifiers: test-accuracy drop from the input's, in points.
        #[arg(long, conflicts_with = "policy", requires = "data")]
        max_accuracy_drop_pt: Option<f64>,
        /// A policy file: its `max_kld` (else `max_ppl_increase_pct`; classifiers:
        /// `max_accuracy_drop_pt`) is the limit.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Classifiers: `digits` or `fashion-mnist` (its test images, halved).
        #[arg(long)]
        data: Option<String>,
        /// Classifiers: seed of the split of the test images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The GGUF type whose rules decide which tensors are quantized (and name the file).
        #[arg(long = "type", default_value = "Q4_K_M")]
        ty: String,
        /// Language models: calibration text (importance matrix).
        #[arg(long, required_unless_present = "data")]
        calib: Option<PathBuf>,
        /// At most this many calibration tokens (whole chunks).
        #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
        calib_tokens: usize,
        /// Tokens per calibration chunk.
        #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
        calib_ctx: usize,
        /// Language models: text the search judges candidates on.
        #[arg(long = "eval", required_unless_present = "data")]
        search: Option<PathBuf>,
        /// Language models: different text the result is verified on.
        #[arg(long, required_unless_present = "data")]
        heldout: Option<PathBuf>,
        /// Chunks of 512 tokens of each text to judge on.
        #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
        eval_chunks: usize,
        /// Stop bisecting when the bracket is narrower than this (bits per weight).
        #[arg(long, default_value_t = 0.1)]
        bpw_tolerance: f64,
        /// At most this many candidates judged in all.
        #[arg(long, default_value_t = 10)]
        max_evals: usize,
        /// Language models: what to minimise — `size` (bytes) or `energy` (the kernel time per
        /// generated token of the served model, F16 and F32 tensors allowed where faster).
        #[arg(long, default_value = "size")]
        objective: String,
        /// Language models, size objective: skip measuring every candidate's energy per token
        /// on `frugal measure`'s workload (about 20 s a candidate on 2 cores; the report's
        /// energy chart is then empty).
        #[arg(long)]
        no_energy: bool,
        /// Language models: keep at most this many MiB of the input's logits between
        /// candidates, so its forward pass runs once per chunk (50 MiB a 512-token chunk of
        /// SmolLM2); 0 recomputes them for every candidate.
        #[arg(long, default_value_t = 2048)]
        reference_cache_mib: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode every tensor of a GGUF model to F32 (the reference for evaluations).
    Dequantize {
        /// Input GGUF.
        input: PathBuf,
        /// Output GGUF (F32).
        output: PathBuf,
    },
    /// Write plain text from the Brown corpus (detagged), e.g. `--files cj01-cj12`.
    BrownText {
        /// Files: a range `cj01-cj12`, a genre `cj`, or a comma-separated list.
        #[arg(long, default_value = "cj01-cj12")]
        files: String,
        /// The corpus folder (default: the fetched asset).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Run a compression recipe; without one, the embedded default on the bundled digits data.
    Run {
        /// A recipe file (TOML).
        recipe: Option<PathBuf>,
        /// Folder for artifacts and report.json.
        #[arg(long, short, default_value = "frugal-out")]
        out: PathBuf,
        /// Seed for every random choice.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run into a folder that holds another run (another recipe's, or the embedded
        /// default's): its report is replaced and nothing of it reused.
        #[arg(long)]
        force: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a report against a sustainability policy: every clause with the report's figure,
    /// the limit and pass/fail; exit 1 if any clause fails, 2 on a bad policy or report.
    Check {
        /// Policy file (TOML; see policies/ and `--list`).
        #[arg(long, required_unless_present = "list")]
        policy: Option<PathBuf>,
        /// A JSON report: `frugal eval|quantize|prune|measure --json` output or a `report.json`.
        #[arg(required_unless_present = "list")]
        report: Option<PathBuf>,
        /// List every clause a policy may hold.
        #[arg(long)]
        list: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure the energy of a command: RAPL and NVML counters where readable, else an
    /// estimate from its CPU time (labelled as such, with its constants).
    Measure {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Grid region for the emissions: ISO 3166-1 alpha-3 code (FRA, USA, …) or country name
        /// (shipped table of 213 regions, data/grid-intensity.csv).
        #[arg(long)]
        region: Option<String>,
        /// Power usage effectiveness of the data centre (1 = none counted).
        #[arg(long, default_value_t = 1.0)]
        pue: f64,
        /// Queries per metered run of MODEL (default 100), or the queries the command served
        /// (adds the figures per 1,000 queries).
        #[arg(long)]
        queries: Option<u64>,
        /// Also write the exports of this record into DIR: `model-card.md` (Hugging Face
        /// `co2_eq_emissions` front matter), `eu-ai-act.json` (Annex XI 2(d)-(e)), `boamps.json`.
        #[arg(long)]
        export: Option<PathBuf>,
        /// What the command does, for the exports (`fine-tuning`, `pre-training`,
        /// `quantization`, `inference`, …).
        #[arg(long, default_value = "fine-tuning")]
        training_type: String,
        /// Floating-point operations of the work, when known (Annex XI asks for them).
        #[arg(long)]
        flops: Option<f64>,
        /// MODEL with --region: the machine's embodied emissions (kg CO2e) for the SCI score.
        /// The default is the SCI specification's own example figure, not this machine's LCA.
        #[arg(long, default_value_t = 1000.0)]
        embodied_kg: f64,
        /// MODEL with --region: the machine's expected life in years for the SCI score (the
        /// specification's example: 4).
        #[arg(long, default_value_t = 4.0)]
        life_years: f64,
        /// A model to run the built-in inference workload on: a Frugal CNN `.safetensors`
        /// (with --data), a sentence-transformers folder, or a Llama GGUF.
        model: Option<PathBuf>,
        /// Classifiers: the images' data set (`digits`, `fashion-mnist`).
        #[arg(long)]
        data: Option<String>,
        /// MODEL: the `frugal measure --json` report of the model MODEL replaces (same
        /// workload), for the break-even of compressing (with --cost).
        #[arg(long, requires = "cost")]
        baseline: Option<PathBuf>,
        /// MODEL: the `--json` report of the compression that made MODEL (its `energy`, which
        /// includes the evaluation the command runs unless given --no-eval), or of `frugal
        /// measure -- CMD` around it: break-even = its joules / the saving per query.
        #[arg(long, requires = "baseline")]
        cost: Option<PathBuf>,
        /// MODEL: metered runs (each gives one energy figure; the interval is over them).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// MODEL: unmetered queries first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// MODEL (language models): tokens generated per prompt.
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        /// MODEL (language models): multiply in f32 on weights decoded when loading, instead
        /// of the stored types' quantized kernels.
        #[arg(long)]
        decoded_weights: bool,
        /// The command and its arguments, after `--` (instead of MODEL).
        #[arg(last = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    // On Ctrl-C, delete unfinished outputs before exiting, so nothing partial is left behind.
    let _ = ctrlc::set_handler(|| {
        frugal_formats::output::remove_unfinished_outputs();
        eprintln!("frugal: interrupted; unfinished outputs removed");
        std::process::exit(130);
    });
    frugal_formats::output::fail_oversized_writes();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // One process, or the ranks of an MPI launch (`mpirun -np N frugal …`, feature `mpi`).
    // Held to the end: MPI is finalised when it drops.
    let _mpi = match frugal_dist::init() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("frugal: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Run { .. })
        && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        // The embedded default trains small CNNs: their tensors are too small for candle's
        // thread pool, whose barrier waits took 60 % of the time (perf) and half the speed.
        // Set before the first tensor operation starts the pool; results are the same.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            // Under MPI: names the rank and ends every rank (none is left waiting).
            frugal_dist::fail(&format_args!("{e:#}"), i32::from(code));
            eprintln!("frugal: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// A usage error found after parsing (options that do not fit the input): exit code 2.
#[derive(Debug)]
struct BadUsage(String);

impl std::fmt::Display for BadUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadUsage {}

/// `frugal measure -- CMD` whose command failed: Frugal exits with the command's code.
#[derive(Debug)]
struct ChildExit {
    code: u8,
    status: String,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the measured command failed ({})", self.status)
    }
}

impl std::error::Error for ChildExit {}

/// Reads a JSON report Frugal wrote (at most 256 MiB; a device, FIFO or endless file refused).
fn read_json_report(p: &std::path::Path) -> Result<serde_json::Value> {
    let bytes = frugal_formats::guard::read_capped(p, "report", 256 << 20)?;
    Ok(serde_json::from_slice(&bytes)
        .map_err(|e| BadUsage(format!("{}: not a JSON report: {e}", p.display())))?)
}

/// 2 when the input is at fault (missing, malformed or unsupported file, bad option value),
/// otherwise 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<ChildExit>() {
        return c.code;
    }
    let bad_input = e.chain().any(|c| {
        c.downcast_ref::<BadUsage>().is_some()
            || c.downcast_ref::<frugal_formats::Error>()
                .is_some_and(|f| f.is_bad_input())
            || c.downcast_ref::<frugal_models::Error>()
                .is_some_and(|m| m.is_bad_input())
            || c.downcast_ref::<frugal_eval::Error>()
                .is_some_and(|m| m.is_bad_input())
            || c.downcast_ref::<frugal_pipeline::Error>()
                .is_some_and(|e| e.is_bad_input())
    });
    if bad_input {
        2
    } else {
        1
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Rtn,
    Gptq,
    Awq,
    AwqGptq,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StructureArg {
    /// Whole MLP neurons (gate and up rows, down columns).
    MlpNeurons,
    /// Query attention heads, the same number from each key/value group.
    AttnHeads,
    /// Whole decoder blocks, those that change their input least (needs --calib).
    Layers,
    /// CNN only: whole conv channels (and the next layer's inputs that read them).
    Channels,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PruneMethodArg {
    Magnitude,
    Wanda,
    Sparsegpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StorageArg {
    Sparse,
    Dense,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FallbackArg {
    Llama,
    Best,
}

fn parse_quant_type(s: &str) -> Result<frugal_compress::quant::Target, String> {
    frugal_compress::quant::target(s).ok_or_else(|| {
        format!(
            "unknown type `{s}` (one of: {})",
            frugal_compress::quant::target_names().join(", ")
        )
    })
}

/// Prints `value` as JSON, or runs `text` to print it for people.
/// The evaluation of a compressed LM: `--eval-text`, or Brown cj01–cj12 written into `tmp`.
fn eval_spec(
    no_eval: bool,
    eval_text: Option<PathBuf>,
    chunks: usize,
    tmp: &std::path::Path,
) -> Result<Option<frugal_pipeline::quantize::EvalSpec>> {
    let text = match (no_eval, eval_text) {
        (true, _) => None,
        (false, Some(t)) => Some(t),
        (false, None) => {
            let dir = frugal_formats::assets::brown_dir();
            if dir.exists() {
                let ids = frugal_formats::brown::select_ids(&dir, "cj01-cj12")?;
                let p = tmp.join("brown-cj01-cj12.txt");
                std::fs::write(&p, frugal_formats::brown::plain_text(&dir, &ids)?)?;
                Some(p)
            } else {
                eprintln!("frugal: no evaluation text: pass --eval-text FILE, or fetch the Brown corpus (scripts/fetch-assets.sh brown); skipping the evaluation");
                None
            }
        }
    };
    Ok(text.map(|text| frugal_pipeline::quantize::EvalSpec {
        text,
        ctx: 512,
        chunks: Some(chunks),
    }))
}

thread_local! {
    /// The energy meter of a compression command (quantize, prune, distill), started before
    /// its work and read when its result is printed: the cost a break-even is computed from.
    static METER: std::cell::RefCell<Option<frugal_energy::Session>> =
        const { std::cell::RefCell::new(None) };
}

/// Prints `value` (JSON, or `text`); a metered command's energy goes with it (`energy` in the
/// JSON object, a line of text).
fn emit<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) -> Result<()> {
    let energy = METER
        .with(|m| m.borrow_mut().take())
        .map(frugal_energy::Session::stop)
        .transpose()?;
    if !frugal_dist::is_root() {
        return Ok(()); // rank 0 prints the job's result
    }
    if json {
        let mut v = serde_json::to_value(value)?;
        if let (Some(e), Some(o)) = (&energy, v.as_object_mut()) {
            o.insert("energy".into(), serde_json::to_value(e)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        text(value);
        if let Some(e) = energy {
            println!(
                "energy     {:.1} J over {:.1} s ({}: {})",
                e.joules(),
                e.seconds,
                if e.all_measured() {
                    "measured"
                } else {
                    "estimated"
                },
                e.method()
            );
        }
    }
    Ok(())
}

/// A progress bar on standard error, hidden when it is not a terminal.
/// Shows a staged step's progress (`what` is the stage: imatrix, gptq, tensors, chunks).
fn show_stage(bar: &indicatif::ProgressBar, what: &str, done: usize, total: usize) {
    bar.set_message(what.to_string());
    bar.set_length(total as u64);
    bar.set_position(done as u64);
}

fn progress_bar(unit: &str) -> indicatif::ProgressBar {
    if !frugal_dist::is_root() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit}{{msg}} (eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// Under MPI (more than one rank): what runs distributed. Language-model quantization and
/// evaluation, and distillation (classifiers and language models), share their work across
/// ranks (`frugal_dist`); the rest would only repeat the whole job on every rank, so it is
/// refused.
fn check_distributed(cmd: &Command) -> Result<()> {
    let w = frugal_dist::world();
    if w.size() == 1 {
        return Ok(());
    }
    let what = match cmd {
        Command::Inspect { .. } => return Ok(()),
        Command::Quantize { input, .. }
            if !input.is_dir()
                && !matches!(
                    frugal_formats::inspect::sniff_format(input),
                    Ok(frugal_formats::inspect::ModelFormat::Safetensors)
                ) =>
        {
            return Ok(())
        }
        Command::Quantize { .. } => "frugal quantize of safetensors models",
        Command::Eval {
            data: None, model, ..
        } if !model.is_dir() => return Ok(()),
        Command::Distill { .. } => return Ok(()),
        Command::Eval { .. } => "frugal eval of encoders and classifiers",
        _ => "this command",
    };
    Err(BadUsage(format!(
        "{what} does not run distributed; run it as one process (without mpirun). Distributed: \
         quantize and eval of GGUF language models, distill"
    ))
    .into())
}

fn dispatch(cli: Cli) -> Result<()> {
    check_distributed(&cli.command)?;
    // Every path the command reads and writes, checked before any work (issue #22).
    io_plan::plan(&cli.command).check()?;
    if matches!(
        cli.command,
        Command::Quantize { .. }
            | Command::Prune { .. }
            | Command::Distill { .. }
            | Command::Tune { .. }
    ) {
        let meters = frugal_energy::MeterOptions::detect_cpu();
        let session = frugal_energy::Session::start(&meters)?;
        METER.with(|m| *m.borrow_mut() = Some(session));
    }
    match cli.command {
        Command::Inspect { file, json, all } => {
            let summary = frugal_formats::inspect::inspect(&file)?;
            emit(json, &summary, |summary| {
                print!("{}", summary.to_text(all));
            })?;
        }
        Command::Eval {
            model,
            text,
            reference,
            ctx,
            chunks,
            f32_activations,
            quantized_kernels,
            per_genre,
            passages,
            passage_tokens,
            dump_items,
            data,
            seed,
            json,
        } => {
            if let Some(data) = data {
                let m = frugal_models::cnn::Cnn::load(&model, &candle_core::Device::Cpu)?;
                let (set, idx) = match data.as_str() {
                    "fashion-mnist" => (
                        frugal_formats::idx::read_fashion_mnist(
                            &frugal_formats::assets::fashion_mnist_dir(),
                        )?
                        .1,
                        None,
                    ),
                    "digits" => {
                        let d = frugal_formats::digits::embedded_digits();
                        let idx =
                            frugal_pipeline::stratified_split(&d.labels, d.n_classes, 0.2, seed);
                        (d, Some(idx))
                    }
                    other => anyhow::bail!("unknown data set `{other}` (fashion-mnist, digits)"),
                };
                let r = frugal_eval::classifier::eval_classifier(&m, &set, idx.as_deref())?;
                emit(json, &r, |r| {
                    println!(
                        "model      {}
data       {data} ({} test images)
accuracy   {:.2} % (95 % CI {:.2}–{:.2} %)",
                        model.display(),
                        r.n_images,
                        r.accuracy_pct,
                        r.ci95_pct.0,
                        r.ci95_pct.1
                    );
                })?;
                return Ok(());
            }
            if model.is_dir() {
                let brown = frugal_formats::assets::brown_dir();
                use frugal_eval::encoder::EncoderData;
                let data = match passages {
                    Some(n) => EncoderData::Passages {
                        n,
                        tokens: passage_tokens,
                    },
                    None => EncoderData::Sentences {
                        per_genre: per_genre.unwrap_or(40),
                    },
                };
                if let Some(p) = &dump_items {
                    let items = frugal_eval::encoder::encoder_items(&model, &brown, data)?;
                    let bytes = serde_json::to_vec(&items)?;
                    frugal_formats::output::write_atomic(p, &[&model], |f| {
                        std::io::Write::write_all(f, &bytes)
                    })?;
                }
                let r = frugal_eval::encoder::eval_encoder_dirs(
                    &model,
                    reference.as_deref(),
                    &brown,
                    data,
                )?;
                emit(json, &r, |r| {
                    print!("{}", r.to_text());
                })?;
                return Ok(());
            }
            let text =
                text.ok_or_else(|| anyhow::anyhow!("--text is required for language models"))?;
            use frugal_models::llama::LoadOptions;
            let load = match (quantized_kernels, f32_activations) {
                (true, _) => LoadOptions::KERNELS,
                (false, true) => LoadOptions::EXACT,
                (false, false) => LoadOptions::GGML,
            };
            let job = frugal_eval::LmEvalFiles {
                model,
                reference,
                text,
                opts_ctx: ctx,
                max_chunks: chunks,
                load,
            };
            let bar = progress_bar("chunks");
            let report = frugal_eval::eval_lm_files(&job, &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            emit(json, &report, |report| {
                print!("{}", report.to_text());
            })?;
        }
        Command::Distill {
            data,
            out,
            student,
            text,
            ctx,
            max_tokens,
            top_k,
            seq_batch,
            eval_text,
            eval_chunks,
            no_eval,
            teacher,
            arch,
            epochs,
            batch,
            lr,
            weight_decay,
            temperature,
            alpha,
            seed,
            resume,
            mixup,
            shift,
            flip,
            nckd_weight,
            attention_weight,
            attention_decay,
            json,
        } => {
            if let (Some(student), Some(text)) = (&student, &text) {
                if mixup
                    || shift > 0
                    || flip
                    || nckd_weight.is_some()
                    || attention_weight.is_some()
                    || attention_decay
                {
                    return Err(BadUsage(
                        "--mixup, --shift, --flip, --nckd-weight, --attention-weight and \
                         --attention-decay are for classifiers"
                            .into(),
                    )
                    .into());
                }
                let [teacher] = &teacher[..] else {
                    return Err(BadUsage(
                        "a language model distils from one --teacher (an ensemble is for classifiers)"
                            .into(),
                    )
                    .into());
                };
                let tmp = tempfile::TempDir::new()?;
                let spec = eval_spec(no_eval, eval_text, eval_chunks, tmp.path())?;
                let d = frugal_compress::lm_distill::LmDistillOptions::default();
                let job = frugal_pipeline::quantize::LmDistillJob {
                    student: student.clone(),
                    teacher: teacher.clone(),
                    text: frugal_pipeline::quantize::CalibSpec {
                        text: text.clone(),
                        ctx,
                        max_tokens,
                    },
                    out: out.clone(),
                    opts: frugal_compress::lm_distill::LmDistillOptions {
                        epochs: epochs.unwrap_or(d.epochs),
                        top_k,
                        lr: lr.unwrap_or(d.lr),
                        weight_decay: weight_decay.unwrap_or(d.weight_decay),
                        alpha: alpha.unwrap_or(d.alpha),
                        seed,
                        batch: seq_batch,
                        ..d
                    },
                    resume,
                    discard_stale: false,
                };
                let bar = progress_bar("");
                let step = frugal_pipeline::quantize::lm_distill_step(
                    &job,
                    spec.as_ref(),
                    &|what, done, total| show_stage(&bar, what, done, total),
                )?;
                bar.finish_and_clear();
                emit(json, &step, |s| {
                    let last = |n: usize| {
                        let tail = &s.steps[s.steps.len().saturating_sub(n)..];
                        tail.iter().map(|r| r.kl_top_k).sum::<f64>() / tail.len().max(1) as f64
                    };
                    println!(
                        "distilled {} from {} on {} tokens ({} sequences, {} epochs): teacher cache {:.1} MiB in {:.1} s, training {:.1} s ({:.0} tokens/s); top-k KL first {:.4}, last {:.4}",
                        s.student,
                        s.teacher,
                        s.tokens,
                        s.sequences,
                        s.opts.epochs,
                        s.teacher_cache_bytes as f64 / 1048576.0,
                        s.teacher_seconds,
                        s.train_seconds,
                        s.tokens_per_second,
                        s.steps.first().map_or(f64::NAN, |r| r.kl_top_k),
                        last(8)
                    );
                    println!("wrote {}", s.out);
                    if let Some(e) = &s.quality {
                        print!("quality against the teacher:\n{}", e.to_text());
                    }
                })?;
                return Ok(());
            }
            let Some(data) = data else {
                return Err(BadUsage(
                    "--data fashion-mnist|digits (or --student for a language model)".into(),
                )
                .into());
            };
            let arch = frugal_pipeline::classifier::Arch::parse(&arch)?;
            let lr = lr.unwrap_or_else(|| arch.default_lr());
            let job = frugal_pipeline::classifier::DistillJob {
                data,
                arch,
                teachers: teacher,
                out,
                opts: frugal_compress::distill::TrainOptions {
                    epochs: epochs.unwrap_or(3),
                    batch,
                    lr,
                    weight_decay: weight_decay.unwrap_or(1e-4),
                    seed,
                    temperature,
                    alpha: alpha.unwrap_or(0.7),
                    mixup,
                    shift,
                    flip,
                    nckd_weight,
                    attention_weight,
                    attention_decay,
                    ..Default::default()
                },
                resume,
            };
            let bar = progress_bar("batches ");
            // Samples/s of this process's batches (a resumed run starts counting where it resumes).
            let start = std::cell::Cell::new(None::<(std::time::Instant, u64)>);
            let step = frugal_pipeline::classifier::distill_classifier(&job, &|e, b, n, loss| {
                let pos = ((e - 1) * n + b) as u64;
                let (t0, p0) = start.get().unwrap_or_else(|| {
                    let s = (std::time::Instant::now(), pos);
                    start.set(Some(s));
                    s
                });
                let rate = (pos - p0) as f64 * job.opts.batch as f64
                    / t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_length((n * job.opts.epochs) as u64);
                bar.set_position(pos);
                bar.set_message(format!("epoch {e}, loss {loss:.4}, {rate:.0} samples/s"));
            })?;
            bar.finish_and_clear();
            emit(json, &step, |s| {
                for e in &s.epochs {
                    println!(
                        "epoch {:>3}  loss {:.4}  {:>8.0} samples/s  {:.1} s",
                        e.epoch, e.loss, e.samples_per_second, e.seconds
                    );
                }
                println!(
                    "wrote {} ({} on {}, {}), test accuracy {:.2} % (95 % CI {:.2}–{:.2} %) in {:.1} s",
                    s.out,
                    s.arch,
                    s.data,
                    match &s.teacher_eval {
                        None => "labels".to_string(),
                        Some(t) => format!(
                            "distilled from {} ({:.2} %)",
                            s.teachers.join(" + "),
                            t.accuracy_pct
                        ),
                    },
                    s.eval.accuracy_pct,
                    s.eval.ci95_pct.0,
                    s.eval.ci95_pct.1,
                    s.seconds
                );
            })?;
        }
        Command::Prune {
            input,
            output,
            structure,
            data,
            recover_epochs,
            recover_lr,
            seed,
            storage,
            method,
            sparsity,
            pattern,
            calib,
            calib_tokens,
            calib_ctx,
            damp,
            eval_text,
            eval_chunks,
            no_eval,
            json,
        } => {
            use frugal_compress::prune::{GgufPruneOptions, Score};
            let score = match method {
                PruneMethodArg::Magnitude => Score::Magnitude,
                PruneMethodArg::Wanda => Score::Wanda,
                PruneMethodArg::Sparsegpt => Score::SparseGpt,
            };
            if is_cnn_file(&input) {
                let Some(data) = data else {
                    return Err(BadUsage(
                        "a CNN classifier is recovered and evaluated on a data set: --data fashion-mnist|digits".into(),
                    )
                    .into());
                };
                if score != Score::Magnitude {
                    return Err(BadUsage(
                        "CNN classifiers are pruned by global magnitude (--method magnitude) and recovered by distillation".into(),
                    )
                    .into());
                }
                let job = frugal_pipeline::classifier::PruneClassifierJob {
                    input,
                    output,
                    data,
                    prune: frugal_compress::prune::PruneOptions {
                        score,
                        sparsity,
                        pattern,
                        scope: frugal_compress::prune::Scope::Global,
                    },
                    recover: frugal_compress::distill::TrainOptions {
                        epochs: recover_epochs,
                        batch: 128,
                        lr: recover_lr,
                        warmup: 0.0,
                        seed,
                        ..Default::default()
                    },
                    sparse_storage: storage == StorageArg::Sparse,
                    channels: match structure {
                        None => false,
                        Some(StructureArg::Channels)
                            if pattern != frugal_compress::prune::Pattern::Unstructured =>
                        {
                            return Err(BadUsage(
                                "--structure channels removes whole channels; it takes no --pattern"
                                    .into(),
                            )
                            .into())
                        }
                        Some(StructureArg::Channels) => true,
                        Some(_) => {
                            return Err(BadUsage(
                                "a CNN classifier takes --structure channels (or none)".into(),
                            )
                            .into())
                        }
                    },
                };
                let bar = progress_bar("batches ");
                let step =
                    frugal_pipeline::classifier::prune_classifier(&job, &|e, b, n, loss| {
                        bar.set_length((n * recover_epochs) as u64);
                        bar.set_position(((e - 1) * n + b) as u64);
                        bar.set_message(format!("recovery epoch {e}, loss {loss:.4}"));
                    })?;
                bar.finish_and_clear();
                emit(json, &step, |s| {
                    if let Some(p) = &s.prune {
                        println!(
                            "wrote {} at {:.2} % sparsity ({:?}) after {} recovery epochs in {:.1} s",
                            s.output,
                            100.0 * p.sparsity,
                            p.options.pattern,
                            s.epochs.len(),
                            s.seconds
                        );
                    }
                    if let Some(c) = &s.channels {
                        println!(
                            "wrote {}: conv channels {:?} → {:?}, {} → {} parameters, after {} recovery epochs in {:.1} s",
                            s.output,
                            c.conv_channels_before,
                            c.conv_channels_after,
                            c.parameters_before,
                            c.parameters_after,
                            s.epochs.len(),
                            s.seconds
                        );
                    }
                    println!(
                        "stored {}: {} bytes ({:.1} % of the input's {} bytes)",
                        s.storage,
                        s.output_bytes,
                        100.0 * s.output_bytes as f64 / s.input_bytes.max(1) as f64,
                        s.input_bytes
                    );
                    println!(
                        "test accuracy {:.2} % (input {:.2} %, drop {:.2} points; 95 % CI {:.2}–{:.2})",
                        s.eval.accuracy_pct,
                        s.input_eval.accuracy_pct,
                        s.accuracy_drop_pt,
                        s.eval.ci95_pct.0,
                        s.eval.ci95_pct.1
                    );
                })?;
                return Ok(());
            }
            if score != Score::Magnitude && calib.is_none() {
                return Err(BadUsage(
                    "Wanda and SparseGPT need calibration text: --calib FILE".into(),
                )
                .into());
            }
            let tmp = tempfile::TempDir::new()?;
            let spec = eval_spec(no_eval, eval_text, eval_chunks, tmp.path())?;
            let calib = calib.map(|text| frugal_pipeline::quantize::CalibSpec {
                text,
                ctx: calib_ctx,
                max_tokens: calib_tokens,
            });
            if let Some(structure) = structure {
                use frugal_compress::structured::Unit;
                if pattern != frugal_compress::prune::Pattern::Unstructured {
                    return Err(BadUsage(
                        "--structure removes whole units; it takes no --pattern".into(),
                    )
                    .into());
                }
                let opts = frugal_compress::structured::StructuredOptions {
                    unit: match structure {
                        StructureArg::MlpNeurons => Unit::MlpNeurons,
                        StructureArg::AttnHeads => Unit::AttnHeads,
                        StructureArg::Layers => Unit::Layers,
                        StructureArg::Channels => {
                            return Err(BadUsage(
                                "--structure channels is for CNN classifiers (.safetensors)".into(),
                            )
                            .into())
                        }
                    },
                    score,
                    fraction: sparsity,
                    multiple: 32,
                    damp,
                };
                let bar = progress_bar("");
                let step = frugal_pipeline::quantize::structured_prune_step(
                    &input,
                    &output,
                    &opts,
                    calib.as_ref(),
                    spec.as_ref(),
                    &|what, done, total| show_stage(&bar, what, done, total),
                )?;
                bar.finish_and_clear();
                emit(json, &step, |s| {
                    let (before, after) = s.prune.parameters();
                    println!(
                        "wrote {} ({:?}): {}, {} → {} parameters, {:.2} MiB, in {:.2} s",
                        s.output,
                        s.options.score,
                        s.prune.summary(),
                        before,
                        after,
                        s.output_bytes as f64 / 1048576.0,
                        s.seconds
                    );
                    if let Some(e) = &s.quality {
                        print!("quality against the input:\n{}", e.to_text());
                    }
                })?;
                return Ok(());
            }
            let opts = GgufPruneOptions {
                score,
                sparsity,
                pattern,
                damp,
            };
            let bar = progress_bar("");
            let step = frugal_pipeline::quantize::prune_step(
                &input,
                &output,
                &opts,
                calib.as_ref(),
                spec.as_ref(),
                &|what, done, total| show_stage(&bar, what, done, total),
            )?;
            bar.finish_and_clear();
            emit(json, &step, |step| {
                let r = &step.prune;
                println!(
                    "wrote {} ({:?}, {:?}, {} layers at {:.2} % sparsity, {:.2} MiB) in {:.2} s",
                    r.output,
                    r.options.score,
                    r.options.pattern,
                    r.layers.len(),
                    100.0 * r.sparsity,
                    r.output_bytes as f64 / 1048576.0,
                    r.seconds
                );
                if let Some(e) = &step.quality {
                    print!("quality against the input:\n{}", e.to_text());
                }
            })?;
        }
        Command::Quantize {
            input,
            output,
            ty,
            pure,
            fallback,
            tensor_type,
            target_bpw,
            plan,
            calib,
            calib_tokens,
            calib_ctx,
            method,
            damp,
            no_act_order,
            eval_text,
            eval_chunks,
            eval_passages,
            no_eval,
            json,
        } => {
            use frugal_compress::quant::Target;
            if plan.is_some() && (input.is_dir() || !is_cnn_file(&input)) {
                return Err(BadUsage(
                    "--plan is for CNN classifier files (.safetensors, as `frugal tune --data` writes them)".into(),
                )
                .into());
            }
            let ty = match (ty, input.is_dir()) {
                (Target::Int(scheme), true) => {
                    use frugal_pipeline::quantize::EncoderCalib;
                    if matches!(method, MethodArg::Awq | MethodArg::AwqGptq) {
                        return Err(BadUsage(
                            "AWQ is implemented for Llama GGUF models; encoder int4 weights use GPTQ with --calib".into(),
                        )
                        .into());
                    }
                    let n = calib_tokens / 128;
                    let calib = calib.map(|c| {
                        if c.as_os_str() == "brown" && !c.exists() {
                            EncoderCalib::Brown { passages: n }
                        } else {
                            EncoderCalib::Text {
                                path: c,
                                passages: n,
                            }
                        }
                    });
                    let bar = progress_bar("");
                    let step = frugal_pipeline::quantize::quantize_encoder_step(
                        &input,
                        &output,
                        scheme,
                        calib.as_ref(),
                        (!no_eval).then_some(eval_passages),
                        &|what, done, total| show_stage(&bar, what, done, total),
                    )?;
                    bar.finish_and_clear();
                    return emit(json, &step, |s| {
                        let q = &s.quantize;
                        println!(
                            "wrote {} ({}, {}, {} weights, {:.2} MiB from {:.2} MiB) in {:.2} s; largest relative RMS error {:.4} ({})",
                            q.output, q.scheme, q.method, q.n_quantized, q.output_bytes as f64 / 1048576.0,
                            q.input_bytes as f64 / 1048576.0, q.seconds, q.worst_rel_rmse.0, q.worst_rel_rmse.1
                        );
                        if let Some(e) = &s.quality {
                            print!("quality against the input:\n{}", e.to_text());
                        }
                    });
                }
                (Target::Gguf(t), false) => t,
                (Target::Int(scheme), false) if is_cnn_file(&input) => {
                    // A Frugal CNN classifier: its weights per output channel (evaluate with
                    // `frugal eval OUT --data …`), or each as a plan says.
                    if let Some(p) = &plan {
                        let listed = frugal_pipeline::tune_classifier::read_plan(p)?;
                        let f = frugal_formats::safetensors::SafetensorsFile::open(&input)?;
                        let all: std::collections::BTreeMap<String, _> =
                            frugal_pipeline::tune_classifier::plan_for(&f, p, &listed, scheme)?;
                        let bytes = frugal_compress::quant::int::quantize_safetensors_planned(
                            &input,
                            &output,
                            &all,
                            &|_, _| {},
                        )?;
                        let r = serde_json::json!({
                            "quantize": {"input": input.display().to_string(),
                                "output": output.display().to_string(), "plan": p.display().to_string(),
                                "schemes": all.iter().map(|(k, s)| (k.clone(), s.name)).collect::<std::collections::BTreeMap<_, _>>(),
                                "output_bytes": bytes}
                        });
                        return emit(json, &r, |_| {
                            println!("wrote {} ({} bytes) by the plan {}", output.display(), bytes, p.display());
                        });
                    }
                    let r = frugal_compress::quant::int::quantize_safetensors_file(
                        &input,
                        &output,
                        scheme,
                        &|_, _| {},
                    )?;
                    return emit(json, &serde_json::json!({ "quantize": r }), |_| {
                        println!(
                            "wrote {} ({}, {} weights, {} bytes from {}) in {:.2} s; largest relative RMS error {:.4} ({})",
                            r.output, r.scheme, r.n_quantized, r.output_bytes, r.input_bytes,
                            r.seconds, r.worst_rel_rmse.0, r.worst_rel_rmse.1
                        );
                    });
                }
                (Target::Int(s), false) => {
                    return Err(BadUsage(format!(
                        "--type {} is for safetensors model folders and Frugal CNN files; {} is neither (GGUF models take the GGUF types)",
                        s.name,
                        input.display()
                    ))
                    .into())
                }
                (Target::Gguf(t), true) => {
                    return Err(BadUsage(format!(
                        "--type {} is for GGUF models; {} is a folder (safetensors models take int8, int4-g32, int4-g64, int4-g128)",
                        t.name,
                        input.display()
                    ))
                    .into())
                }
            };
            let tmp = tempfile::TempDir::new()?;
            let spec = eval_spec(no_eval, eval_text, eval_chunks, tmp.path())?;
            let mut opts = frugal_compress::quant::QuantizeOptions::new(ty);
            opts.pure = pure;
            opts.fallback = match fallback {
                FallbackArg::Llama => frugal_compress::quant::Fallback::Llama,
                FallbackArg::Best => frugal_compress::quant::Fallback::Best,
            };
            opts.overrides = tensor_type;
            opts.target_bpw = target_bpw;
            let bar = progress_bar("");
            let calib = calib.map(|text| frugal_pipeline::quantize::CalibSpec {
                text,
                ctx: calib_ctx,
                max_tokens: calib_tokens,
            });
            let gptq = frugal_compress::quant::gptq::GptqOptions {
                damp,
                act_order: !no_act_order,
            };
            let blockwise = |awq, gptq| {
                frugal_compress::quant::Method::Blockwise(
                    frugal_compress::quant::gptq::BlockwiseOptions { awq, gptq },
                )
            };
            let method = match method {
                MethodArg::Rtn => frugal_compress::quant::Method::Rtn,
                MethodArg::Gptq => blockwise(false, Some(gptq)),
                MethodArg::Awq => blockwise(true, None),
                MethodArg::AwqGptq => blockwise(true, Some(gptq)),
            };
            let step = frugal_pipeline::quantize::quantize_step(
                &input,
                &output,
                &opts,
                calib.as_ref(),
                method,
                spec.as_ref(),
                &|what, done, total| show_stage(&bar, what, done, total),
            )?;
            bar.finish_and_clear();
            emit(json, &step, |step| {
                let r = &step.quantize;
                println!(
                    "wrote {} ({}, {:.2} MiB from {:.2} MiB, {:.3} bits/weight) in {:.2} s",
                    r.output,
                    r.target,
                    r.output_bytes as f64 / 1048576.0,
                    r.input_bytes as f64 / 1048576.0,
                    r.bits_per_weight,
                    r.seconds
                );
                if let Some(w) = r
                    .tensors
                    .iter()
                    .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse))
                {
                    println!("largest relative RMS error: {:.4} ({})", w.rel_rmse, w.name);
                }
                if let Some(q) = &step.quality {
                    print!("quality against the input:\n{}", q.to_text());
                }
            })?;
        }
        Command::Dequantize { input, output } => {
            let n = frugal_models::convert::dequantize_gguf(&input, &output)?;
            eprintln!("wrote {} ({n} bytes, all tensors F32)", output.display());
        }
        Command::BrownText { files, dir, out } => {
            let dir = dir.unwrap_or_else(frugal_formats::assets::brown_dir);
            let ids = frugal_formats::brown::select_ids(&dir, &files)?;
            let text = frugal_formats::brown::plain_text(&dir, &ids)?;
            let inputs: Vec<PathBuf> = ids.iter().map(|id| dir.join(id)).collect();
            let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
            frugal_formats::output::write_atomic(&out, &inputs, |f| {
                std::io::Write::write_all(f, text.as_bytes())
            })?;
            eprintln!(
                "wrote {} ({} files, {} bytes)",
                out.display(),
                ids.len(),
                text.len()
            );
        }
        Command::Check {
            policy,
            report,
            list,
            json,
        } => {
            use frugal_report::policy::{check, Limit, Policy, CLAUSES};
            if list {
                for c in CLAUSES {
                    println!("{:26} {:>6}  {}", c.key, c.unit.name, c.doc);
                }
                return Ok(());
            }
            let (Some(policy), Some(report)) = (policy, report) else {
                return Err(BadUsage("--policy P REPORT".into()).into());
            };
            let p = Policy::load(&policy).map_err(|e| BadUsage(e.to_string()))?;
            let r = read_json_report(&report)?;
            let metrics = frugal_report::metrics::Metrics::from_report(&r)
                .map_err(|e| BadUsage(format!("{}: {e}", report.display())))?;
            let outcomes = check(&p, &metrics);
            let failed = outcomes.iter().filter(|o| !o.pass).count();
            let out = serde_json::json!({
                "policy": policy.display().to_string(),
                "report": report.display().to_string(),
                "pass": failed == 0,
                "clauses": outcomes,
            });
            emit(json, &out, |_| {
                for o in &outcomes {
                    let limit = match &o.limit {
                        Limit::Number(x) => format!("{x} {}", o.unit),
                        Limit::Require(b) => format!("required: {b}"),
                        Limit::Text(t) => t.clone(),
                        Limit::Grades(g) => format!("{g:?} {}", o.unit),
                    };
                    let value = o.value.map_or("-".to_string(), |v| format!("{v:.6}"));
                    println!(
                        "{} {:26} value {:>12}  limit {:<14} {}{}",
                        if o.pass { "PASS" } else { "FAIL" },
                        o.key,
                        value,
                        limit,
                        o.from
                            .as_deref()
                            .map(|f| format!("({f}) "))
                            .unwrap_or_default(),
                        o.note
                    );
                }
                println!(
                    "{}: {} of {} clauses pass",
                    policy.display(),
                    outcomes.len() - failed,
                    outcomes.len()
                );
            })?;
            if failed > 0 {
                anyhow::bail!("{failed} policy clause(s) failed");
            }
        }
        Command::Measure {
            json,
            region,
            pue,
            queries,
            export,
            training_type,
            flops,
            embodied_kg,
            life_years,
            model,
            data,
            repeats,
            warmup,
            tokens,
            decoded_weights,
            baseline,
            cost,
            command,
        } => {
            let carbon = region
                .as_deref()
                .map(|r| {
                    Ok::<_, frugal_energy::Error>(frugal_pipeline::measure::CarbonOptions {
                        grid: frugal_energy::carbon::intensity(r)?,
                        pue,
                        embodied_kg,
                        life_years,
                    })
                })
                .transpose()
                .map_err(|e| BadUsage(e.to_string()))?;
            // Checked before running anything.
            frugal_energy::carbon::operational_g(0.0, pue, 0.0)
                .map_err(|e| BadUsage(e.to_string()))?;
            // Read before anything runs: a bad path must not waste a measurement.
            let break_even_inputs = match (&baseline, &cost) {
                (Some(b), Some(c)) => Some((read_json_report(b)?, read_json_report(c)?)),
                _ => None,
            };
            let opts = frugal_energy::MeterOptions::detect();
            if let Some(model) = model {
                if !command.is_empty() {
                    return Err(
                        BadUsage("measure either MODEL or -- COMMAND, not both".into()).into(),
                    );
                }
                if export.is_some() || flops.is_some() {
                    return Err(BadUsage(
                        "--export and --flops describe a measured command (a training or compression job), not a MODEL's inference workload".into(),
                    )
                    .into());
                }
                let job = frugal_pipeline::measure::MeasureJob {
                    model,
                    data,
                    queries: queries.unwrap_or(100) as usize,
                    repeats,
                    warmup,
                    tokens,
                    weights: if decoded_weights {
                        frugal_pipeline::measure::Weights::Decoded
                    } else {
                        frugal_pipeline::measure::Weights::Stored
                    },
                    // The built-in workloads run on the CPU: a GPU's whole-device counter would
                    // add other processes' and idle energy.
                    meters: frugal_energy::MeterOptions {
                        nvml: false,
                        ..opts
                    },
                };
                let mut w = frugal_pipeline::measure::measure_model(&job)?;
                if let Some(c) = &carbon {
                    frugal_pipeline::measure::add_carbon(&mut w, c)?;
                }
                if let Some((b, c)) = &break_even_inputs {
                    frugal_pipeline::measure::add_break_even(&mut w, b, c)?;
                }
                return emit(json, &w, |w| {
                    let how = if w.runs.iter().all(|r| r.measured) {
                        "measured"
                    } else {
                        "estimated"
                    };
                    println!(
                        "{} ({}): {} queries × {} runs after {} warm-up; a query is {}",
                        w.model,
                        w.kind,
                        w.queries,
                        w.runs.len(),
                        w.warmup,
                        w.query
                    );
                    println!(
                        "  {:.4} J per {} (95 % CI {:.4}–{:.4}), {:.4} Wh per 1,000 queries ({:.4}–{:.4}), {how}",
                        w.joules_per_unit.mean, w.unit, w.joules_per_unit.ci95.0, w.joules_per_unit.ci95.1,
                        w.wh_per_1k_queries.mean, w.wh_per_1k_queries.ci95.0, w.wh_per_1k_queries.ci95.1
                    );
                    println!(
                        "  {:.1} queries/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; peak RSS {:.0} MiB",
                        w.queries_per_second.mean, w.latency_ms.p50, w.latency_ms.p90, w.latency_ms.p99,
                        w.peak_rss_bytes as f64 / 1048576.0
                    );
                    if let Some(sci) = w.per_1k_queries["sci_gco2e"].as_f64() {
                        println!(
                            "  SCI {sci:.6} gCO2e per 1,000 queries (embodied {:.6} g of it: {})",
                            w.per_1k_queries["sci"]["embodied_g_per_1k"]
                                .as_f64()
                                .unwrap_or(f64::NAN),
                            w.per_1k_queries["sci"]["embodied_source"]
                                .as_str()
                                .unwrap_or("")
                        );
                    }
                    if let Some(g) = w.per_1k_queries["gco2e"].as_f64() {
                        println!(
                            "  {g:.6} gCO2e per 1,000 queries in {} at PUE {pue}",
                            w.per_1k_queries["region"]
                        );
                    }
                    if let Some(b) = &w.break_even {
                        println!(
                            "  compression {:.1} J, saving {:.3e} J per query: {}",
                            b["compression_joules"].as_f64().unwrap_or(f64::NAN),
                            b["saving_joules_per_query"].as_f64().unwrap_or(f64::NAN),
                            b["queries"].as_f64().map_or("never pays back".into(), |q| {
                                format!("pays back after {q:.3e} queries")
                            })
                        );
                    }
                });
            }
            if break_even_inputs.is_some() {
                return Err(BadUsage(
                    "--baseline and --cost go with a MODEL's workload, not with -- COMMAND".into(),
                )
                .into());
            }
            if command.is_empty() {
                return Err(BadUsage(
                    "frugal measure MODEL, or frugal measure -- COMMAND [ARGS…]".into(),
                )
                .into());
            }
            let (out, record, status) =
                frugal_pipeline::measure::measure_command(&frugal_pipeline::measure::CommandJob {
                    command,
                    meters: opts,
                    carbon,
                    queries,
                    training_type,
                    flops,
                    stdout_to_stderr: json,
                })?;
            if let Some(dir) = &export {
                frugal_pipeline::measure::write_exports(dir, &record)?;
            }
            let r = &out.energy;
            emit(json, &out, |_| {
                println!(
                    "{} s, {:.3} J ({:.6} Wh), {}",
                    format_args!("{:.3}", r.seconds),
                    r.joules(),
                    r.joules() / 3600.0,
                    if r.all_measured() {
                        "measured"
                    } else {
                        "estimated"
                    }
                );
                for s in &r.sources {
                    let how = match &s.provenance {
                        frugal_energy::Provenance::Measured { counter } => {
                            format!("measured by {counter}")
                        }
                        frugal_energy::Provenance::Estimated { model, constants } => format!(
                            "estimated: {model}; {}",
                            constants
                                .iter()
                                .map(|(k, v)| format!("{k} = {v:.4}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    println!(
                        "  {:14} {:12.3} J ± {:.0} %  {how}",
                        s.source,
                        s.joules,
                        100.0 * s.uncertainty
                    );
                }
                if let Some(c) = out.carbon.as_ref().and_then(|c| c.as_object()) {
                    println!(
                        "  {:.6} gCO2e operational at PUE {pue} in {} ({} g/kWh, {}; {})",
                        c["operational_g"].as_f64().unwrap_or(f64::NAN),
                        c["grid"]["country"].as_str().unwrap_or("?"),
                        c["grid"]["g_per_kwh"],
                        c["grid"]["year"],
                        if r.all_measured() {
                            "measured energy"
                        } else {
                            "estimated energy"
                        }
                    );
                }
            })?;
            if !status.success() {
                use std::os::unix::process::ExitStatusExt;
                // The child's own code; killed by signal N (forwarded from Frugal or not):
                // 128 + N, as a shell reports it.
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .map_or(1, |c| u8::try_from(c).unwrap_or(1));
                return Err(ChildExit {
                    code,
                    status: status.to_string(),
                }
                .into());
            }
        }
        Command::Tune {
            input,
            output,
            max_kld,
            max_ppl_increase_pct,
            max_accuracy_drop_pt,
            policy,
            data,
            seed,
            ty,
            calib,
            calib_tokens,
            calib_ctx,
            search,
            heldout,
            eval_chunks,
            bpw_tolerance,
            max_evals,
            objective,
            no_energy,
            reference_cache_mib,
            json,
        } => {
            use frugal_pipeline::tune::{Objective, QualityLimit};
            let objective = match objective.as_str() {
                "size" => Objective::Size,
                "energy" => Objective::Energy,
                o => return Err(BadUsage(format!("--objective {o}: size or energy")).into()),
            };
            if let Some(data) = data {
                if objective == Objective::Energy {
                    return Err(BadUsage(
                        "--objective energy is for GGUF language models: the classifier workload multiplies decoded f32 weights, so every plan costs the same energy".into(),
                    )
                    .into());
                }
                let limit = match (max_kld, max_ppl_increase_pct, max_accuracy_drop_pt, &policy) {
                    (None, None, Some(d), None) => d,
                    (None, None, None, Some(p)) => {
                        let p = frugal_report::policy::Policy::load(p)
                            .map_err(|e| BadUsage(e.to_string()))?;
                        p.number("max_accuracy_drop_pt")
                            .ok_or_else(|| {
                                BadUsage(format!(
                                    "{}: no max_accuracy_drop_pt clause to tune a classifier for",
                                    p.path
                                ))
                            })?
                    }
                    _ => {
                        return Err(BadUsage(
                            "a classifier (--data) is tuned for --max-accuracy-drop-pt or a --policy with that clause".into(),
                        )
                        .into())
                    }
                };
                let job = frugal_pipeline::tune_classifier::ClassifierTuneJob {
                    input,
                    output,
                    data,
                    max_drop_pt: limit,
                    seed,
                    max_evals,
                };
                let bar = progress_bar("");
                let r = frugal_pipeline::tune_classifier::tune_classifier(&job, &|what, d, t| {
                    show_stage(&bar, what, d, t)
                })?;
                bar.finish_and_clear();
                return emit(json, &r, |r| {
                    println!(
                        "frugal tune: {} → {} ({}, accuracy drop ≤ {} points)",
                        r.input, r.output, r.data, r.max_accuracy_drop_pt
                    );
                    println!(
                        "  {:>3} {:>10} {:>12} {:>12}  plan",
                        "#", "bytes", "search pt", "held-out pt"
                    );
                    for (k, c) in r.candidates.iter().enumerate() {
                        println!(
                            "  {k:>3} {:>10} {:>12.2} {:>12}  {}{}",
                            c.file_bytes,
                            c.search.accuracy_drop_pt,
                            c.heldout
                                .map_or("-".into(), |h| format!("{:.2}", h.accuracy_drop_pt)),
                            c.plan
                                .iter()
                                .map(|(t, s)| format!("{t}={s}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            if k == r.chosen { "  (chosen)" } else { "" }
                        );
                    }
                    println!(
                        "  input {:.2} % / {:.2} % (search / held-out, {} / {} images); {} of {} bytes ({:.2}×) in {:.1} s",
                        r.reference_search_pct, r.reference_heldout_pct, r.n_search, r.n_heldout,
                        r.output_bytes, r.input_bytes,
                        r.input_bytes as f64 / r.output_bytes.max(1) as f64, r.seconds
                    );
                    println!("  plan     {}", r.plan_file);
                });
            }
            let (Some(calib), Some(search), Some(heldout)) = (calib, search, heldout) else {
                return Err(BadUsage(
                    "a language model is tuned with --calib, --eval and --heldout".into(),
                )
                .into());
            };
            let limit = match (max_kld, max_ppl_increase_pct, &policy) {
                (Some(x), None, None) => QualityLimit::MaxKld(x),
                (None, Some(x), None) => QualityLimit::MaxPplIncreasePct(x),
                (None, None, Some(p)) => {
                    let p = frugal_report::policy::Policy::load(p)
                        .map_err(|e| BadUsage(e.to_string()))?;
                    QualityLimit::from_policy(&p).ok_or_else(|| {
                        BadUsage(format!(
                            "{}: no max_kld or max_ppl_increase_pct clause to tune for",
                            p.path
                        ))
                    })?
                }
                _ => {
                    return Err(BadUsage(
                        "give one limit: --max-kld, --max-ppl-increase-pct or --policy".into(),
                    )
                    .into())
                }
            };
            let spec = |text: PathBuf| frugal_pipeline::quantize::EvalSpec {
                text,
                ctx: 512,
                chunks: Some(eval_chunks),
            };
            let job = frugal_pipeline::tune::TuneJob {
                input,
                output,
                limit,
                target: ty,
                calib: frugal_pipeline::quantize::CalibSpec {
                    text: calib,
                    ctx: calib_ctx,
                    max_tokens: calib_tokens,
                },
                search: spec(search),
                heldout: spec(heldout),
                bpw_tolerance,
                max_evals,
                objective,
                measure_energy: !no_energy,
                reference_cache_bytes: reference_cache_mib.saturating_mul(1 << 20),
            };
            let bar = progress_bar("");
            let report = frugal_pipeline::tune::tune(&job, &|what, done, total| {
                show_stage(&bar, what, done, total)
            })?;
            bar.finish_and_clear();
            let html = frugal_pipeline::tune::report_path(&job.output);
            emit(json, &report, |r| {
                println!("frugal tune: {} → {}", r.input, r.output);
                println!(
                    "  {:>3} {:>9} {:>6} {:>10} {:>10} {:>11} {:>16}",
                    "#", "MiB", "bpw", "search", "held-out", "kernel µs", "J/token (95 %)"
                );
                for (k, c) in r.candidates.iter().enumerate() {
                    let v = |j: &frugal_pipeline::tune::Judged| match r.limit {
                        QualityLimit::MaxKld(_) => j.kld,
                        QualityLimit::MaxPplIncreasePct(_) => j.ppl_increase_pct,
                    };
                    println!(
                        "  {k:>3} {:>9.2} {:>6.3} {:>10.5} {:>10} {:>11} {:>16}  {}",
                        c.bytes as f64 / 1048576.0,
                        c.bits_per_weight,
                        v(&c.search),
                        c.heldout
                            .as_ref()
                            .map_or("-".into(), |h| format!("{:.5}", v(h))),
                        if c.kernel_us_per_token > 0.0 {
                            format!("{:.0}", c.kernel_us_per_token)
                        } else {
                            "-".into()
                        },
                        c.energy.as_ref().map_or("-".into(), |e| format!(
                            "{:.3} ± {:.3}",
                            e.joules_per_token.mean,
                            0.5 * (e.joules_per_token.ci95.1 - e.joules_per_token.ci95.0)
                        )),
                        if k == r.chosen {
                            "chosen"
                        } else if c.meets_search {
                            "meets"
                        } else {
                            "misses"
                        }
                    );
                }
                println!(
                    "  limit    {:?}, objective {:?}; {} of {} bytes ({:.2}×); {:.0} s (imatrix {:.0}, sensitivity {:.0}, pricing {:.0}, search {:.0} of which energy {:.0})",
                    r.limit,
                    r.objective,
                    r.output_bytes,
                    r.input_bytes,
                    r.input_bytes as f64 / r.output_bytes.max(1) as f64,
                    r.seconds.total,
                    r.seconds.imatrix,
                    r.seconds.sensitivity,
                    r.seconds.pricing,
                    r.seconds.search,
                    r.seconds.energy
                );
                if let Some(w) = &r.energy_workload {
                    let e = r.candidates[r.chosen].energy.as_ref();
                    println!(
                        "  energy   {w}; {}",
                        e.map_or(String::new(), |e| format!(
                            "{} ({})",
                            if e.measured { "measured" } else { "estimated" },
                            e.provenance
                        ))
                    );
                }
                println!("  recipe   {}", r.recipe);
                println!("  report   {}", html.display());
            })?;
        }
        Command::Run {
            recipe,
            out,
            seed,
            force,
            json,
        } => {
            if let Some(recipe) = recipe {
                let bar = progress_bar("");
                let (report, path) = frugal_pipeline::recipe::run_recipe(
                    &recipe,
                    &out,
                    &frugal_pipeline::recipe::RecipeRunOptions { force },
                    &|what, done, total| show_stage(&bar, what, done, total),
                )?;
                bar.finish_and_clear();
                emit(json, &report, |r| {
                    println!("frugal run: {} ({})", r.recipe, r.recipe_file);
                    println!("  model    {}", r.model);
                    for s in &r.steps {
                        let q = s
                            .result
                            .get("quality")
                            .filter(|q| !q.is_null())
                            .unwrap_or(&s.result);
                        let kld = q.pointer("/kld/mean").and_then(|v| v.as_f64());
                        let ppl = q.pointer("/ppl/value").and_then(|v| v.as_f64());
                        println!(
                            "  {:>2} {:9} {:>8.1} s{}  {}{}{}",
                            s.index,
                            s.kind,
                            s.seconds,
                            if s.resumed {
                                " (kept from the last run)"
                            } else {
                                ""
                            },
                            s.output.as_deref().unwrap_or("-"),
                            kld.map_or(String::new(), |k| format!("  KLD {k:.5}")),
                            ppl.map_or(String::new(), |p| format!("  PPL {p:.3}")),
                        );
                    }
                    println!("  total    {:.1} s", r.seconds);
                    println!("  report   {}", path.display());
                })?;
                // A failed check step is the run's verdict: exit 1, as `frugal check` does.
                let failed = report.failed_checks();
                if let Some((i, policy, keys)) = failed.first() {
                    anyhow::bail!("step {i}: policy {policy} fails: {}", keys.join(", "));
                }
                return Ok(());
            }
            let opts = frugal_pipeline::RunOptions {
                out_dir: out,
                seed,
                force,
                ..Default::default()
            };
            let bar = progress_bar("");
            let (report, path) = frugal_pipeline::run(&opts, &|step, done, total, loss| {
                show_stage(&bar, step, done, total);
                bar.set_message(format!("{step} loss {loss:.4}"));
            })?;
            bar.finish_and_clear();
            emit(json, &report, |report| {
                let d = &report.data;
                println!("frugal run: {} (embedded default)", report.recipe);
                println!(
                    "  data     {} — {} images {}×{}, {} classes",
                    d.dataset, d.n_images, d.image_shape[0], d.image_shape[1], d.n_classes
                );
                println!(
                    "  split    {} train / {} test (stratified, seed {})",
                    d.n_train, d.n_test, d.seed
                );
                println!(
                    "  {:18} {:>9} {:>9} {:>10} {:>18} {:>8} {:>14}",
                    "model",
                    "KiB",
                    "weights",
                    "nonzero %",
                    "test accuracy %",
                    "s",
                    "mWh/1k queries"
                );
                for (m, e) in report.classifier.models.iter().zip(&report.measure) {
                    println!(
                        "  {:18} {:>9.1} {:>9} {:>10.1} {:>7.2} [{:.1}, {:.1}] {:>8.2} {:>10.3}{}",
                        m.name,
                        m.file_bytes as f64 / 1024.0,
                        m.weights,
                        100.0 * m.nonzero_weights as f64 / m.weights.max(1) as f64,
                        m.eval.accuracy_pct,
                        m.eval.ci95_pct.0,
                        m.eval.ci95_pct.1,
                        m.seconds,
                        1e3 * e.wh_per_1k_queries.mean,
                        if e.measured { "" } else { " est." }
                    );
                }
                println!(
                    "  energy   {}",
                    report.measure.first().map_or("-", |e| e.method.as_str())
                );
                println!("  total    {:.1} s", report.seconds);
                for b in &report.break_even {
                    println!(
                        "  pays back {:18} {:>9.1} J to make, {}",
                        b.model,
                        b.compression_joules,
                        b.break_even_queries
                            .map_or("never (no saving per query)".into(), |q| {
                                format!("after {q:.3e} queries")
                            })
                    );
                }
                for c in &report.check {
                    let failed: Vec<&str> = c
                        .outcomes
                        .iter()
                        .filter(|o| !o.pass)
                        .map(|o| o.key)
                        .collect();
                    println!(
                        "  policy   {:18} {}{}",
                        c.model,
                        if c.pass { "pass" } else { "FAIL" },
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", failed.join(", "))
                        }
                    );
                }
                println!(
                    "  report   {} (and report.md, report.html beside it)",
                    path.display()
                );
            })?;
        }
    }
    Ok(())
}

/// Whether `path` is a Frugal CNN classifier (safetensors with its config in the metadata).
fn is_cnn_file(path: &std::path::Path) -> bool {
    path.is_file()
        && frugal_formats::safetensors::SafetensorsFile::open(path).is_ok_and(|f| {
            f.header
                .metadata
                .contains_key(frugal_models::cnn::CONFIG_KEY)
        })
}
