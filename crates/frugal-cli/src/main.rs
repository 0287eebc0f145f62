//! The `frugal` command: parses arguments, calls one library function per subcommand, and turns
//! errors into exit codes in one place (0 success, 1 failure, 2 bad input or usage, 130 Ctrl-C;
//! `frugal measure -- CMD` exits with the command's code, 128 + N when a signal N ended it).

mod commands;

use commands::{BadUsage, ChildExit};

use anyhow::Result;
use clap::{Parser, Subcommand};
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
    Inspect(commands::inspect::Args),
    /// Evaluate a model against its reference. A language model (GGUF): perplexity with
    /// llama.cpp's protocol, and KL divergence, top-1 agreement and Δp against `--reference`.
    /// A sentence encoder (a folder with model.safetensors and tokenizer.json): 1-NN genre
    /// accuracy on Brown corpus sentences and cosine similarity to `--reference`.
    Eval(commands::eval::Args),
    /// Train an image classifier, distilling from a teacher when one is given:
    /// α·T²·KL(teacher ‖ student) + (1−α)·CE, AdamW, warm-up and cosine schedule, seeded
    /// shuffles, a checkpoint after every epoch (`OUT.checkpoint`, `--resume` to continue);
    /// then the test-set accuracy. With `--student S.gguf --teacher T.gguf --text FILE`:
    /// logit distillation of a language model from the teacher's cached top-k log-probs.
    Distill(commands::distill::Args),
    /// Prune a Llama GGUF model's decoder weights (magnitude, Wanda or SparseGPT; unstructured
    /// or N:M), write them as F32, then evaluate the output against the input. A CNN classifier
    /// (.safetensors from `frugal distill`) is pruned by global magnitude over all its weights and
    /// recovered by distillation from its unpruned self on `--data`.
    Prune(commands::prune::Args),
    /// Quantize a GGUF model to a block type or one of llama.cpp's named mixes (the same file
    /// as `llama-quantize` without calibration), then evaluate the output against the input.
    Quantize(commands::quantize::Args),
    /// The smallest quantized model that keeps its quality within a limit: every tensor's
    /// sensitivity to every block type measured once, a knapsack-style assignment for a size
    /// budget, the budget bisected with each candidate judged on the search text, the result
    /// verified on held-out text. Writes OUT, OUT.recipe.toml (rebuilds it with `frugal run`)
    /// and OUT.report.html (every candidate, size against quality). For a CNN classifier
    /// (`.safetensors`, with --data and --max-accuracy-drop-pt): a per-tensor mix of int8, int4
    /// groups and F32, judged on half of the test images and verified on the other half;
    /// writes OUT, OUT.plan.toml (`frugal quantize IN OUT --type int8 --plan OUT.plan.toml`
    /// rebuilds it) and OUT.report.html.
    Tune(commands::tune::Args),
    /// Decode every tensor of a GGUF model to F32 (the reference for evaluations).
    Dequantize(commands::dequantize::Args),
    /// Measure a GGUF model's importance matrix on a text (llama-imatrix's statistic) and write
    /// it in llama.cpp's format, for `frugal quantize --imatrix` or `llama-quantize --imatrix`.
    Imatrix(commands::imatrix::Args),
    /// Convert a Hugging Face checkpoint folder to GGUF, byte for byte as llama.cpp's
    /// convert_hf_to_gguf.py writes it (BERT encoders, Llama-family decoders), streaming one
    /// tensor at a time.
    Convert(commands::convert::Args),
    /// Export a GGUF model (pruned, distilled, quantized: decoded to floating point) as a
    /// Hugging Face checkpoint folder that transformers loads, the inverse of `convert`.
    Export(commands::export::Args),
    /// Write plain text from the Brown corpus (detagged), e.g. `--files cj01-cj12`.
    BrownText(commands::brown_text::Args),
    /// Run a compression recipe; without one, the embedded default on the bundled digits data.
    Run(commands::run::Args),
    /// Check a report against a sustainability policy: every clause with the report's figure,
    /// the limit and pass/fail; exit 1 if any clause fails, 2 on a bad policy or report.
    Check(commands::check::Args),
    /// Measure the energy of a command: RAPL and NVML counters where readable, else an
    /// estimate from its CPU time (labelled as such, with its constants).
    Measure(commands::measure::Args),
}

fn main() -> ExitCode {
    // On Ctrl-C, delete unfinished outputs before exiting, so nothing partial is left behind.
    let _ = ctrlc::set_handler(|| {
        frugal_formats::output::remove_unfinished_outputs();
        eprintln!("frugal: interrupted; unfinished outputs removed");
        std::process::exit(130);
    });
    frugal_formats::output::fail_oversized_writes();
    // Every command that opens a GGUF model opens a decoder's checkpoint folder the same way.
    frugal_compress::hf::view::install();
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
    if matches!(cli.command, Command::Run(_)) && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
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
            || c.downcast_ref::<frugal_compress::hf::HfError>()
                .is_some_and(|e| e.is_bad_input())
    });
    if bad_input {
        2
    } else {
        1
    }
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
        Command::Inspect(_) => return Ok(()),
        Command::Quantize(a)
            if !a.input.is_dir()
                && !matches!(
                    frugal_formats::inspect::sniff_format(&a.input),
                    Ok(frugal_formats::inspect::ModelFormat::Safetensors)
                ) =>
        {
            return Ok(())
        }
        Command::Quantize(_) => "frugal quantize of safetensors models",
        Command::Eval(a) if a.data.is_none() && !a.model.is_dir() => return Ok(()),
        Command::Distill(_) => return Ok(()),
        Command::Eval(_) => "frugal eval of encoders and classifiers",
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
    match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Distill(a) => commands::distill::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Tune(a) => commands::tune::run(a),
        Command::Dequantize(a) => commands::dequantize::run(a),
        Command::Imatrix(a) => commands::imatrix::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::BrownText(a) => commands::brown_text::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Measure(a) => commands::measure::run(a),
    }
}
