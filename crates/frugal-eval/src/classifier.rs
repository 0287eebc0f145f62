//! Evaluation of image classifiers: accuracy on a test set with a 95 % Wilson interval, and
//! per-class accuracy.

use crate::encoder::wilson95;
use crate::Result;
use frugal_formats::idx::ImageSet;
use frugal_models::cnn::{predict, Cnn};
use serde::Serialize;

/// Results of a classifier evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassifierEvalResult {
    pub n_images: usize,
    pub n_correct: usize,
    pub accuracy_pct: f64,
    pub ci95_pct: (f64, f64),
    pub per_class_accuracy_pct: Vec<f64>,
    /// Images classified per second (batch 256, weights decoded up front; a speed reading of
    /// this run, not a benchmark).
    pub images_per_second: f64,
}

/// Accuracy of `model` on `indices` of `set` (all images when `None`).
pub fn eval_classifier(
    model: &Cnn,
    set: &ImageSet,
    indices: Option<&[usize]>,
) -> Result<ClassifierEvalResult> {
    let all: Vec<usize>;
    let idx = match indices {
        Some(i) => i,
        None => {
            all = (0..set.len()).collect();
            &all
        }
    };
    let t0 = std::time::Instant::now();
    let pred = predict(model, set, idx, 256)?;
    let images_per_second = idx.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    let mut per = vec![(0usize, 0usize); set.n_classes];
    let mut correct = 0;
    for (&i, &p) in idx.iter().zip(&pred) {
        let l = set.labels[i] as usize;
        per[l].1 += 1;
        if p as usize == l {
            per[l].0 += 1;
            correct += 1;
        }
    }
    let (lo, hi) = wilson95(correct, idx.len());
    Ok(ClassifierEvalResult {
        n_images: idx.len(),
        n_correct: correct,
        accuracy_pct: 100.0 * correct as f64 / idx.len().max(1) as f64,
        ci95_pct: (100.0 * lo, 100.0 * hi),
        per_class_accuracy_pct: per
            .iter()
            .map(|&(c, n)| 100.0 * c as f64 / n.max(1) as f64)
            .collect(),
        images_per_second,
    })
}
