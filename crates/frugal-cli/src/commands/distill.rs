//! `frugal distill`: train or distil an image classifier, or distil a language model.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// Classifiers: `fashion-mnist` or `digits`.
    #[arg(long, required_unless_present = "student")]
    pub data: Option<String>,
    /// The model to write (.safetensors for a classifier, .gguf for a language model).
    #[arg(long)]
    pub out: PathBuf,
    /// Language models: the student GGUF (e.g. a pruned model) to distil from `--teacher`
    /// on `--text`; its MLP weights are trained, on the teacher's cached top-k log-probs.
    #[arg(long, requires_all = ["teacher", "text"])]
    pub student: Option<PathBuf>,
    /// Language models: training text.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Language models: tokens per training sequence.
    #[arg(long, default_value_t = 256, value_parser = frugal_pipeline::checks::parse::seq_ctx)]
    pub ctx: usize,
    /// Language models: at most this many training tokens (whole sequences).
    #[arg(long, default_value_t = 16384, value_parser = frugal_pipeline::checks::parse::count)]
    pub max_tokens: usize,
    /// Language models: teacher tokens cached per position.
    #[arg(long, default_value_t = 64, value_parser = frugal_pipeline::checks::parse::count)]
    pub top_k: usize,
    /// Language models: sequences per optimizer step, their gradients averaged (under
    /// mpirun the ranks share each step's sequences: data-parallel).
    #[arg(long, default_value_t = 1, value_parser = frugal_pipeline::checks::parse::count)]
    pub seq_batch: usize,
    /// Language models: text to evaluate the output against the teacher on (default: Brown
    /// cj01–cj12).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Language models: chunks of 512 tokens to evaluate.
    #[arg(long, default_value_t = 8, value_parser = frugal_pipeline::checks::parse::count)]
    pub eval_chunks: usize,
    /// Language models: skip the evaluation.
    #[arg(long)]
    pub no_eval: bool,
    /// Teacher model; without it, the network learns from labels alone. Classifiers: repeat it
    /// to distil from an ensemble (the mean of the teachers' logits).
    #[arg(long)]
    pub teacher: Vec<PathBuf>,
    /// `teacher` (conv 32-64, fc 128) or `student` (conv 8-16, fc 32).
    #[arg(long, default_value = "student")]
    pub arch: String,
    /// Epochs (classifiers 3, language models 1).
    #[arg(long, value_parser = frugal_pipeline::checks::parse::count)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 128, value_parser = frugal_pipeline::checks::parse::count)]
    pub batch: usize,
    /// Peak learning rate, after a linear warm-up, then cosine to zero (classifiers at batch
    /// 128: 1.2e-2 for the teacher, 2.4e-2 for the student; language models 5e-5).
    #[arg(long, value_parser = frugal_pipeline::checks::parse::lr)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay (classifiers 1e-4, language models 0).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Distillation temperature T (classifiers; language models use 1).
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight of the teacher's soft targets (classifiers 0.7, language models 0.9).
    #[arg(long, value_parser = frugal_pipeline::checks::parse::alpha)]
    pub alpha: Option<f64>,
    /// Seed of the initialisation and the shuffles (and of the digits split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from `OUT.checkpoint` (same settings required).
    #[arg(long)]
    pub resume: bool,
    /// Classifiers: mixup — each image blended with another of its batch (λ ~ U(0, 1)),
    /// hard targets blended alike, the teacher labelling the blended image.
    #[arg(long)]
    pub mixup: bool,
    /// Classifiers: move every training image by up to this many pixels per step (fresh
    /// draws; the teacher labels the moved image).
    #[arg(long, default_value_t = 0)]
    pub shift: usize,
    /// Classifiers: mirror half the training images per step (Fashion-MNIST, not digits).
    #[arg(long)]
    pub flip: bool,
    /// Classifiers: decoupled distillation (Zhao et al. 2022) — the soft term becomes
    /// TCKD + β·NCKD with this β (8 in the paper) instead of Hinton's KL.
    #[arg(long)]
    pub nckd_weight: Option<f64>,
    /// Classifiers: attention transfer (Zagoruyko & Komodakis 2017) with this weight β:
    /// the student matches the teacher's spatial attention after every conv block. The term
    /// is a mean over pixels, so small maps need a small β: 1000 (the paper's) suits
    /// Fashion-MNIST, digits' 8×8 images about 10 (BENCHMARKS.md).
    #[arg(long)]
    pub attention_weight: Option<f64>,
    /// Classifiers: the attention weight falls linearly to 0 over the run.
    #[arg(long)]
    pub attention_decay: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
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
        let rate = (pos - p0) as f64 * job.opts.batch as f64 / t0.elapsed().as_secs_f64().max(1e-9);
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
    Ok(())
}
