//! `frugal eval`: evaluate a model against its reference.

use super::*;

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
    #[arg(long)]
    pub data: Option<String>,
    /// Classifiers on `digits`: the seed of the split (as given to `frugal run`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::eval_ctx)]
    pub ctx: usize,
    /// At most this many chunks.
    #[arg(long, value_parser = frugal_pipeline::checks::parse::count)]
    pub chunks: Option<usize>,
    /// Exact f32 activations. By default each layer's input is rounded as llama.cpp's
    /// kernels round it for that weight type (8-bit blocks for quantized weights), so numbers
    /// compare one to one with llama.cpp's.
    #[arg(long)]
    pub f32_activations: bool,
    /// Use candle's quantized kernels instead of decoding weights to f32 (slow on CPU).
    #[arg(long, conflicts_with = "f32_activations")]
    pub quantized_kernels: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
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
                let idx = frugal_pipeline::stratified_split(&d.labels, d.n_classes, 0.2, seed);
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
        let r =
            frugal_eval::encoder::eval_encoder_dirs(&model, reference.as_deref(), &brown, data)?;
        emit(json, &r, |r| {
            print!("{}", r.to_text());
        })?;
        return Ok(());
    }
    let text = text.ok_or_else(|| anyhow::anyhow!("--text is required for language models"))?;
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
    Ok(())
}
