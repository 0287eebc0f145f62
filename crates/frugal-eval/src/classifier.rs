//! Evaluation of image classifiers: accuracy on a test set with a 95 % Wilson interval, and
//! per-class accuracy.

use crate::encoder::wilson95;
use crate::Result;
use frugal_formats::idx::ImageSet;
use frugal_models::cnn::{argmax, served_logits, Cnn};
use serde::Serialize;

/// Results of a classifier evaluation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ClassifierEvalResult {
    pub n_images: usize,
    pub n_correct: usize,
    pub accuracy_pct: f64,
    pub ci95_pct: (f64, f64),
    pub per_class_accuracy_pct: Vec<f64>,
    /// Images classified per second (batch 256 on one thread, as served: int8 weights through
    /// integer products; a speed reading of this run, not a benchmark).
    pub images_per_second: f64,
}

/// Accuracy of `model` on `indices` of `set` (all images when `None`), as it is served
/// ([`frugal_models::cnn_infer`]: a model loaded from an int8 file runs integer products).
pub fn eval_classifier(
    model: &Cnn,
    set: &ImageSet,
    indices: Option<&[usize]>,
) -> Result<ClassifierEvalResult> {
    eval_ensemble(&[model], set, indices)
}

/// Accuracy of the ensemble of `models` (the class of the highest mean logit, as distillation
/// from them sees it) on `indices` of `set` (all images when `None`). One model: that model.
pub fn eval_ensemble(
    models: &[&Cnn],
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
    let Some((first, rest)) = models.split_first() else {
        return Err(crate::Error::Mismatch(
            "an ensemble needs at least one model".into(),
        ));
    };
    let t0 = std::time::Instant::now();
    // One model's vote is `predict`'s: the argmax of its logits.
    let k = first.config.n_classes;
    let mut sum = served_logits(first, set, idx, 256)?;
    for m in rest {
        if m.config.n_classes != k {
            return Err(crate::Error::Mismatch(format!(
                "an ensemble of {k}- and {}-class models",
                m.config.n_classes
            )));
        }
        sum.iter_mut()
            .zip(served_logits(m, set, idx, 256)?)
            .for_each(|(a, b)| *a += b);
    }
    let pred: Vec<usize> = sum.chunks(k).map(argmax).collect();
    let images_per_second = idx.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    let mut per = vec![(0usize, 0usize); set.n_classes];
    let mut correct = 0;
    for (&i, &p) in idx.iter().zip(&pred) {
        let l = set.labels[i] as usize;
        per[l].1 += 1;
        if p == l {
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

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_models::cnn::CnnConfig;

    /// An ensemble votes by its summed logits: one member twice is that member, and members that
    /// do not classify into the same classes (or none at all) are refused.
    #[test]
    fn ensemble_votes_by_summed_logits() {
        let set = frugal_formats::digits::embedded_digits();
        let dev = candle_core::Device::Cpu;
        let small = |classes, seed| {
            let cfg = CnnConfig {
                conv_channels: vec![4],
                hidden: 16,
                ..CnnConfig::classic(8, 8, classes)
            };
            Cnn::init(cfg, seed, &dev).unwrap().0
        };
        let (a, b) = (small(10, 1), small(10, 2));
        let idx: Vec<usize> = (0..200).collect();
        let one = eval_classifier(&a, &set, Some(&idx)).unwrap();
        let twice = eval_ensemble(&[&a, &a], &set, Some(&idx)).unwrap();
        assert_eq!(twice.n_correct, one.n_correct);
        assert_eq!(twice.per_class_accuracy_pct, one.per_class_accuracy_pct);
        // The pair's vote, computed here from the members' logits.
        let (la, lb) = (
            served_logits(&a, &set, &idx, 64).unwrap(),
            served_logits(&b, &set, &idx, 64).unwrap(),
        );
        let votes: usize = idx
            .iter()
            .enumerate()
            .filter(|&(r, &i)| {
                let row: Vec<f32> = (0..10).map(|j| la[r * 10 + j] + lb[r * 10 + j]).collect();
                argmax(&row) == set.labels[i] as usize
            })
            .count();
        assert_eq!(
            eval_ensemble(&[&a, &b], &set, Some(&idx))
                .unwrap()
                .n_correct,
            votes
        );
        let odd = small(5, 3);
        let e = eval_ensemble(&[&a, &odd], &set, Some(&idx)).unwrap_err();
        assert!(
            e.is_bad_input() && e.to_string().contains("10- and 5-class"),
            "{e}"
        );
        assert!(eval_ensemble(&[], &set, None).unwrap_err().is_bad_input());
    }
}
