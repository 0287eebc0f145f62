//! `frugal quantize`: GGUF block types and llama.cpp's mixes, encoder and CNN int weights.

use super::*;

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
    #[arg(long, value_enum, default_value = "llama")]
    pub fallback: FallbackArg,
    /// Override the type of tensors whose name matches REGEX (first match wins), e.g.
    /// `--tensor-type 'ffn_down=Q6_K'`. Repeatable.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<frugal_compress::quant::Override>,
    /// Assign types per tensor by measured error to reach this many bits per weight.
    #[arg(long, value_parser = frugal_pipeline::checks::parse::bpw)]
    pub target_bpw: Option<f64>,
    /// CNN classifiers: each weight's scheme from a plan (TOML `[tensors]` NAME = "int8" |
    /// "int4-g32" | "int4-g64" | "int4-g128" | "f32"), as `frugal tune` writes it; weights
    /// it does not list get --type.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Calibration text: an importance matrix (llama-imatrix's statistic) is measured on it
    /// and weights every rounding decision; GPTQ needs it. Encoders (int4): a text file, or
    /// `brown` for Brown passages disjoint from the evaluation's; int4 weights are then GPTQ'd.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// At most this many calibration tokens (whole chunks).
    #[arg(long, default_value_t = 8192, value_parser = frugal_pipeline::checks::parse::count)]
    pub calib_tokens: usize,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
    pub calib_ctx: usize,
    /// `rtn` (round to nearest, importance-weighted with --calib), `gptq`, `awq` (activation-
    /// aware channel scales folded into the norms and value/up rows, then importance-weighted
    /// rounding) or `awq-gptq` (AWQ's scales, then GPTQ). All but `rtn` need --calib.
    #[arg(long, value_enum, default_value = "rtn")]
    pub method: MethodArg,
    /// GPTQ dampening, a fraction of the mean diagonal of XᵀX.
    #[arg(long, default_value_t = 0.01, value_parser = frugal_pipeline::checks::parse::damp)]
    pub damp: f64,
    /// GPTQ: quantize input columns in their stored order (scales fitted as each block is
    /// reached) instead of by decreasing activation (scales fitted once), the default.
    #[arg(long)]
    pub no_act_order: bool,
    /// Text to evaluate the output on (default: Brown cj01–cj12 from the fetched corpus).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Chunks of 512 tokens to evaluate.
    #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
    pub eval_chunks: usize,
    /// Encoders: Brown passages of 128 tokens to evaluate on.
    #[arg(long, default_value_t = 500)]
    pub eval_passages: usize,
    /// Skip the evaluation of the output against the input.
    #[arg(long)]
    pub no_eval: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
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
        frugal_compress::quant::Method::Blockwise(frugal_compress::quant::gptq::BlockwiseOptions {
            awq,
            gptq,
        })
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
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    Rtn,
    Gptq,
    Awq,
    AwqGptq,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FallbackArg {
    Llama,
    Best,
}

pub fn parse_quant_type(s: &str) -> Result<frugal_compress::quant::Target, String> {
    frugal_compress::quant::target(s).ok_or_else(|| {
        format!(
            "unknown type `{s}` (one of: {})",
            frugal_compress::quant::target_names().join(", ")
        )
    })
}
