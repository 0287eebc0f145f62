//! Frugal's recipe runner: `frugal run`. A run writes every artifact into one output folder
//! together with a `report.json` that later steps and reports read.
//!
//! The embedded default runs on the bundled digits data set: the seeded stratified split, then
//! [`classifier::run_classifier_pipeline`] (teacher trained from scratch, a student on labels
//! and one distilled, the distilled one pruned and recovered, then int8, each step metered),
//! every model saved, reloaded and evaluated on the same test images; then every model's
//! inference energy is measured, each compression's break-even computed (its energy against the
//! saving per query), every student checked against the built-in default policy, and the report
//! written as `report.json`, `report.md` and `report.html`. Recipe files ([`recipe`]) chain the
//! language-model steps.

pub mod checks;
pub mod classifier;
pub mod data;
pub mod embedded;
pub mod jobs;
pub mod judge;
pub mod kind;
pub mod measure;
pub mod recipe;
pub mod schema;
pub mod steps;
pub mod tune;
pub mod tune_classifier;

use embedded::EMBEDDED_DEFAULT;
pub use embedded::{run, BreakEven, DataRecord, ModelEnergy, Report};
/// The record the standards exports are made from.
pub use frugal_report::exports::Record as ExportRecord;

use std::path::{Path, PathBuf};

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Formats(#[from] frugal_formats::Error),
    #[error(transparent)]
    Compress(#[from] frugal_compress::Error),
    #[error(transparent)]
    Eval(#[from] frugal_eval::Error),
    #[error("{path}: cannot create output folder")]
    OutputDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("recipe {path}: {reason}")]
    Recipe { path: PathBuf, reason: String },
    /// `frugal tune` found no model that meets the limit (not an input error: exit 1).
    #[error("{0}")]
    LimitNotMet(String),
    /// An evaluation that cannot run on its text (too short, bad ctx), found before any work.
    #[error("{path}: {error}")]
    EvalText {
        path: PathBuf,
        error: Box<frugal_eval::Error>,
    },
    /// The output folder holds another run, which this one would overwrite.
    #[error("{dir} holds {whose}; run into another folder, or pass --force to replace it")]
    ForeignRun { dir: PathBuf, whose: String },
    /// Options that do not fit the input (a CNN-only option for a GGUF model, …).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Energy(#[from] frugal_energy::Error),
    #[error(transparent)]
    Policy(#[from] frugal_report::policy::LoadError),
    /// A policy with no clause for a model's kind (a bad policy for that report).
    #[error(transparent)]
    NotCovered(#[from] frugal_report::policy::NotCovered),
}

impl Error {
    /// True when the error is the input's fault (a bad file, value or folder): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Formats(f) => f.is_bad_input(),
            Error::Compress(e) => e.is_bad_input(),
            Error::Eval(e) => e.is_bad_input(),
            Error::Recipe { .. } | Error::ForeignRun { .. } | Error::Usage(_) => true,
            Error::Policy(e) => e.is_bad_input(),
            Error::NotCovered(_) => true,
            Error::Energy(e) => e.is_bad_input(),
            Error::EvalText { error, .. } => error.is_bad_input(),
            Error::OutputDir { .. } | Error::LimitNotMet(_) => false,
        }
    }
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder for artifacts and `report.json`.
    pub out_dir: PathBuf,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Fraction of the data held out for testing.
    pub test_fraction: f64,
    /// Run into a folder that holds another run (a recipe's): its report is replaced.
    pub force: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            out_dir: PathBuf::from("frugal-out"),
            seed: 0,
            test_fraction: 0.2,
            force: false,
        }
    }
}

/// The version of every report's layout ([`schema::SCHEMA_VERSION`]).
pub const REPORT_SCHEMA_VERSION: u32 = schema::SCHEMA_VERSION;

/// A stratified, seeded split: from each class, `fraction` of its items (rounded) go to the test
/// set. Returns sorted test indices. Uses SplitMix64, so the split is the same on every machine.
pub fn stratified_split(labels: &[u8], n_classes: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut rng = frugal_formats::rng::SplitMix64(seed);
    let mut next = move || rng.next_u64();
    let mut test = Vec::new();
    for c in 0..n_classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        for i in (1..idx.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let k = (idx.len() as f64 * fraction).round() as usize;
        test.extend_from_slice(&idx[..k]);
    }
    test.sort_unstable();
    test
}

/// Refuses `out_dir` when its `report.json` is another run's (its `recipe` is not `recipe`, or
/// it is not a Frugal report), unless `force`; returns the report's bytes when it is this
/// recipe's (what a resumed run reads its earlier steps from).
pub(crate) fn refuse_foreign_run(
    out_dir: &Path,
    recipe: &str,
    force: bool,
) -> Result<Option<Vec<u8>>, Error> {
    let report = report_path(out_dir);
    if force || std::fs::symlink_metadata(&report).is_err() {
        return Ok(None);
    }
    let bytes = frugal_formats::guard::read_capped(&report, "report", 256 << 20)?;
    let whose = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| Some(v.get("recipe")?.as_str()?.to_string()));
    match whose {
        Some(w) if w == recipe => Ok(Some(bytes)),
        Some(w) if w == EMBEDDED_DEFAULT => Err(Error::ForeignRun {
            dir: out_dir.to_path_buf(),
            whose: "the embedded default's run (`frugal run`)".into(),
        }),
        Some(w) => Err(Error::ForeignRun {
            dir: out_dir.to_path_buf(),
            whose: format!("the run of recipe `{w}`"),
        }),
        None => Err(Error::ForeignRun {
            dir: out_dir.to_path_buf(),
            whose: "a report.json that Frugal's runs did not write".into(),
        }),
    }
}

/// Where the report of a run in `out_dir` lives.
pub fn report_path(out_dir: &Path) -> PathBuf {
    out_dir.join("report.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let a = stratified_split(&labels, 10, 0.2, 7);
        assert_eq!(a.len(), 200);
        for c in 0..10 {
            assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 20);
        }
        assert_eq!(a, stratified_split(&labels, 10, 0.2, 7));
        assert_ne!(a, stratified_split(&labels, 10, 0.2, 8));
    }

    #[test]
    fn default_run_writes_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            out_dir: dir.path().join("out"),
            ..Default::default()
        };
        let (report, path) = run(&opts, &|_, _, _, _| {}).unwrap();
        assert_eq!(report.data.n_images, 1797);
        assert_eq!(report.data.n_train + report.data.n_test, 1797);
        assert_eq!(report.data.class_counts.iter().sum::<usize>(), 1797);
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["data"]["n_test"], report.data.n_test);
        assert_eq!(back["recipe"], "embedded-default");
        assert_eq!(back["schema_version"], REPORT_SCHEMA_VERSION);
        // Each compression step was metered and paid back against the teacher: the students
        // are far cheaper per image, so break-even comes after a finite number of queries.
        assert_eq!(report.break_even.len(), 5);
        for (m, b) in report
            .classifier
            .models
            .iter()
            .skip(1)
            .zip(&report.break_even)
        {
            assert_eq!(m.name, b.model);
            assert!(m.energy.as_ref().unwrap().joules() > 0.0, "{}", m.name);
            let own = m.energy.as_ref().unwrap().joules();
            assert!(b.record.compression_joules >= own, "{b:?}");
        }
        // int8's cost includes the pruning and distillation it was made from.
        let cost = |n: &str| {
            report
                .break_even
                .iter()
                .find(|b| b.model == n)
                .unwrap()
                .record
                .compression_joules
        };
        assert!(cost("student-int8") > cost("student-pruned"));
        assert!(cost("student-pruned") > cost("student-distilled"));
        // The built-in policy checked every student; its label grades are the report's.
        assert_eq!(report.check.len(), 5);
        for c in &report.check {
            assert_eq!(c.clauses.len(), 2, "{:?}", c.clauses);
            assert_eq!(c.pass, c.clauses.iter().all(|o| o.pass));
        }
        // `frugal check` on report.json reads it back through the schema's types and gives
        // the run's own verdicts.
        let policy = frugal_report::policy::Policy::default_policy();
        let again: Vec<_> = judge::subjects(&judge::read(&path).unwrap())
            .unwrap()
            .iter()
            .map(|s| frugal_report::policy::check(&policy, s).unwrap())
            .collect();
        assert_eq!(again, report.check);
        let html = std::fs::read_to_string(opts.out_dir.join("report.html")).unwrap();
        assert!(html.contains("bits-per-tensor") && html.contains("Break-even"));
        // Every model was written, reloaded and scored on the same test images.
        let m = &report.classifier.models;
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "teacher",
                "student-labels",
                "student-distilled",
                "student-pruned",
                "student-int8",
                "teacher-int8"
            ]
        );
        for r in m {
            assert!(opts.out_dir.join(&r.file).exists());
            assert_eq!(r.eval.n_images, report.data.n_test);
        }
        // Trained for real: digits are easy for a CNN, chance is 10 %.
        assert!(m[0].eval.accuracy_pct > 95.0, "teacher {:?}", m[0].eval);
        assert!(m[2].eval.accuracy_pct > 90.0, "student {:?}", m[2].eval);
        // Half the weights pruned, and the mask held through recovery and int8.
        let half = m[3].weights / 2;
        assert!(
            m[3].nonzero_weights.abs_diff(half) <= 1,
            "{}",
            m[3].nonzero_weights
        );
        assert_eq!(m[4].nonzero_weights, m[3].nonzero_weights);
        assert!(m[3].eval.accuracy_pct > 85.0);
        // The pruned student is stored sparse (smaller than the same network dense); int8 is
        // about a third of the dense f32 file and scores (almost) the same.
        assert!(m[3].file_bytes < m[1].file_bytes);
        assert!(m[4].file_bytes * 2 < m[1].file_bytes);
        assert!((m[4].eval.accuracy_pct - m[3].eval.accuracy_pct).abs() <= 2.0);
    }
}
