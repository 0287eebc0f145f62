//! The classifier pipeline of the embedded default: on a data set and its seeded split, a teacher
//! CNN trained from scratch, a small student trained on labels alone (the baseline) and one
//! distilled from the teacher, the distilled student pruned and recovered by distillation, then
//! quantized to int8 — every model saved, reloaded from its file and evaluated on the same test
//! images.

use crate::Error;
use frugal_compress::distill::{train_classifier, EpochRecord, TrainOptions};
use frugal_compress::prune::{prune_linears, Pattern, PruneOptions, PruneReport};
use frugal_eval::classifier::{eval_classifier, eval_ensemble, ClassifierEvalResult};
use frugal_formats::idx::ImageSet;
use frugal_formats::sparse::Layout;
use frugal_models::cnn::{Cnn, CnnConfig};
use serde::Serialize;
use std::path::Path;

/// Settings of the classifier pipeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClassifierPlan {
    pub teacher: CnnConfig,
    pub student: CnnConfig,
    pub train: TrainOptions,
    /// Distillation settings of the student (temperature, α; the rest as `train`).
    pub distill: TrainOptions,
    pub prune: PruneOptions,
    /// Recovery of the pruned student by distillation from the teacher.
    pub recover: TrainOptions,
}

impl ClassifierPlan {
    /// The embedded default for images of `h`×`w` with `classes` classes: the teacher is the
    /// classic conv(32)-conv(64)-fc(128) network, the student conv(8)-conv(16)-fc(32).
    pub fn default_for(h: usize, w: usize, classes: usize, seed: u64) -> Self {
        let train = TrainOptions {
            epochs: 20,
            batch: 32,
            lr: 3e-3,
            seed,
            ..Default::default()
        };
        ClassifierPlan {
            teacher: Arch::Teacher.config(h, w, classes),
            student: Arch::Student.config(h, w, classes),
            distill: TrainOptions {
                temperature: 4.0,
                alpha: 0.7,
                ..train.clone()
            },
            prune: PruneOptions {
                score: frugal_compress::prune::Score::Magnitude,
                sparsity: 0.5,
                pattern: frugal_compress::prune::Pattern::Unstructured,
                scope: frugal_compress::prune::Scope::Global,
            },
            recover: TrainOptions {
                epochs: 5,
                lr: 1e-3,
                warmup: 0.0,
                ..train.clone()
            },
            train,
        }
    }
}

/// One model the pipeline produced.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ModelRecord {
    /// `teacher`, `student-labels`, `student-distilled`, `student-pruned`, `student-int8`.
    pub name: String,
    /// How it was made.
    pub made_by: String,
    /// The model of this run it was made from (`None`: trained from scratch).
    pub made_from: Option<String>,
    /// File name inside the run folder.
    pub file: String,
    pub file_bytes: u64,
    pub parameters: usize,
    /// Weights (not biases) that are not zero.
    pub nonzero_weights: usize,
    pub weights: usize,
    pub eval: ClassifierEvalResult,
    /// Wall time of the step that made it (training, pruning and recovery, quantization).
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<EpochRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
    /// The energy of the step that made it (not of its evaluation), with its provenance.
    pub energy: Option<frugal_energy::EnergyReport>,
}

/// Everything the classifier pipeline did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClassifierRun {
    pub plan: ClassifierPlan,
    pub models: Vec<ModelRecord>,
}

/// Weight counts (total, non-zero) over the layers' weights.
fn weight_counts(m: &Cnn) -> Result<(usize, usize), Error> {
    let mut total = 0;
    let mut nonzero = 0;
    for (name, t) in m.parameters().map_err(frugal_compress::Error::from)? {
        if name.ends_with(".weight") {
            let v: Vec<f32> = t
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(frugal_compress::Error::from)?;
            total += v.len();
            nonzero += v.iter().filter(|&&x| x != 0.0).count();
        }
    }
    Ok((total, nonzero))
}

/// Reloads the model saved as `dir/NAME.safetensors` and evaluates it (so the record is the
/// file's, not the memory's).
fn record(
    dir: &Path,
    name: &str,
    made_by: String,
    set: &ImageSet,
    test: &[usize],
    seconds: f64,
) -> Result<ModelRecord, Error> {
    let file = format!("{name}.safetensors");
    let path = dir.join(&file);
    let back = Cnn::load(&path, &candle_core::Device::Cpu).map_err(frugal_compress::Error::from)?;
    let eval = eval_classifier(&back, set, Some(test))?;
    let (weights, nonzero_weights) = weight_counts(&back)?;
    Ok(ModelRecord {
        name: name.into(),
        made_by,
        made_from: None,
        file,
        file_bytes: std::fs::metadata(&path)
            .map_err(|e| frugal_formats::Error::io(&path, "reading metadata", e))?
            .len(),
        parameters: back
            .config
            .parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum(),
        nonzero_weights,
        weights,
        eval,
        seconds,
        epochs: Vec::new(),
        prune: None,
        energy: None,
    })
}

/// Runs the pipeline on `set` with the test images `test` (the rest trains), writing every model
/// into `dir`, each step that makes a model metered with `meters`. `progress(step, done, total,
/// loss)` reports training batches.
pub fn run_classifier_pipeline(
    set: &ImageSet,
    test: &[usize],
    plan: &ClassifierPlan,
    dir: &Path,
    meters: &frugal_energy::MeterOptions,
    progress: &dyn Fn(&str, usize, usize, f64),
) -> Result<ClassifierRun, Error> {
    let meter = || frugal_energy::Session::start(meters).map_err(energy_error);
    let dev = candle_core::Device::Cpu;
    let is_test = {
        let mut v = vec![false; set.len()];
        test.iter().for_each(|&i| v[i] = true);
        v
    };
    let train: Vec<usize> = (0..set.len()).filter(|&i| !is_test[i]).collect();
    let ce = frugal_compress::Error::from;
    let mut models = Vec::new();
    let fit = |name: &str,
               model: &Cnn,
               vars: &[candle_core::Var],
               teacher: Option<&Cnn>,
               opts: &TrainOptions|
     -> Result<Vec<EpochRecord>, Error> {
        let batches = train.len().div_ceil(opts.batch);
        Ok(train_classifier(
            model,
            vars,
            teacher.as_slice(),
            set,
            &train,
            opts,
            None,
            None,
            &|e, b, _, l| progress(name, (e - 1) * batches + b, opts.epochs * batches, l),
        )?)
    };

    // A fresh model trained (distilled when there is a teacher), saved and evaluated.
    let train_new = |name: &str,
                     made_by: String,
                     config: &CnnConfig,
                     seed: u64,
                     teacher: Option<&Cnn>,
                     opts: &TrainOptions|
     -> Result<(Cnn, ModelRecord), Error> {
        let t0 = std::time::Instant::now();
        let session = meter()?;
        let (model, vars) = Cnn::init(config.clone(), seed, &dev).map_err(ce)?;
        let epochs = fit(name, &model, &vars, teacher, opts)?;
        model
            .save(&dir.join(format!("{name}.safetensors")), &[])
            .map_err(ce)?;
        let energy = session.stop().map_err(energy_error)?;
        let mut r = record(dir, name, made_by, set, test, t0.elapsed().as_secs_f64())?;
        r.epochs = epochs;
        r.energy = Some(energy);
        Ok((model, r))
    };
    // 1. Teacher, from scratch on labels.
    let (teacher, r) = train_new(
        "teacher",
        "trained from scratch on labels (cross-entropy)".into(),
        &plan.teacher,
        plan.train.seed,
        None,
        &plan.train,
    )?;
    models.push(r);
    // 2. Student on labels alone: the baseline distillation must beat.
    let (_, r) = train_new(
        "student-labels",
        "same student trained on labels alone (baseline)".into(),
        &plan.student,
        plan.train.seed + 1,
        None,
        &plan.train,
    )?;
    models.push(r);
    // 3. Student distilled from the teacher (same initialisation as the baseline).
    let d = &plan.distill;
    let (student, r) = train_new(
        "student-distilled",
        format!(
            "distilled from the teacher: {}·T²·KL + {}·CE, T = {}",
            d.alpha,
            1.0 - d.alpha,
            d.temperature
        ),
        &plan.student,
        plan.train.seed + 1,
        Some(&teacher),
        d,
    )?;
    models.push(r);

    // 4. Pruned, then recovered by distillation with the mask held.
    let t0 = std::time::Instant::now();
    let session = meter()?;
    let batches = train.len().div_ceil(plan.recover.batch);
    let (pruned, report, epochs) = prune_and_recover(
        &student,
        &teacher,
        set,
        &train,
        &plan.prune,
        &plan.recover,
        &|e, b, _, l| {
            progress(
                "student-pruned",
                (e - 1) * batches + b,
                plan.recover.epochs * batches,
                l,
            )
        },
    )?;
    let layout = sparse_layout(plan.prune.pattern);
    pruned
        .save_sparse(&dir.join("student-pruned.safetensors"), &[], layout)
        .map_err(frugal_compress::Error::from)?;
    let energy = session.stop().map_err(energy_error)?;
    let mut r = record(dir, "student-pruned", format!("global magnitude pruning to {:.0} % sparsity, then {} epochs of distillation with the mask held; weights stored {layout}", 100.0 * report.sparsity, plan.recover.epochs), set, test, t0.elapsed().as_secs_f64())?;
    r.epochs = epochs;
    r.prune = Some(report);
    r.energy = Some(energy);
    r.made_from = Some("student-distilled".into());
    models.push(r);

    // 5–6. int8 weights (per output channel) of the pruned student and of the teacher itself
    // (served with integer products where a layer is large enough), each metered.
    let scheme = frugal_compress::quant::int::int_type("int8").expect("int8 is a scheme");
    let int8_of = |source: &str, name: &str, made_by: &str| -> Result<ModelRecord, Error> {
        let t0 = std::time::Instant::now();
        let session = meter()?;
        frugal_compress::quant::int::quantize_safetensors_file(
            &dir.join(format!("{source}.safetensors")),
            &dir.join(format!("{name}.safetensors")),
            scheme,
            &|_, _| {},
        )?;
        let energy = session.stop().map_err(energy_error)?;
        let mut r = record(
            dir,
            name,
            made_by.into(),
            set,
            test,
            t0.elapsed().as_secs_f64(),
        )?;
        r.energy = Some(energy);
        r.made_from = Some(source.into());
        Ok(r)
    };
    models.push(int8_of(
        "student-pruned",
        "student-int8",
        "pruned student, weights int8 per output channel (zeros stay zero)",
    )?);
    models.push(int8_of(
        "teacher",
        "teacher-int8",
        "the teacher, weights int8 per output channel (served with integer products)",
    )?);

    Ok(ClassifierRun {
        plan: plan.clone(),
        models,
    })
}

fn energy_error(e: frugal_energy::Error) -> Error {
    Error::Compress(frugal_compress::Error::BadOptions(format!(
        "energy meter: {e}"
    )))
}

/// How a model pruned with `pattern` is stored compactly: a bitmask, or N:M positions.
pub fn sparse_layout(pattern: Pattern) -> Layout {
    match pattern {
        Pattern::Unstructured => Layout::Bitmask,
        Pattern::NM { n, m } => Layout::NOfM { n, m },
    }
}

/// Prunes a copy of `model` with `prune` (weights only; biases stay) and, when `recover` has
/// epochs, fine-tunes it by distillation from `teacher` with the pruning mask held, so pruned
/// weights stay exactly zero. Returns the pruned model, the pruning report and the recovery's
/// epochs.
pub fn prune_and_recover(
    model: &Cnn,
    teacher: &Cnn,
    set: &ImageSet,
    train: &[usize],
    prune: &PruneOptions,
    recover: &TrainOptions,
    progress: &dyn Fn(usize, usize, usize, f64),
) -> Result<(Cnn, PruneReport, Vec<EpochRecord>), Error> {
    let ce = frugal_compress::Error::from;
    let (mut pruned, _) = model.trainable().map_err(ce)?;
    let (masks, report) = {
        let mut layers = pruned.linears_mut();
        prune_linears(&mut layers, None, prune)?
    };
    let (pruned, vars) = pruned.trainable().map_err(ce)?;
    // One mask per parameter: weights masked, biases free.
    let mut it = masks.into_iter();
    let var_masks: Vec<Option<candle_core::Tensor>> = pruned
        .parameters()
        .map_err(ce)?
        .iter()
        .map(|(n, _)| {
            if n.ends_with(".weight") {
                it.next()
            } else {
                None
            }
        })
        .collect();
    let epochs = if recover.epochs > 0 {
        train_classifier(
            &pruned,
            &vars,
            &[teacher],
            set,
            train,
            recover,
            Some(&var_masks),
            None,
            progress,
        )?
    } else {
        Vec::new()
    };
    Ok((pruned, report, epochs))
}

frugal_formats::name_table! {
    "lowercase";
    /// The two networks `frugal distill` trains (`--arch`).
    #[derive(Default)]
    pub enum Arch {
        /// conv 32-64, fc 128 (421,642 parameters on 28×28 images).
        Teacher,
        /// conv 8-16, fc 32 (26,698 parameters on 28×28 images).
        #[default]
        Student,
    }
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Teacher => "teacher",
            Arch::Student => "student",
        }
    }

    /// The network for images of `h`×`w` with `classes` classes.
    pub fn config(self, h: usize, w: usize, classes: usize) -> CnnConfig {
        let base = CnnConfig::classic(h, w, classes);
        match self {
            Arch::Teacher => base,
            Arch::Student => CnnConfig {
                conv_channels: vec![8, 16],
                hidden: 32,
                ..base
            },
        }
    }

    /// The default peak learning rate (batch 128, AdamW, warm-up and cosine): the best of a
    /// doubling grid on Fashion-MNIST at 3 epochs — 1.2e-2 for the teacher (of 3e-3 to 2.4e-2:
    /// 91.69 % against 90.81 % at 3e-3, seed 0), 2.4e-2 for the student (of 3e-3 to 4.8e-2:
    /// 89.80 % against 86.91 %, mean of 3 seeds; `bench/distill-lr.sh`).
    pub fn default_lr(self) -> f64 {
        match self {
            Arch::Teacher => 1.2e-2,
            Arch::Student => 2.4e-2,
        }
    }

    /// `frugal distill`'s training of this network by default: 3 epochs at batch 128 and
    /// [`Arch::default_lr`], the rest [`TrainOptions::default`].
    pub fn train_defaults(self) -> TrainOptions {
        TrainOptions {
            epochs: 3,
            batch: 128,
            lr: self.default_lr(),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `frugal distill` for classifiers: which network, on which data, from which teacher.
#[derive(Debug, Clone)]
pub struct DistillJob {
    /// `fashion-mnist` (its 60,000 training and 10,000 test images) or `digits` (the seeded
    /// stratified 80/20 split of `frugal run`).
    pub data: crate::data::Dataset,
    pub arch: Arch,
    /// Distil from these models (more than one: an ensemble, the mean of their logits); none:
    /// train on labels alone.
    pub teachers: Vec<std::path::PathBuf>,
    pub out: std::path::PathBuf,
    pub opts: TrainOptions,
    /// Continue from `OUT.checkpoint` when it exists.
    pub resume: bool,
}

/// What `frugal distill` did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DistillStep {
    pub data: String,
    pub arch: String,
    pub config: CnnConfig,
    pub teachers: Vec<String>,
    /// The teachers' (ensemble's) accuracy on the same test images.
    pub teacher_eval: Option<ClassifierEvalResult>,
    pub out: String,
    pub opts: TrainOptions,
    pub epochs: Vec<EpochRecord>,
    pub eval: ClassifierEvalResult,
    pub seconds: f64,
}

/// Checks that the model in `path` classifies the images of `set` (`data` names it).
pub(crate) fn check_fits(
    path: &Path,
    model: &Cnn,
    set: &ImageSet,
    data: &str,
) -> Result<(), Error> {
    let c = &model.config;
    if (c.in_channels, c.height, c.width, c.n_classes) == (1, set.rows, set.cols, set.n_classes) {
        return Ok(());
    }
    Err(frugal_compress::Error::BadOptions(format!(
        "{} classifies {}×{}×{} images into {} classes, not {data} ({}×{}, {} classes)",
        path.display(),
        c.in_channels,
        c.height,
        c.width,
        c.n_classes,
        set.rows,
        set.cols,
        set.n_classes
    ))
    .into())
}

/// Trains (or distils) a classifier with a checkpoint after every epoch, saves it to `job.out`
/// (atomically; the checkpoint is removed once the model is written) and evaluates it on the test
/// images. `progress(epoch, batch, batches, loss)`.
pub fn distill_classifier(
    job: &DistillJob,
    progress: &dyn Fn(usize, usize, usize, f64),
) -> Result<DistillStep, Error> {
    let t0 = std::time::Instant::now();
    let ce = frugal_compress::Error::from;
    let crate::data::Split {
        train_set,
        train,
        test_set,
        test,
    } = job.data.load(job.opts.seed)?;
    let config = job
        .arch
        .config(train_set.rows, train_set.cols, train_set.n_classes);
    let teachers = job
        .teachers
        .iter()
        .map(|p| {
            let t = Cnn::load(p, &candle_core::Device::Cpu).map_err(ce)?;
            check_fits(p, &t, &train_set, job.data.name())?;
            Ok(t)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let teachers: Vec<&Cnn> = teachers.iter().collect();
    let (model, vars) =
        Cnn::init(config.clone(), job.opts.seed, &candle_core::Device::Cpu).map_err(ce)?;
    let ck_path = crate::steps::checkpoint_path(&job.out);
    let ck = frugal_compress::distill::Checkpointing {
        path: &ck_path,
        resume: job.resume,
        stop_after: None,
    };
    let epochs = train_classifier(
        &model,
        &vars,
        &teachers,
        &train_set,
        &train,
        &job.opts,
        None,
        Some(&ck),
        progress,
    )?;
    // Under MPI every rank ends with the same parameters: rank 0 writes the file and judges
    // what it wrote; the others judge the same model in memory.
    let eval = if frugal_dist::is_root() {
        model.save(&job.out, &[]).map_err(ce)?;
        let _ = std::fs::remove_file(&ck_path);
        let back = Cnn::load(&job.out, &candle_core::Device::Cpu).map_err(ce)?;
        eval_classifier(&back, &test_set, Some(&test))?
    } else {
        eval_classifier(&model, &test_set, Some(&test))?
    };
    let teacher_eval = if teachers.is_empty() {
        None
    } else {
        Some(eval_ensemble(&teachers, &test_set, Some(&test))?)
    };
    Ok(DistillStep {
        data: job.data.name().to_string(),
        arch: job.arch.name().into(),
        config,
        teachers: job
            .teachers
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        teacher_eval,
        out: job.out.display().to_string(),
        opts: job.opts.clone(),
        epochs,
        eval,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `frugal prune` for a CNN classifier file: prune, recover by distillation from the unpruned
/// model, evaluate both on the data set's test images.
#[derive(Debug, Clone)]
pub struct PruneClassifierJob {
    pub input: std::path::PathBuf,
    pub output: std::path::PathBuf,
    /// `fashion-mnist` or `digits` (as for `frugal distill`).
    pub data: crate::data::Dataset,
    pub prune: PruneOptions,
    /// Recovery settings (epochs 0: none).
    pub recover: TrainOptions,
    /// Store the pruned weights compactly (a bitmask, or N:M positions for an N:M pattern)
    /// instead of dense F32.
    pub sparse_storage: bool,
    /// Remove whole conv channels (`prune.sparsity` of each conv block's) instead of zeroing
    /// weights: a smaller dense model.
    pub channels: bool,
}

/// What `frugal prune` did to a classifier.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PruneClassifierStep {
    pub input: String,
    pub output: String,
    pub data: String,
    /// Weights zeroed (unstructured or N:M) …
    pub prune: Option<PruneReport>,
    /// … or whole conv channels removed.
    pub channels: Option<frugal_compress::structured::ChannelPruneReport>,
    pub recover: TrainOptions,
    pub epochs: Vec<EpochRecord>,
    /// The input model's test accuracy, the output file's, and the drop in points.
    pub input_eval: ClassifierEvalResult,
    pub eval: ClassifierEvalResult,
    pub accuracy_drop_pt: f64,
    /// `dense`, `bitmask` or `N:M`, and the output's size against the input's.
    pub storage: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
}

/// Prunes the classifier in `job.input` (which is only read), recovers it and writes the result
/// to `job.output` (atomically), then evaluates the written file.
pub fn prune_classifier(
    job: &PruneClassifierJob,
    progress: &dyn Fn(usize, usize, usize, f64),
) -> Result<PruneClassifierStep, Error> {
    let t0 = std::time::Instant::now();
    let ce = frugal_compress::Error::from;
    let dev = candle_core::Device::Cpu;
    let model = Cnn::load(&job.input, &dev).map_err(ce)?;
    let crate::data::Split {
        train_set,
        train,
        test_set,
        test,
    } = job.data.load(job.recover.seed)?;
    check_fits(&job.input, &model, &train_set, job.data.name())?;
    let input_eval = eval_classifier(&model, &test_set, Some(&test))?;
    let (pruned, report, channels, epochs) = if job.channels {
        let (small, r) =
            frugal_compress::structured::prune_cnn_channels(&model, job.prune.sparsity)?;
        let (small, vars) = small.trainable().map_err(ce)?;
        let epochs = if job.recover.epochs > 0 {
            train_classifier(
                &small,
                &vars,
                &[&model],
                &train_set,
                &train,
                &job.recover,
                None,
                None,
                progress,
            )?
        } else {
            Vec::new()
        };
        (small, None, Some(r), epochs)
    } else {
        let (pruned, report, epochs) = prune_and_recover(
            &model,
            &model,
            &train_set,
            &train,
            &job.prune,
            &job.recover,
            progress,
        )?;
        (pruned, Some(report), None, epochs)
    };
    let layout = (job.sparse_storage && !job.channels).then(|| sparse_layout(job.prune.pattern));
    let output_bytes = match layout {
        Some(l) => pruned.save_sparse(&job.output, &[&job.input], l),
        None => pruned.save(&job.output, &[&job.input]),
    }
    .map_err(ce)?;
    let input_bytes = std::fs::metadata(&job.input)
        .map_err(|e| frugal_formats::Error::io(&job.input, "reading metadata of", e))?
        .len();
    let back = Cnn::load(&job.output, &dev).map_err(ce)?;
    let eval = eval_classifier(&back, &test_set, Some(&test))?;
    Ok(PruneClassifierStep {
        input: job.input.display().to_string(),
        output: job.output.display().to_string(),
        data: job.data.name().to_string(),
        prune: report,
        channels,
        recover: job.recover.clone(),
        epochs,
        accuracy_drop_pt: input_eval.accuracy_pct - eval.accuracy_pct,
        input_eval,
        eval,
        storage: layout.map_or("dense".into(), |l| l.to_string()),
        input_bytes,
        output_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
