//! Training and knowledge distillation of classifiers (Hinton, Vinyals & Dean 2015, "Distilling
//! the Knowledge in a Neural Network"): the student minimises
//!
//!   α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)
//!
//! with t the teacher's logits, s the student's, T the temperature (the T² keeps the soft term's
//! gradients on the scale of the hard one's) and y the labels. Without a teacher (or with α = 0)
//! it is plain cross-entropy training. AdamW (Loshchilov & Hutter 2019) with a cosine learning
//! rate schedule after a linear warm-up; batches drawn by a seeded shuffle each epoch, so a run
//! is reproducible; weights under a pruning mask stay zero through training.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer;
use frugal_formats::idx::ImageSet;
use frugal_formats::rng::SplitMix64;
use frugal_models::cnn::{batch_tensors, Cnn};

/// Training settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the steps spent warming the learning rate up linearly from 0.
    pub warmup: f64,
    pub seed: u64,
    /// Distillation temperature T.
    pub temperature: f64,
    /// Weight α of the teacher's soft targets (ignored without a teacher).
    pub alpha: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 10,
            batch: 64,
            lr: 3e-3,
            weight_decay: 1e-4,
            warmup: 0.05,
            seed: 0,
            temperature: 4.0,
            alpha: 0.7,
        }
    }
}

impl TrainOptions {
    /// Checks every setting, with a message naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadOptions(m));
        if self.epochs == 0 || self.batch == 0 {
            return bad("epochs and batch size must be positive".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.alpha) || !(0.0..1.0).contains(&self.warmup) {
            return bad(format!(
                "alpha {} must lie in [0, 1] and warm-up {} in [0, 1)",
                self.alpha, self.warmup
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be positive", self.temperature));
        }
        Ok(())
    }
}

/// One epoch's record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub loss: f64,
    pub seconds: f64,
    /// Training samples per second (teacher forward included when distilling).
    pub samples_per_second: f64,
}

/// The distillation loss (batch mean). `teacher` `None` or `alpha` 0 gives cross-entropy.
pub fn distillation_loss(
    student: &Tensor,
    teacher: Option<&Tensor>,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor> {
    let ce = candle_nn::loss::cross_entropy(student, labels)?;
    let Some(t) = teacher.filter(|_| alpha > 0.0) else {
        return Ok(ce);
    };
    let log_p_s = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_p_t = candle_nn::ops::log_softmax(&(t / temperature)?, D::Minus1)?;
    // KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s), summed over classes, averaged over the batch.
    let kl = (log_p_t.exp()? * (log_p_t - log_p_s)?)?
        .sum(D::Minus1)?
        .mean_all()?;
    let soft = (kl * (alpha * temperature * temperature))?;
    Ok((soft + (ce * (1.0 - alpha))?)?)
}

/// The learning rate at `step` of `total`: linear warm-up, then cosine decay to zero.
pub fn learning_rate(opts: &TrainOptions, step: usize, total: usize) -> f64 {
    let warm = ((opts.warmup * total as f64).round() as usize).max(1);
    if step < warm {
        return opts.lr * (step + 1) as f64 / warm as f64;
    }
    let p = (step - warm) as f64 / (total - warm).max(1) as f64;
    opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// A seeded Fisher–Yates shuffle.
pub fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Trains `model` (whose parameters are `vars`, as [`Cnn::init`] returns them) on `train` of
/// `set`, distilling from `teacher` when given. `masks` (one per var, 1 where a weight may be
/// non-zero) keep pruned weights at zero. `progress(epoch, batch, batches, loss)` after each
/// batch.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    model: &Cnn,
    vars: &[Var],
    teacher: Option<&Cnn>,
    set: &ImageSet,
    train: &[usize],
    opts: &TrainOptions,
    masks: Option<&[Option<Tensor>]>,
    progress: &dyn Fn(usize, usize, usize, f64),
) -> Result<Vec<EpochRecord>> {
    opts.validate()?;
    if train.is_empty() {
        return Err(Error::BadOptions("no training samples".into()));
    }
    let dev = Device::Cpu;
    let mut adam = candle_nn::AdamW::new(
        vars.to_vec(),
        candle_nn::ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = SplitMix64(opts.seed);
    let mut order = train.to_vec();
    let batches = order.len().div_ceil(opts.batch);
    let total = batches * opts.epochs;
    let mut records = Vec::with_capacity(opts.epochs);
    for epoch in 0..opts.epochs {
        let t0 = std::time::Instant::now();
        shuffle(&mut order, &mut rng);
        let mut sum = 0f64;
        for (b, chunk) in order.chunks(opts.batch).enumerate() {
            adam.set_learning_rate(learning_rate(opts, epoch * batches + b, total));
            let (x, y) = batch_tensors(set, chunk, &dev)?;
            // The teacher's logits are targets: detached, so the backward pass stays in the
            // student (it took 90 % of a distillation step otherwise).
            let t = teacher
                .map(|t| t.forward(&x).map(|l| l.detach()))
                .transpose()?;
            let s = model.forward(&x)?;
            let loss = distillation_loss(&s, t.as_ref(), &y, opts.temperature, opts.alpha)?;
            adam.backward_step(&loss)?;
            if let Some(m) = masks {
                for (v, m) in vars.iter().zip(m) {
                    if let Some(m) = m {
                        v.set(&v.as_tensor().mul(m)?)?;
                    }
                }
            }
            let l = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(Error::Numerical(format!(
                    "training loss became {l} at epoch {} batch {}",
                    epoch + 1,
                    b + 1
                )));
            }
            sum += l;
            progress(epoch + 1, b + 1, batches, l);
        }
        let seconds = t0.elapsed().as_secs_f64();
        records.push(EpochRecord {
            epoch: epoch + 1,
            loss: sum / batches as f64,
            seconds,
            samples_per_second: order.len() as f64 / seconds.max(1e-9),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn scalar(x: &Tensor) -> f64 {
        f64::from(x.to_scalar::<f32>().unwrap())
    }

    /// The loss against a direct computation from its definition.
    #[test]
    fn loss_is_t_squared_kl_plus_cross_entropy() {
        let s = [1.0f32, -0.5, 2.0, 0.3, 0.0, -1.0];
        let te = [0.5f32, 0.5, 1.0, -0.2, 1.5, 0.1];
        let y = Tensor::from_vec(vec![2u32, 1], 2, &Device::Cpu).unwrap();
        let (temp, alpha) = (3.0f64, 0.6f64);
        let got = scalar(
            &distillation_loss(&t(&s, (2, 3)), Some(&t(&te, (2, 3))), &y, temp, alpha).unwrap(),
        );
        let softmax = |v: &[f32], tt: f64| -> Vec<f64> {
            let e: Vec<f64> = v.iter().map(|&x| (f64::from(x) / tt).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|x| x / z).collect()
        };
        let mut want = 0.0;
        for (r, label) in [(0usize, 2usize), (1, 1)] {
            let ps = softmax(&s[r * 3..r * 3 + 3], temp);
            let pt = softmax(&te[r * 3..r * 3 + 3], temp);
            let kl: f64 = pt.iter().zip(&ps).map(|(a, b)| a * (a / b).ln()).sum();
            let ce = -softmax(&s[r * 3..r * 3 + 3], 1.0)[label].ln();
            want += alpha * temp * temp * kl + (1.0 - alpha) * ce;
        }
        want /= 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Without a teacher: cross-entropy alone.
        let ce = scalar(&distillation_loss(&t(&s, (2, 3)), None, &y, temp, alpha).unwrap());
        let want_ce = (-softmax(&s[0..3], 1.0)[2].ln() - softmax(&s[3..6], 1.0)[1].ln()) / 2.0;
        assert!((ce - want_ce).abs() < 1e-5);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let o = TrainOptions {
            lr: 1.0,
            warmup: 0.1,
            ..Default::default()
        };
        assert!((learning_rate(&o, 0, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&o, 9, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(&o, 50, 100) < 1.0);
        assert!(learning_rate(&o, 99, 100) < 1e-3);
    }

    #[test]
    fn bad_settings_are_refused() {
        for o in [
            TrainOptions {
                epochs: 0,
                ..Default::default()
            },
            TrainOptions {
                alpha: 1.5,
                ..Default::default()
            },
            TrainOptions {
                lr: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(o.validate().is_err());
        }
    }
}
