//! `frugal distill`: train or distil an image classifier, or distil a language model.

use super::*;
use frugal_compress::distill::TrainOptions;
use frugal_compress::lm_distill::LmDistillOptions;
use frugal_pipeline::classifier::Arch;
use frugal_pipeline::data::Dataset;
use frugal_pipeline::jobs::distill::{Distill, Student};

use frugal_pipeline::steps::CalibSpec;

#[derive(clap::Args)]
pub struct Args {
    /// Classifiers: `fashion-mnist` or `digits`.
    #[arg(long, required_unless_present = "student", value_parser = names::dataset)]
    pub data: Option<Dataset>,
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
    #[arg(long, default_value_t = 256, value_parser = parse::seq_ctx)]
    pub ctx: usize,
    /// Language models: at most this many training tokens (whole sequences).
    #[arg(long, default_value_t = 16384, value_parser = parse::count)]
    pub max_tokens: usize,
    /// Language models: teacher tokens cached per position.
    #[arg(long, default_value_t = LmDistillOptions::default().top_k, value_parser = parse::count)]
    pub top_k: usize,
    /// Language models: sequences per optimizer step, their gradients averaged (under
    /// mpirun the ranks share each step's sequences: data-parallel).
    #[arg(long, default_value_t = LmDistillOptions::default().batch, value_parser = parse::count)]
    pub seq_batch: usize,
    /// Language models: the evaluation of the output against the teacher.
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Teacher model; without it, the network learns from labels alone. Classifiers: repeat it
    /// to distil from an ensemble (the mean of the teachers' logits).
    #[arg(long)]
    pub teacher: Vec<PathBuf>,
    /// `teacher` (conv 32-64, fc 128) or `student` (conv 8-16, fc 32).
    #[arg(long, default_value_t = Arch::default(), value_parser = names::arch)]
    pub arch: Arch,
    /// Epochs (classifiers 3, language models 1).
    #[arg(long, value_parser = parse::count)]
    pub epochs: Option<usize>,
    /// Classifiers: images per step (default 128).
    #[arg(long, value_parser = parse::count)]
    pub batch: Option<usize>,
    /// Peak learning rate, after a linear warm-up, then cosine to zero (classifiers at batch
    /// 128: 1.2e-2 for the teacher, 2.4e-2 for the student; language models 5e-5).
    #[arg(long, value_parser = parse::lr)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay (classifiers 1e-4, language models 0).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Distillation temperature T (classifiers; language models use 1).
    #[arg(long, default_value_t = TrainOptions::default().temperature)]
    pub temperature: f64,
    /// Weight of the teacher's soft targets (classifiers 0.7, language models 0.9).
    #[arg(long, value_parser = parse::alpha)]
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
    /// Language models: the memory budget.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let student = match (&a.student, &a.text, a.data) {
        (Some(student), Some(text), _) => lm_student(&a, student.clone(), text.clone())?,
        (_, _, Some(data)) => classifier_student(&a, data),
        _ => {
            return Err(BadUsage(
                "--data fashion-mnist|digits (or --student for a language model)".into(),
            )
            .into())
        }
    };
    let job = Distill {
        out: a.out,
        teachers: a.teacher,
        resume: a.resume,
        student,
    };
    execute(&job, a.json).map(drop)
}

fn lm_student(a: &Args, student: PathBuf, text: PathBuf) -> Result<Student> {
    if a.mixup
        || a.shift > 0
        || a.flip
        || a.nckd_weight.is_some()
        || a.attention_weight.is_some()
        || a.attention_decay
    {
        return Err(BadUsage(
            "--mixup, --shift, --flip, --nckd-weight, --attention-weight and \
             --attention-decay are for classifiers"
                .into(),
        )
        .into());
    }
    let d = LmDistillOptions::default();
    Ok(Student::LanguageModel {
        student,
        text: CalibSpec {
            text,
            ctx: a.ctx,
            max_tokens: a.max_tokens,
            label: None,
        },
        opts: LmDistillOptions {
            epochs: a.epochs.unwrap_or(d.epochs),
            top_k: a.top_k,
            lr: a.lr.unwrap_or(d.lr),
            weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
            alpha: a.alpha.unwrap_or(d.alpha),
            seed: a.seed,
            batch: a.seq_batch,
            ..d
        },
        eval: a.eval.text(),
        eval_chunks: a.eval.eval_chunks,
        max_memory: a.memory.max_memory,
    })
}

fn classifier_student(a: &Args, data: Dataset) -> Student {
    let d = a.arch.train_defaults();
    Student::Classifier {
        data,
        arch: a.arch,
        opts: TrainOptions {
            epochs: a.epochs.unwrap_or(d.epochs),
            batch: a.batch.unwrap_or(d.batch),
            lr: a.lr.unwrap_or(d.lr),
            weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
            alpha: a.alpha.unwrap_or(d.alpha),
            seed: a.seed,
            temperature: a.temperature,
            mixup: a.mixup,
            shift: a.shift,
            flip: a.flip,
            nckd_weight: a.nckd_weight,
            attention_weight: a.attention_weight,
            attention_decay: a.attention_decay,
            ..d
        },
    }
}
