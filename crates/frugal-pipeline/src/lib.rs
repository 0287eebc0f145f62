//! Frugal's recipe runner: `frugal run`. A run writes every artifact into one output folder
//! together with a `report.json` that later steps and reports read.
//!
//! The compression steps (distil, prune, quantize, eval, measure, check) arrive with their own
//! crates; until then the embedded default loads and validates the bundled digits data set,
//! makes the seeded train/test split every later step will use, and writes the report.

pub mod quantize;

use frugal_formats::digits::embedded_digits;
use frugal_formats::output::write_atomic;
use serde::Serialize;
use std::io::Write;
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
    #[error("{path}: cannot create output folder: {source}")]
    OutputDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: recipe files are not supported yet (the recipe runner arrives with the pipeline work); run `frugal run` without a recipe for the embedded default")]
    RecipeUnsupported { path: PathBuf },
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A recipe file; `None` runs the embedded default.
    pub recipe: Option<PathBuf>,
    /// Folder for artifacts and `report.json`.
    pub out_dir: PathBuf,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Fraction of the data held out for testing.
    pub test_fraction: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            recipe: None,
            out_dir: PathBuf::from("frugal-out"),
            seed: 0,
            test_fraction: 0.2,
        }
    }
}

/// The data step's record in the report.
#[derive(Debug, Clone, Serialize)]
pub struct DataRecord {
    pub dataset: &'static str,
    pub source: &'static str,
    pub n_images: usize,
    pub image_shape: [usize; 2],
    pub max_pixel: u8,
    pub n_classes: usize,
    pub class_counts: Vec<usize>,
    pub n_train: usize,
    pub n_test: usize,
    pub seed: u64,
    /// Test-set indices (into the data set), so that every later step scores the same images.
    pub test_indices: Vec<usize>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub frugal_version: &'static str,
    pub recipe: String,
    pub data: DataRecord,
    /// Steps not run yet in this version, said plainly rather than left out.
    pub pending_steps: Vec<&'static str>,
}

/// Runs a recipe (or the embedded default) and writes `report.json` into `opts.out_dir`.
pub fn run(opts: &RunOptions) -> Result<(Report, PathBuf), Error> {
    if let Some(recipe) = &opts.recipe {
        return Err(Error::RecipeUnsupported {
            path: recipe.clone(),
        });
    }
    let digits = embedded_digits();
    let mut class_counts = vec![0usize; digits.n_classes];
    digits
        .labels
        .iter()
        .for_each(|&l| class_counts[l as usize] += 1);
    let test_indices = stratified_split(
        &digits.labels,
        digits.n_classes,
        opts.test_fraction,
        opts.seed,
    );
    let data = DataRecord {
        dataset: "digits",
        source:
            "scikit-learn 1.9.1 sklearn/datasets/data/digits.csv.gz (UCI optical digits, BSD-3)",
        n_images: digits.len(),
        image_shape: [digits.rows, digits.cols],
        max_pixel: digits.max_value,
        n_classes: digits.n_classes,
        class_counts,
        n_train: digits.len() - test_indices.len(),
        n_test: test_indices.len(),
        seed: opts.seed,
        test_indices,
    };
    let report = Report {
        frugal_version: env!("CARGO_PKG_VERSION"),
        recipe: "embedded-default".into(),
        data,
        pending_steps: vec!["distill", "prune", "quantize", "eval", "measure", "check"],
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::OutputDir {
        path: opts.out_dir.clone(),
        source,
    })?;
    let path = opts.out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report).expect("report serializes");
    write_atomic(&path, &[], |f| f.write_all(&json))?;
    Ok((report, path))
}

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
        let (report, path) = run(&opts).unwrap();
        assert_eq!(report.data.n_images, 1797);
        assert_eq!(report.data.n_train + report.data.n_test, 1797);
        assert_eq!(report.data.class_counts.iter().sum::<usize>(), 1797);
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(back["data"]["n_test"], report.data.n_test);
        assert_eq!(back["recipe"], "embedded-default");
    }

    #[test]
    fn a_recipe_is_refused_clearly() {
        let opts = RunOptions {
            recipe: Some("x.toml".into()),
            ..Default::default()
        };
        assert!(matches!(run(&opts), Err(Error::RecipeUnsupported { .. })));
    }
}
