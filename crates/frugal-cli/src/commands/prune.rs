//! `frugal prune`: unstructured, N:M or structured pruning of a GGUF model or a CNN.

use super::*;

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
    pub structure: Option<StructureArg>,
    /// CNN only: `fashion-mnist` or `digits`, for recovery and evaluation.
    #[arg(long)]
    pub data: Option<String>,
    /// CNN only: epochs of distillation from the unpruned model, mask held (0: none).
    #[arg(long, default_value_t = 3)]
    pub recover_epochs: usize,
    /// CNN only: peak learning rate of the recovery.
    #[arg(long, default_value_t = 1e-3)]
    pub recover_lr: f64,
    /// CNN only: seed of the recovery's shuffles (and of the digits split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CNN only: `sparse` stores the pruned weights as values plus a bitmask (or N:M
    /// positions for an N:M pattern), decoded exactly on load; `dense` as plain F32.
    #[arg(long, value_enum, default_value = "sparse")]
    pub storage: StorageArg,
    #[arg(long, value_enum, default_value = "sparsegpt")]
    pub method: PruneMethodArg,
    /// Fraction of each weight set to zero (unstructured; N:M implies 1 − N/M).
    #[arg(long, default_value_t = 0.5, value_parser = frugal_pipeline::checks::parse::sparsity)]
    pub sparsity: f64,
    /// `unstructured`, or N:M such as `2:4` (keep N of every M consecutive inputs).
    #[arg(long, default_value = "unstructured")]
    pub pattern: frugal_compress::prune::Pattern,
    /// Calibration text (Wanda and SparseGPT need it).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// At most this many calibration tokens (whole chunks).
    #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
    pub calib_tokens: usize,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
    pub calib_ctx: usize,
    /// SparseGPT dampening, a fraction of the mean diagonal of XᵀX.
    #[arg(long, default_value_t = 0.01, value_parser = frugal_pipeline::checks::parse::damp)]
    pub damp: f64,
    /// Text to evaluate the output on (default: Brown cj01–cj12 from the fetched corpus).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Chunks of 512 tokens to evaluate.
    #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
    pub eval_chunks: usize,
    /// Skip the evaluation.
    #[arg(long)]
    pub no_eval: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
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
                        "--structure channels removes whole channels; it takes no --pattern".into(),
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
        let step = frugal_pipeline::classifier::prune_classifier(&job, &|e, b, n, loss| {
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
        return Err(
            BadUsage("Wanda and SparseGPT need calibration text: --calib FILE".into()).into(),
        );
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
            return Err(
                BadUsage("--structure removes whole units; it takes no --pattern".into()).into(),
            );
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
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StructureArg {
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
pub enum PruneMethodArg {
    Magnitude,
    Wanda,
    Sparsegpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageArg {
    Sparse,
    Dense,
}
