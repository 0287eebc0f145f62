//! `frugal distill`: an image classifier trained (from labels, or distilled from one teacher
//! or an ensemble), or a language model's student distilled from its teacher's top-k
//! log-probabilities.

use super::{mib, opt_input, scratch, EvalText, Job, Progress, ToText};
use crate::classifier::{Arch, DistillJob, DistillStep};
use crate::data::Dataset;
use crate::steps::{self, CalibSpec, EvalSpec, LmDistillJob, LmDistillStep};
use crate::Error;
use frugal_compress::distill::TrainOptions;
use frugal_compress::lm_distill::LmDistillOptions;
use frugal_formats::guard::{Expect, IoPlan};
use serde::Serialize;
use std::path::PathBuf;

/// What to train.
#[derive(Debug, Clone)]
pub struct Distill {
    /// The model written (a checkpoint beside it after every epoch).
    pub out: PathBuf,
    /// The teachers (a language model: exactly one; none: a classifier learns from labels).
    pub teachers: Vec<PathBuf>,
    /// Continue from the checkpoint (same settings required).
    pub resume: bool,
    pub student: Student,
}

/// The student and the settings of its kind.
#[derive(Debug, Clone)]
pub enum Student {
    /// A GGUF student trained on `text` (its MLP weights).
    LanguageModel {
        student: PathBuf,
        text: CalibSpec,
        opts: LmDistillOptions,
        eval: EvalText,
        eval_chunks: usize,
        /// The memory budget (`--max-memory`; default what the machine has).
        max_memory: Option<u64>,
    },
    /// A CNN trained on a data set.
    Classifier {
        data: Dataset,
        arch: Arch,
        opts: TrainOptions,
    },
}

impl Student {
    /// A classifier of `arch` on `data`, its training settings the defaults for that network.
    pub fn classifier(data: Dataset, arch: Arch) -> Student {
        Student::Classifier {
            data,
            arch,
            opts: arch.train_defaults(),
        }
    }

    /// A language-model student on `text`, every setting its default.
    pub fn language_model(student: PathBuf, text: PathBuf) -> Student {
        Student::LanguageModel {
            student,
            text: CalibSpec {
                text,
                ctx: 256,
                max_tokens: 16384,
                label: None,
            },
            opts: LmDistillOptions::default(),
            eval: EvalText::default(),
            eval_chunks: EvalSpec::DEFAULT_CHUNKS,
            max_memory: None,
        }
    }
}

/// What `frugal distill` did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DistillOutcome {
    LanguageModel(LmDistillStep),
    Classifier(DistillStep),
}

impl Job for Distill {
    type Report = DistillOutcome;
    const KIND: &'static str = "distill";
    const METERED: bool = true;

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        if let Student::LanguageModel {
            student,
            text,
            eval,
            ..
        } = &self.student
        {
            // Language models: a GGUF or a checkpoint folder (seen as the GGUF it converts to).
            p.add_input("--student", student, Expect::FileOrDir);
            for t in &self.teachers {
                p.add_input("--teacher", t, Expect::FileOrDir);
            }
            p.input("--text", &text.text);
            opt_input(&mut p, "--eval-text", eval.file());
        } else {
            for t in &self.teachers {
                p.input("--teacher", t);
            }
        }
        p.output("--out", &self.out)
            .output("the checkpoint", steps::checkpoint_path(&self.out));
        p
    }

    fn run(&self, progress: Progress) -> Result<DistillOutcome, Error> {
        match &self.student {
            Student::LanguageModel {
                student,
                text,
                opts,
                eval,
                eval_chunks,
                max_memory,
            } => {
                let [teacher] = &self.teachers[..] else {
                    return Err(Error::Usage(
                        "a language model distils from one --teacher (an ensemble is for classifiers)".into(),
                    ));
                };
                let tmp = scratch()?;
                let spec = eval.spec(*eval_chunks, tmp.path())?;
                let job = LmDistillJob {
                    student: student.clone(),
                    teacher: teacher.clone(),
                    text: text.clone(),
                    out: self.out.clone(),
                    opts: opts.clone(),
                    resume: self.resume,
                    discard_stale: false,
                    max_memory: *max_memory,
                };
                Ok(DistillOutcome::LanguageModel(steps::lm_distill_step(
                    &job,
                    spec.as_ref(),
                    progress,
                )?))
            }
            Student::Classifier { data, arch, opts } => {
                let job = DistillJob {
                    data: *data,
                    arch: *arch,
                    teachers: self.teachers.clone(),
                    out: self.out.clone(),
                    opts: opts.clone(),
                    resume: self.resume,
                };
                Ok(DistillOutcome::Classifier(classifier(&job, progress)?))
            }
        }
    }
}

/// Trains a classifier, its progress in samples per second of this process's batches (a
/// resumed run starts counting where it resumes).
fn classifier(job: &DistillJob, progress: Progress) -> Result<DistillStep, Error> {
    let start = std::cell::Cell::new(None::<(std::time::Instant, usize)>);
    crate::classifier::distill_classifier(job, &|e, b, n, loss| {
        let pos = (e - 1) * n + b;
        let (t0, p0) = start.get().unwrap_or_else(|| {
            let s = (std::time::Instant::now(), pos);
            start.set(Some(s));
            s
        });
        let rate = (pos - p0) as f64 * job.opts.batch as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        progress(
            &format!("epoch {e}, loss {loss:.4}, {rate:.0} samples/s"),
            pos,
            n * job.opts.epochs,
        );
    })
}

impl ToText for DistillOutcome {
    fn to_text(&self) -> String {
        match self {
            DistillOutcome::LanguageModel(s) => lm_text(s),
            DistillOutcome::Classifier(s) => classifier_text(s),
        }
    }
}

fn lm_text(s: &LmDistillStep) -> String {
    let tail = &s.steps[s.steps.len().saturating_sub(8)..];
    let last = tail.iter().map(|r| r.kl_top_k).sum::<f64>() / tail.len().max(1) as f64;
    let mut t = format!(
        "distilled {} from {} on {} tokens ({} sequences, {} epochs): teacher cache {:.1} MiB in {:.1} s, training {:.1} s ({:.0} tokens/s); top-k KL first {:.4}, last {:.4}\n",
        s.student,
        s.teacher,
        s.tokens,
        s.sequences,
        s.opts.epochs,
        mib(s.teacher_cache_bytes as u64),
        s.teacher_seconds,
        s.train_seconds,
        s.tokens_per_second,
        s.steps.first().map_or(f64::NAN, |r| r.kl_top_k),
        last
    );
    t += &format!("wrote {}\n", s.out);
    if let Some(e) = &s.quality {
        t += &format!("quality against the teacher:\n{}", e.to_text());
    }
    t
}

fn classifier_text(s: &DistillStep) -> String {
    let mut t = String::new();
    for e in &s.epochs {
        t += &format!(
            "epoch {:>3}  loss {:.4}  {:>8.0} samples/s  {:.1} s\n",
            e.epoch, e.loss, e.samples_per_second, e.seconds
        );
    }
    t += &format!(
        "wrote {} ({} on {}, {}), test accuracy {:.2} % (95 % CI {:.2}–{:.2} %) in {:.1} s\n",
        s.out,
        s.arch,
        s.data,
        match &s.teacher_eval {
            None => "labels".to_string(),
            Some(te) => format!(
                "distilled from {} ({:.2} %)",
                s.teachers.join(" + "),
                te.accuracy_pct
            ),
        },
        s.eval.accuracy_pct,
        s.eval.ci95_pct.0,
        s.eval.ci95_pct.1,
        s.seconds
    );
    t
}
