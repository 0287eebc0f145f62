//! Training and knowledge distillation of classifiers (Hinton, Vinyals & Dean 2015, "Distilling
//! the Knowledge in a Neural Network"): the student minimises
//!
//!   α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)
//!
//! with t the teacher's logits, s the student's, T the temperature (the T² keeps the soft term's
//! gradients on the scale of the hard one's) and y the labels. Without a teacher (or with α = 0)
//! it is plain cross-entropy training. Decoupled distillation (Zhao et al. 2022) replaces the KL
//! by TCKD + β·NCKD ([`decoupled_kd`]); attention transfer (Zagoruyko & Komodakis 2017) adds
//! a term matching the teacher's spatial attention after every conv block
//! ([`attention_transfer_grad`]). AdamW (Loshchilov & Hutter 2019) with a cosine learning
//! rate schedule after a linear warm-up; batches drawn by a seeded shuffle each epoch, so a run
//! is reproducible; weights under a pruning mask stay zero through training. With a checkpoint
//! file, parameters, AdamW's moments and the epoch are saved after every epoch, and a resumed
//! run continues bit for bit where the interrupted one stopped.

use crate::{Error, Result};
use candle_core::{Device, Tensor, Var, D};
use frugal_formats::idx::ImageSet;
use frugal_formats::rng::SplitMix64;
use frugal_formats::safetensors::{Dtype, SafetensorsFile};
use frugal_models::cnn::{batch_pixels, Cnn, CnnConfig};
use frugal_models::cnn_kernels::{backward, block_shapes, forward, Workspace};
use std::collections::BTreeMap;
use std::path::Path;

/// Training settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
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
    /// Mixup (Zhang et al. 2018): every image of a batch is blended with another of the same
    /// batch, λ ~ U(0, 1), and the hard target blended alike; with a teacher, the teacher labels
    /// the blended image ("function matching", Beyer et al. 2022). Off by default.
    #[serde(default)]
    pub mixup: bool,
    /// Random translations of every image by up to this many pixels in each direction, fresh
    /// per step (zero fill); with a teacher, the teacher labels the moved image (consistent
    /// teaching, Beyer et al. 2022). 0 (default) is off.
    #[serde(default)]
    pub shift: usize,
    /// Random horizontal flips of half the images per step: for classes that are mirror-
    /// symmetric (Fashion-MNIST), not for digits. Off by default.
    #[serde(default)]
    pub flip: bool,
    /// Decoupled knowledge distillation (Zhao et al. 2022, "Decoupled Knowledge
    /// Distillation"): with a weight β, the soft term is TCKD + β·NCKD — the KL divergence of
    /// the binary target/non-target split plus β times the KL divergence among the non-target
    /// classes — instead of Hinton's KL, which is TCKD + (1 − p_t)·NCKD and so mutes the
    /// teacher's non-target knowledge wherever it is confident. `None` (default) is Hinton's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nckd_weight: Option<f64>,
    /// Attention transfer (Zagoruyko & Komodakis 2017): with a weight β, β/2 · the mean over
    /// images and pixels of the squared difference of the student's and the teacher's
    /// normalised attention maps ([`attention_maps`]) after every conv block is added to the
    /// loss. Unit-norm maps of P pixels make the term about β/P, so β scales with the map size:
    /// the paper's 1000 (32×32 maps) suits Fashion-MNIST's 14×14 and 7×7, while digits' 4×4
    /// and 2×2 need about 10 (at 1000 the term swamps the labels: 89.1 % after 20 epochs
    /// against 92.5 % without it and 93.3 % at 10).
    /// The teacher's blocks must have the student's pixel sizes. `None` (default) is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_weight: Option<f64>,
    /// The attention weight falls linearly from β at the first step to 0 at the last: the
    /// teacher's attention guides the start of training and releases the student at the end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_decay: bool,
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
            mixup: false,
            shift: 0,
            flip: false,
            nckd_weight: None,
            attention_weight: None,
            attention_decay: false,
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
        check_schedule(self.lr, self.alpha, self.warmup)?;
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be positive", self.temperature));
        }
        if let Some(b) = self
            .attention_weight
            .filter(|b| !(*b >= 0.0 && b.is_finite()))
        {
            return bad(format!(
                "attention weight {b} must be finite and non-negative"
            ));
        }
        if let Some(b) = self.nckd_weight {
            if !(b >= 0.0 && b.is_finite()) {
                return bad(format!("NCKD weight {b} must be finite and non-negative"));
            }
            if self.mixup {
                return bad("decoupled distillation needs one target class per image: \
                    it does not combine with mixup"
                    .into());
            }
        }
        Ok(())
    }
}

/// One epoch's record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
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

/// Checks a peak learning rate, a loss weight α and a warm-up fraction.
pub(crate) fn check_schedule(lr: f64, alpha: f64, warmup: f64) -> Result<()> {
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(Error::BadOptions(format!(
            "learning rate {lr} must be positive"
        )));
    }
    if !(0.0..=1.0).contains(&alpha) || !(0.0..1.0).contains(&warmup) {
        return Err(Error::BadOptions(format!(
            "alpha {alpha} must lie in [0, 1] and warm-up {warmup} in [0, 1)"
        )));
    }
    Ok(())
}

/// The learning rate at `step` of `total`: linear warm-up over the first `warmup` of the steps
/// to `lr`, then cosine decay to zero.
pub fn warmup_cosine(lr: f64, warmup: f64, step: usize, total: usize) -> f64 {
    let warm = ((warmup * total as f64).round() as usize).max(1);
    if step < warm {
        return lr * (step + 1) as f64 / warm as f64;
    }
    let p = (step - warm) as f64 / (total - warm).max(1) as f64;
    lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// The learning rate of classifier training at `step` of `total`.
pub fn learning_rate(opts: &TrainOptions, step: usize, total: usize) -> f64 {
    warmup_cosine(opts.lr, opts.warmup, step, total)
}

/// The loss of [`distillation_loss`] and its gradient with respect to the student's logits,
/// on flat `[batch, classes]` buffers (what the hand-written training step needs). Per row,
/// ∂/∂s = (1 − α)(softmax(s) − onehot(y)) + α·T·(softmax(s/T) − softmax(t/T)), over the batch
/// size. With `mix` (partner labels and λ per row, for mixup) the hard target is
/// λ·onehot(y) + (1 − λ)·onehot(y₂). T, α and the decoupled weight β come from `opts`; with β
/// the soft term is [`decoupled_kd`]'s TCKD + β·NCKD instead of the KL. Returns the batch-mean
/// loss; `dlogits` is overwritten.
pub fn distillation_loss_grad(
    student: &[f32],
    teacher: Option<&[f32]>,
    labels: &[u32],
    mix: Option<(&[u32], &[f32])>,
    opts: &TrainOptions,
    dlogits: &mut [f32],
) -> f64 {
    let (temperature, alpha) = (opts.temperature, opts.alpha);
    let batch = labels.len();
    let k = student.len() / batch.max(1);
    assert_eq!(student.len(), batch * k, "logits and labels disagree");
    assert_eq!(dlogits.len(), student.len(), "dlogits size");
    let teacher = teacher.filter(|_| alpha > 0.0);
    let alpha = if teacher.is_some() { alpha } else { 0.0 };
    // log-softmax of `row / t` into `out`, in f64.
    let log_softmax = |row: &[f32], t: f64, out: &mut Vec<f64>| {
        out.clear();
        out.extend(row.iter().map(|&v| f64::from(v) / t));
        let m = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z = m + out.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        out.iter_mut().for_each(|v| *v -= z);
    };
    let (mut ls, mut lst, mut ltt) = (Vec::new(), Vec::new(), Vec::new());
    let mut dkd = DecoupledKd::default();
    let mut total = 0.0;
    let inv_b = 1.0 / batch as f64;
    for r in 0..batch {
        let s = &student[r * k..(r + 1) * k];
        let y = labels[r] as usize;
        let (y2, lam) = mix.map_or((y, 1.0), |(l, w)| (l[r] as usize, f64::from(w[r])));
        log_softmax(s, 1.0, &mut ls);
        let d = &mut dlogits[r * k..(r + 1) * k];
        let mut loss = -(1.0 - alpha) * (lam * ls[y] + (1.0 - lam) * ls[y2]);
        for j in 0..k {
            let target = if j == y { lam } else { 0.0 } + if j == y2 { 1.0 - lam } else { 0.0 };
            let hard = ls[j].exp() - target;
            d[j] = ((1.0 - alpha) * hard * inv_b) as f32;
        }
        if let Some(t) = teacher {
            let t = &t[r * k..(r + 1) * k];
            let soft = match opts.nckd_weight {
                None => {
                    log_softmax(s, temperature, &mut lst);
                    log_softmax(t, temperature, &mut ltt);
                    let mut kl = 0.0;
                    for j in 0..k {
                        let pt = ltt[j].exp();
                        kl += pt * (ltt[j] - lst[j]);
                        d[j] += (alpha * temperature * (lst[j].exp() - pt) * inv_b) as f32;
                    }
                    kl
                }
                Some(beta) => {
                    decoupled_kd(s, t, y, temperature, &mut lst, &mut ltt, &mut dkd);
                    let p = &dkd;
                    for ((d, gt), gn) in d.iter_mut().zip(&p.tckd_grad).zip(&p.nckd_grad) {
                        *d += (alpha * temperature * (gt + beta * gn) * inv_b) as f32;
                    }
                    p.tckd + beta * p.nckd
                }
            };
            loss += alpha * temperature * temperature * soft;
        }
        total += loss;
    }
    total * inv_b
}

/// The two parts of one row's distillation divergence at temperature T (Zhao et al. 2022),
/// with the gradients of each with respect to the scaled logits s/T.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecoupledKd {
    /// Target-class KD: KL between the teacher's and the student's binary distributions
    /// (p_y, 1 − p_y).
    pub tckd: f64,
    /// Non-target-class KD: KL between their distributions over the classes other than y,
    /// each renormalised to sum to 1.
    pub nckd: f64,
    /// The teacher's probability of the target class, p_y (Hinton's KL is
    /// TCKD + (1 − p_y)·NCKD).
    pub teacher_target: f64,
    pub tckd_grad: Vec<f64>,
    pub nckd_grad: Vec<f64>,
}

/// [`DecoupledKd`] of student logits `s` and teacher logits `t` (one row each) for target
/// class `y`. `ls` and `lt` are scratch buffers (left holding the log-softmax of s/T and
/// t/T); `out` is overwritten, its buffers reused from row to row. Every probability is taken through log-sum-exp, so a confident teacher (p_y → 1)
/// leaves finite logarithms.
pub fn decoupled_kd(
    s: &[f32],
    t: &[f32],
    y: usize,
    temperature: f64,
    ls: &mut Vec<f64>,
    lt: &mut Vec<f64>,
    out: &mut DecoupledKd,
) {
    let k = s.len();
    let lse = |v: &[f64], skip: usize| {
        let m = v
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != skip)
            .map(|(_, &x)| x)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = v
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != skip)
            .map(|(_, &x)| (x - m).exp())
            .sum();
        m + sum.ln()
    };
    let scaled = |row: &[f32], out: &mut Vec<f64>| {
        out.clear();
        out.extend(row.iter().map(|&v| f64::from(v) / temperature));
    };
    scaled(s, ls);
    scaled(t, lt);
    // log of the full and the non-target normalisers.
    let (zs, zt) = (lse(ls, k), lse(lt, k));
    let (ns, nt) = (lse(ls, y), lse(lt, y));
    // Binary split: log p_y and log(1 − p_y) for each.
    let (s_in, s_out) = (ls[y] - zs, ns - zs);
    let (t_in, t_out) = (lt[y] - zt, nt - zt);
    let (py_s, py_t) = (s_in.exp(), t_in.exp());
    let tckd = py_t * (t_in - s_in) + t_out.exp() * (t_out - s_out);
    let mut nckd = 0.0;
    let (tckd_grad, nckd_grad) = (&mut out.tckd_grad, &mut out.nckd_grad);
    for g in [&mut *tckd_grad, &mut *nckd_grad] {
        g.clear();
        g.resize(k, 0.0);
    }
    for j in (0..k).filter(|&j| j != y) {
        let (qs, lqt) = ((ls[j] - ns).exp(), lt[j] - nt);
        let qt = lqt.exp();
        nckd += qt * (lqt - (ls[j] - ns));
        nckd_grad[j] = qs - qt;
        tckd_grad[j] = qs * (py_t - py_s);
    }
    tckd_grad[y] = py_s - py_t;
    for (v, z) in [(&mut *ls, zs), (&mut *lt, zt)] {
        v.iter_mut().for_each(|x| *x -= z);
    }
    (out.tckd, out.nckd, out.teacher_target) = (tckd, nckd, py_t);
}

/// Attention maps of one conv block's output `a` (channels-last `[batch, pixels, channels]`),
/// appended to `maps` as `[batch, pixels]`: per pixel Σ_c a², L2-normalised over the pixels of
/// each image (Zagoruyko & Komodakis 2017, p = 2). An all-zero output maps to zeros.
pub fn attention_maps(a: &[f32], pixels: usize, channels: usize, maps: &mut Vec<f64>) {
    for img in a.chunks_exact(pixels * channels) {
        image_attention(img, channels, maps);
    }
}

/// Appends one image's normalised attention map to `maps`; returns the norm ‖Q‖ it divided
/// by (0 for an all-zero output, whose map is zeros).
fn image_attention(img: &[f32], channels: usize, maps: &mut Vec<f64>) -> f64 {
    let start = maps.len();
    maps.extend(
        img.chunks_exact(channels)
            .map(|px| px.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()),
    );
    let q = &mut maps[start..];
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n <= 1e-12 {
        q.fill(0.0);
        return 0.0;
    }
    // (Multiplied by the inverse: the benchmarks' runs were made so, bit for bit.)
    let inv = 1.0 / n;
    q.iter_mut().for_each(|v| *v *= inv);
    n
}

/// Attention transfer for one block: β/2 · the mean over images and pixels of
/// (q_student − q_teacher)², with `teacher` the teacher's [`attention_maps`] of the same
/// images. Writes ∂loss/∂a into `da` (the layout of `a`) and returns the loss.
pub fn attention_transfer_grad(
    a: &[f32],
    teacher: &[f64],
    pixels: usize,
    channels: usize,
    beta: f64,
    da: &mut Vec<f32>,
) -> f64 {
    let batch = a.len() / (pixels * channels).max(1);
    assert_eq!(
        teacher.len(),
        batch * pixels,
        "teacher maps and block output disagree"
    );
    let scale = beta / (batch * pixels) as f64;
    da.clear();
    da.resize(a.len(), 0.0);
    let mut loss = 0.0;
    let (mut q, mut dq) = (Vec::with_capacity(pixels), vec![0f64; pixels]);
    for ((img, qt), d) in a
        .chunks_exact(pixels * channels)
        .zip(teacher.chunks_exact(pixels))
        .zip(da.chunks_exact_mut(pixels * channels))
    {
        q.clear();
        let n = image_attention(img, channels, &mut q);
        // ∂loss/∂q, then through the normalisation q = Q/‖Q‖ to ∂loss/∂Q.
        let mut dot = 0.0;
        for p in 0..pixels {
            let diff = q[p] - qt[p];
            loss += 0.5 * scale * diff * diff;
            dq[p] = scale * diff;
            dot += q[p] * dq[p];
        }
        if n == 0.0 {
            continue;
        }
        for (p, (px, dpx)) in img
            .chunks_exact(channels)
            .zip(d.chunks_exact_mut(channels))
            .enumerate()
        {
            let dqq = (dq[p] - q[p] * dot) / n;
            for (g, &v) in dpx.iter_mut().zip(px) {
                *g = (2.0 * f64::from(v) * dqq) as f32;
            }
        }
    }
    loss
}

/// AdamW (decoupled weight decay) on flat buffers, with its moments exposed so that they can
/// be checkpointed. The update is candle-nn's `AdamW` step for step.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// First and second moments, one per parameter.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// Steps taken.
    pub t: usize,
}

impl AdamW {
    pub fn new(params: &[Vec<f32>], weight_decay: f64) -> Self {
        let zeros = |p: &Vec<f32>| vec![0f32; p.len()];
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            t: 0,
        }
    }

    /// One step on `params` with `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        use rayon::prelude::*;
        self.t += 1;
        let scale_m = (1.0 / (1.0 - self.beta1.powi(self.t as i32))) as f32;
        let scale_v = (1.0 / (1.0 - self.beta2.powi(self.t as i32))) as f32;
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let lr = lr as f32;
        for k in 0..params.len() {
            params[k]
                .par_chunks_mut(4096)
                .zip(grads[k].par_chunks(4096))
                .zip(self.m[k].par_chunks_mut(4096))
                .zip(self.v[k].par_chunks_mut(4096))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        m[i] = m[i] * b1 + g[i] * (1.0 - b1);
                        v[i] = v[i] * b2 + g[i] * g[i] * (1.0 - b2);
                        let adjusted = (m[i] * scale_m) / ((v[i] * scale_v).sqrt() + eps);
                        p[i] = p[i] * decay - adjusted * lr;
                    }
                });
        }
    }
}

/// Saving (and resuming from) a training checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpointing<'a> {
    /// Written atomically after every epoch.
    pub path: &'a Path,
    /// Continue from `path` if it exists (it must come from the same settings and model).
    pub resume: bool,
    /// Return after this many epochs of this call (a time-boxed run; resume later).
    pub stop_after: Option<usize>,
}

const CHECKPOINT_KEY: &str = "frugal.train_checkpoint";

/// What a checkpoint holds beside the parameters and AdamW's moments: how far training got,
/// the settings it was made with (`O`, compared on resume) and the records so far (`R`).
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct CheckpointMeta<O, R> {
    pub epochs_done: usize,
    pub adam_steps: usize,
    pub opts: O,
    pub records: Vec<R>,
}

/// Writes `params`, `adam`'s moments and `meta` to a safetensors file (atomically).
pub(crate) fn save_checkpoint<O: serde::Serialize, R: serde::Serialize>(
    path: &Path,
    params: &[Vec<f32>],
    adam: &AdamW,
    meta: &CheckpointMeta<O, R>,
) -> Result<()> {
    let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu);
    let mut tensors = Vec::with_capacity(3 * params.len());
    for (k, p) in params.iter().enumerate() {
        tensors.push((format!("param.{k}"), t(p)?));
        tensors.push((format!("adam_m.{k}"), t(&adam.m[k])?));
        tensors.push((format!("adam_v.{k}"), t(&adam.v[k])?));
    }
    let mut md = BTreeMap::new();
    md.insert(
        CHECKPOINT_KEY.to_string(),
        serde_json::to_string(meta).expect("checkpoint metadata serializes"),
    );
    frugal_models::convert::write_f32_safetensors(path, &[], &md, &tensors)?;
    Ok(())
}

/// The settings a checkpoint file was made with (`None`: not a checkpoint of this kind).
pub(crate) fn checkpoint_opts<O: serde::de::DeserializeOwned>(f: &SafetensorsFile) -> Option<O> {
    #[derive(serde::Deserialize)]
    struct WithOpts<O> {
        opts: O,
    }
    let j = f.header.metadata.get(CHECKPOINT_KEY)?;
    serde_json::from_str::<WithOpts<O>>(j).ok().map(|c| c.opts)
}

/// Restores `params` and `adam` from a checkpoint made with the same settings (`opts`) and
/// parameter sizes.
pub(crate) fn load_checkpoint<O, R>(
    path: &Path,
    params: &mut [Vec<f32>],
    adam: &mut AdamW,
    opts: &O,
) -> Result<CheckpointMeta<O, R>>
where
    O: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    R: serde::de::DeserializeOwned,
{
    let bad = |m: String| Error::BadOptions(format!("checkpoint {}: {m}", path.display()));
    let f = SafetensorsFile::open(path)?;
    let meta: CheckpointMeta<O, R> = f
        .header
        .metadata
        .get(CHECKPOINT_KEY)
        .ok_or_else(|| bad("not a Frugal training checkpoint".into()))
        .and_then(|j| serde_json::from_str(j).map_err(|e| bad(e.to_string())))?;
    if &meta.opts != opts {
        return Err(bad(format!(
            "made with other settings ({:?}); resume with the same ones",
            meta.opts
        )));
    }
    for (k, param) in params.iter_mut().enumerate() {
        let shape = vec![param.len() as u64];
        for prefix in ["param", "adam_m", "adam_v"] {
            let name = format!("{prefix}.{k}");
            let t = f
                .tensor(&name)
                .filter(|t| t.dtype == Dtype::F32 && t.shape == shape)
                .ok_or_else(|| {
                    bad(format!(
                        "{name} missing or not F32 {shape:?}: another model"
                    ))
                })?;
            let dst = match prefix {
                "param" => &mut *param,
                "adam_m" => &mut adam.m[k],
                _ => &mut adam.v[k],
            };
            for (d, b) in dst.iter_mut().zip(f.tensor_data(t).chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
    if f.tensor(&format!("param.{}", params.len())).is_some() {
        return Err(bad("more parameters than this model has".into()));
    }
    adam.t = meta.adam_steps;
    Ok(meta)
}

/// Mixup of a batch of flat images in place: image r becomes λ_r·x_r + (1 − λ_r)·x_{π(r)} for a
/// random permutation π of the batch, λ_r ~ U(0, 1). Returns the partners' labels and the λs.
fn mixup(x: &mut [f32], labels: &[u32], rng: &mut SplitMix64) -> (Vec<u32>, Vec<f32>) {
    let b = labels.len();
    let n = x.len() / b.max(1);
    let mut perm: Vec<usize> = (0..b).collect();
    shuffle(&mut perm, rng);
    let lam: Vec<f32> = (0..b).map(|_| rng.next_f64() as f32).collect();
    let orig = x.to_vec();
    for r in 0..b {
        let (a, p) = (
            &orig[r * n..(r + 1) * n],
            &orig[perm[r] * n..(perm[r] + 1) * n],
        );
        for ((o, &u), &v) in x[r * n..(r + 1) * n].iter_mut().zip(a).zip(p) {
            *o = lam[r] * u + (1.0 - lam[r]) * v;
        }
    }
    (perm.iter().map(|&p| labels[p]).collect(), lam)
}

/// Moves each `rows × cols` image of a flat batch by (dy, dx) drawn uniformly from
/// −`shift`..=`shift` (pixels moved in from outside are 0) and, with `flip`, mirrors it left to
/// right with probability ½.
fn augment(
    x: &mut [f32],
    rows: usize,
    cols: usize,
    shift: usize,
    flip: bool,
    rng: &mut SplitMix64,
) {
    let n = rows * cols;
    let span = 2 * shift as u64 + 1;
    let mut orig = vec![0f32; n];
    for img in x.chunks_mut(n.max(1)) {
        let dy = (rng.next_u64() % span) as isize - shift as isize;
        let dx = (rng.next_u64() % span) as isize - shift as isize;
        let mirror = flip && rng.next_u64() & 1 == 1;
        orig.copy_from_slice(img);
        for r in 0..rows {
            for c in 0..cols {
                // Output (r, c) shows the source pixel (r − dy, c' − dx), where c' is c mirrored.
                let cm = if mirror { cols - 1 - c } else { c };
                let (sr, sc) = (r as isize - dy, cm as isize - dx);
                img[r * cols + c] =
                    if (0..rows as isize).contains(&sr) && (0..cols as isize).contains(&sc) {
                        orig[sr as usize * cols + sc as usize]
                    } else {
                        0.0
                    };
            }
        }
    }
}

/// The start of a checkpointed training run: when `checkpoint` asks to resume and its file
/// exists, `params`, `adam` and `vars` are restored, the epoch order's shuffles replayed (they
/// are a pure function of the seed), and the epochs done and records so far returned; else
/// `(0, [])`.
pub(crate) fn resume_training<O, R>(
    checkpoint: Option<&Checkpointing>,
    params: &mut [Vec<f32>],
    adam: &mut AdamW,
    vars: &[Var],
    opts: &O,
    order: &mut [usize],
    rng: &mut SplitMix64,
) -> Result<(usize, Vec<R>)>
where
    O: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    R: serde::de::DeserializeOwned,
{
    let Some(c) = checkpoint.filter(|c| c.resume && c.path.exists()) else {
        return Ok((0, Vec::new()));
    };
    let meta: CheckpointMeta<O, R> = load_checkpoint(c.path, params, adam, opts)?;
    set_vars(vars, params)?;
    for _ in 0..meta.epochs_done {
        shuffle(order, rng);
    }
    Ok((meta.epochs_done, meta.records))
}

/// Whether a time-boxed run (`stop_after` epochs per call) stops before `epoch`.
pub(crate) fn stop_before(checkpoint: Option<&Checkpointing>, epoch: usize, first: usize) -> bool {
    checkpoint
        .and_then(|c| c.stop_after)
        .is_some_and(|k| epoch - first >= k)
}

/// Saves the checkpoint after `epochs_done` epochs, when there is one.
pub(crate) fn end_epoch<O: serde::Serialize + Clone, R: serde::Serialize + Clone>(
    checkpoint: Option<&Checkpointing>,
    epochs_done: usize,
    params: &[Vec<f32>],
    adam: &AdamW,
    opts: &O,
    records: &[R],
) -> Result<()> {
    let Some(c) = checkpoint else {
        return Ok(());
    };
    // Every rank holds the same parameters: rank 0 writes the one checkpoint.
    if !frugal_dist::is_root() {
        return Ok(());
    }
    let meta = CheckpointMeta {
        epochs_done,
        adam_steps: adam.t,
        opts: opts.clone(),
        records: records.to_vec(),
    };
    save_checkpoint(c.path, params, adam, &meta)
}

/// Sums every rank's gradients (and scalars: losses) in rank order, in place, the same on
/// every rank.
pub(crate) fn sum_over_ranks(
    comm: &dyn frugal_dist::Comm,
    grads: &mut [Vec<f32>],
    scalars: &mut [f64],
) -> Result<()> {
    let n: usize = grads.iter().map(Vec::len).sum();
    let ns = scalars.len();
    let mut mine = Vec::with_capacity(8 * ns + 4 * n);
    scalars
        .iter()
        .for_each(|x| mine.extend_from_slice(&x.to_le_bytes()));
    for g in grads.iter() {
        g.iter()
            .for_each(|v| mine.extend_from_slice(&v.to_le_bytes()));
    }
    let all = comm.allgather(&mine)?;
    scalars.iter_mut().for_each(|x| *x = 0.0);
    grads.iter_mut().for_each(|g| g.fill(0.0));
    for (rank, b) in all.iter().enumerate() {
        if b.len() != mine.len() {
            return Err(frugal_dist::Error::Protocol(format!(
                "rank {rank} sent {} bytes of gradients, expected {}",
                b.len(),
                mine.len()
            ))
            .into());
        }
        for (k, x) in scalars.iter_mut().enumerate() {
            *x += f64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        }
        let mut vals = b[8 * ns..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        for g in grads.iter_mut() {
            g.iter_mut().zip(vals.by_ref()).for_each(|(a, v)| *a += v);
        }
    }
    Ok(())
}

/// A seeded Fisher–Yates shuffle.
pub fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Writes `params` into the model's variables.
pub(crate) fn set_vars(vars: &[Var], params: &[Vec<f32>]) -> Result<()> {
    for (v, p) in vars.iter().zip(params) {
        v.set(&Tensor::from_slice(p, v.dims(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// Trains `model` (whose parameters are `vars`, as [`Cnn::init`] returns them) on `train` of
/// `set`, distilling from `teachers` when there are any (an ensemble's soft targets are the mean
/// of its members' logits, i.e. the renormalised geometric mean of their tempered distributions;
/// no teacher: labels alone). `masks` (one per var, 1 where a weight may be
/// non-zero) keep pruned weights at zero. With `checkpoint`, saves after every epoch and, when
/// resuming, continues from the saved epoch. `progress(epoch, batch, batches, loss)` after each
/// batch. Returns every epoch's record (the resumed ones included).
///
/// Each step runs the hand-written passes of [`frugal_models::cnn_kernels`] on flat buffers;
/// `vars` are updated after every epoch (and before returning).
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    model: &Cnn,
    vars: &[Var],
    teachers: &[&Cnn],
    set: &ImageSet,
    train: &[usize],
    opts: &TrainOptions,
    masks: Option<&[Option<Tensor>]>,
    checkpoint: Option<&Checkpointing>,
    progress: &dyn Fn(usize, usize, usize, f64),
) -> Result<Vec<EpochRecord>> {
    opts.validate()?;
    if train.is_empty() {
        return Err(Error::BadOptions("no training samples".into()));
    }
    let cfg = &model.config;
    if vars.len() != cfg.parameter_shapes().len() {
        return Err(Error::BadOptions(format!(
            "{} variables for a model with {} parameters",
            vars.len(),
            cfg.parameter_shapes().len()
        )));
    }
    let mut params: Vec<Vec<f32>> = vars
        .iter()
        .map(|v| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
        .collect::<Result<_>>()?;
    let masks: Vec<Option<Vec<f32>>> = match masks {
        Some(m) => m
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                    .transpose()
            })
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let teachers: Vec<(CnnConfig, Vec<Vec<f32>>)> = teachers
        .iter()
        .map(|t| Ok::<_, Error>((t.config.clone(), t.flat_parameters()?)))
        .collect::<Result<_>>()?;
    let shape = |c: &CnnConfig| (c.in_channels, c.height, c.width, c.n_classes);
    if let Some((c, _)) = teachers.iter().find(|(c, _)| shape(c) != shape(cfg)) {
        return Err(Error::BadOptions(format!(
            "a teacher of {:?} (channels, height, width, classes) for a student of {:?}",
            shape(c),
            shape(cfg)
        )));
    }
    let blocks = block_shapes(cfg);
    let attention = opts.attention_weight.filter(|_| !teachers.is_empty());
    if attention.is_some() {
        let pixels = |c: &CnnConfig| block_shapes(c).iter().map(|b| b.0).collect::<Vec<_>>();
        if let Some((c, _)) = teachers.iter().find(|(c, _)| pixels(c) != pixels(cfg)) {
            return Err(Error::BadOptions(format!(
                "attention transfer needs the teacher's conv blocks at the student's sizes: \
                 pixels per block {:?} (teacher) against {:?} (student)",
                pixels(c),
                pixels(cfg)
            )));
        }
    }
    // Per block: the teachers' mean attention maps, and ∂loss/∂(the student's block output).
    let mut teacher_maps: Vec<Vec<f64>> = vec![Vec::new(); blocks.len()];
    let (mut one_map, mut dblocks) = (Vec::new(), vec![Vec::new(); blocks.len()]);
    let mut teacher_logits = Vec::new();
    let mut adam = AdamW::new(&params, opts.weight_decay);
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0f32; p.len()]).collect();
    let (mut ws, mut teacher_ws) = (Workspace::default(), Workspace::default());
    let mut rng = SplitMix64(opts.seed);
    let mut order = train.to_vec();
    let batches = order.len().div_ceil(opts.batch);
    let total = batches * opts.epochs;
    let (first, mut records) = resume_training(
        checkpoint,
        &mut params,
        &mut adam,
        vars,
        opts,
        &mut order,
        &mut rng,
    )?;
    let mut dlogits = Vec::new();
    let comm = frugal_dist::world();
    for epoch in first..opts.epochs {
        if stop_before(checkpoint, epoch, first) {
            break;
        }
        let t0 = std::time::Instant::now();
        shuffle(&mut order, &mut rng);
        let mut sum = 0f64;
        for (b, chunk) in order.chunks(opts.batch).enumerate() {
            let lr = learning_rate(opts, epoch * batches + b, total);
            let (mut x, y) = batch_pixels(set, chunk);
            let step = (epoch * batches + b) as u64;
            if opts.shift > 0 || opts.flip {
                let mut r = SplitMix64(
                    opts.seed ^ 0x6175_676d_656e ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03),
                );
                augment(&mut x, set.rows, set.cols, opts.shift, opts.flip, &mut r);
            }
            // Mixup draws from a stream of its own per step: the batch order is the same with
            // and without it, and a resumed run draws the same.
            let mix = opts.mixup.then(|| {
                let mut r = SplitMix64(
                    opts.seed ^ 0x006d_6978_7570 ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                mixup(&mut x, &y, &mut r)
            });
            // Data-parallel under MPI: each rank takes its rows of the batch, its gradient is
            // scaled by its share of the batch, and the ranks' gradients are summed in rank
            // order, so every rank takes the same step. Alone, the rows are the whole batch.
            let rows = frugal_dist::shard(chunk.len(), comm.rank(), comm.size());
            let npix = x.len() / chunk.len().max(1);
            let xs = &x[rows.start * npix..rows.end * npix];
            let mut l = 0.0;
            if rows.is_empty() {
                grads.iter_mut().for_each(|g| g.fill(0.0));
            } else {
                teacher_logits.clear();
                teacher_maps.iter_mut().for_each(Vec::clear);
                for (tc, tp) in &teachers {
                    let t = forward(tc, tp, xs, rows.len(), &mut teacher_ws);
                    if teacher_logits.is_empty() {
                        teacher_logits.extend_from_slice(t);
                    } else {
                        teacher_logits.iter_mut().zip(t).for_each(|(a, b)| *a += b);
                    }
                    if attention.is_some() {
                        let outs = teacher_ws.block_outputs();
                        for ((m, out), (pixels, c)) in
                            teacher_maps.iter_mut().zip(outs).zip(block_shapes(tc))
                        {
                            one_map.clear();
                            attention_maps(out, pixels, c, &mut one_map);
                            if m.is_empty() {
                                m.extend_from_slice(&one_map);
                            } else {
                                m.iter_mut().zip(&one_map).for_each(|(a, b)| *a += b);
                            }
                        }
                    }
                }
                let k = 1.0 / teachers.len().max(1) as f32;
                teacher_logits.iter_mut().for_each(|a| *a *= k);
                teacher_maps
                    .iter_mut()
                    .for_each(|m| m.iter_mut().for_each(|a| *a *= f64::from(k)));
                let t = (!teachers.is_empty()).then_some(&teacher_logits[..]);
                let s = forward(cfg, &params, xs, rows.len(), &mut ws);
                dlogits.resize(s.len(), 0.0);
                l = distillation_loss_grad(
                    s,
                    t,
                    &y[rows.clone()],
                    mix.as_ref()
                        .map(|(l, w)| (&l[rows.clone()], &w[rows.clone()])),
                    opts,
                    &mut dlogits,
                );
                if let Some(beta) = attention {
                    let beta = if opts.attention_decay {
                        beta * (1.0 - step as f64 / total as f64)
                    } else {
                        beta
                    };
                    let outs = ws.block_outputs();
                    for (((d, out), tm), &(pixels, c)) in
                        dblocks.iter_mut().zip(outs).zip(&teacher_maps).zip(&blocks)
                    {
                        l += attention_transfer_grad(out, tm, pixels, c, beta, d);
                    }
                }
                if comm.size() > 1 {
                    let share = rows.len() as f64 / chunk.len() as f64;
                    dlogits.iter_mut().for_each(|d| *d *= share as f32);
                    for d in &mut dblocks {
                        d.iter_mut().for_each(|d| *d *= share as f32);
                    }
                    l *= share;
                }
                // (Empty buffers, and so no terms, without attention transfer.)
                backward(cfg, &params, &mut ws, &dlogits, &dblocks, &mut grads);
            }
            if comm.size() > 1 {
                let mut s = [l];
                sum_over_ranks(comm, &mut grads, &mut s)?;
                l = s[0];
            }
            adam.step(&mut params, &grads, lr);
            for (p, m) in params.iter_mut().zip(&masks) {
                if let Some(m) = m {
                    // Exactly +0.0 where pruned (a product would leave -0.0 for negatives).
                    p.iter_mut().zip(m).for_each(|(p, &m)| {
                        if m == 0.0 {
                            *p = 0.0
                        }
                    });
                }
            }
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
        set_vars(vars, &params)?;
        end_epoch(checkpoint, epoch + 1, &params, &adam, opts, &records)?;
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

    /// The flat loss and gradient used by training against candle's autograd of
    /// [`distillation_loss`], with and without a teacher.
    #[test]
    fn flat_loss_gradient_matches_autograd() {
        let s: Vec<f32> = (0..4 * 5)
            .map(|i| ((i * 37) % 11) as f32 / 3.0 - 1.5)
            .collect();
        let te: Vec<f32> = (0..4 * 5)
            .map(|i| ((i * 53) % 7) as f32 / 2.0 - 1.0)
            .collect();
        let labels = [3u32, 0, 4, 1];
        let y = Tensor::from_vec(labels.to_vec(), 4, &Device::Cpu).unwrap();
        for teacher in [None, Some(&te[..])] {
            let var = Var::from_tensor(&t(&s, (4, 5))).unwrap();
            let tt = teacher.map(|v| t(v, (4, 5)));
            let loss = distillation_loss(var.as_tensor(), tt.as_ref(), &y, 2.5, 0.6).unwrap();
            let g: Vec<f32> = loss
                .backward()
                .unwrap()
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut d = vec![0f32; 20];
            let opts = TrainOptions {
                temperature: 2.5,
                alpha: 0.6,
                ..Default::default()
            };
            let l = distillation_loss_grad(&s, teacher, &labels, None, &opts, &mut d);
            assert!((l - scalar(&loss)).abs() < 1e-5, "{l} vs {}", scalar(&loss));
            for (a, b) in d.iter().zip(&g) {
                assert!((a - b).abs() < 1e-6, "gradient {a} vs autograd {b}");
            }
        }
    }

    /// Hinton's KL is TCKD + (1 − p_y)·NCKD (Zhao et al. 2022, eq. 5), and the decoupled
    /// loss's gradient is its derivative (central differences in f64 of the loss it returns).
    #[test]
    fn decoupled_kd_decomposes_the_kl_and_its_gradient_is_the_derivative() {
        let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..6)
            .map(|r| {
                let f = |m: usize, o: f32| -> Vec<f32> {
                    (0..5)
                        .map(|i| ((i * m + r * 7) % 13) as f32 * o - 2.0)
                        .collect()
                };
                (f(37, 0.4), f(53, 0.9 + r as f32))
            })
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (r, (s, te)) in rows.iter().enumerate() {
            let y = r % 5;
            let mut p = DecoupledKd::default();
            decoupled_kd(s, te, y, 2.5, &mut a, &mut b, &mut p);
            // `a` and `b` now hold log-softmax(s/T) and log-softmax(t/T).
            let kl: f64 = (0..5).map(|j| b[j].exp() * (b[j] - a[j])).sum();
            let hinton = p.tckd + (1.0 - p.teacher_target) * p.nckd;
            assert!((kl - hinton).abs() < 1e-12, "{kl} vs {hinton}");
            assert!(p.tckd >= 0.0 && p.nckd >= 0.0);
        }
        // A teacher sure of the target: p_y rounds to 1 in f64, yet every figure is finite.
        let mut p = DecoupledKd::default();
        decoupled_kd(
            &[0.0; 3],
            &[900.0, 0.0, 1.0],
            0,
            1.0,
            &mut a,
            &mut b,
            &mut p,
        );
        assert!(
            p.tckd.is_finite() && p.nckd.is_finite() && p.nckd > 0.0,
            "{p:?}"
        );

        let s: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
        let te: Vec<f32> = rows.iter().flat_map(|r| r.1.clone()).collect();
        let labels: Vec<u32> = (0..6).map(|r| (r % 5) as u32).collect();
        let hinton_opts = TrainOptions {
            temperature: 2.5,
            alpha: 0.6,
            ..Default::default()
        };
        let opts = TrainOptions {
            nckd_weight: Some(8.0),
            ..hinton_opts.clone()
        };
        let loss = |s: &[f32], d: &mut [f32]| {
            distillation_loss_grad(s, Some(&te), &labels, None, &opts, d)
        };
        let mut d = vec![0f32; s.len()];
        let mut scratch = vec![0f32; s.len()];
        let l0 = loss(&s, &mut d);
        let mut hinton = vec![0f32; s.len()];
        let lh = distillation_loss_grad(&s, Some(&te), &labels, None, &hinton_opts, &mut hinton);
        assert!(
            (l0 - lh).abs() > 1e-3,
            "β = 8 should differ from Hinton's loss"
        );
        let h = 1e-2f32;
        for i in 0..s.len() {
            let mut sp = s.clone();
            sp[i] += h;
            let up = loss(&sp, &mut scratch);
            sp[i] -= 2.0 * h;
            let down = loss(&sp, &mut scratch);
            let numeric = (up - down) / f64::from(2.0 * h);
            assert!(
                (numeric - f64::from(d[i])).abs() < 2e-4,
                "logit {i}: gradient {} vs central difference {numeric}",
                d[i]
            );
        }
        let mixed = TrainOptions {
            nckd_weight: Some(8.0),
            mixup: true,
            ..Default::default()
        };
        assert!(mixed.validate().is_err());
    }

    /// [`train_classifier`] on `set`'s images `train`, no pruning masks, no progress.
    fn train_quiet(
        m: &Cnn,
        vars: &[Var],
        teachers: &[&Cnn],
        set: &ImageSet,
        train: &[usize],
        opts: &TrainOptions,
        checkpoint: Option<&Checkpointing>,
    ) -> Result<Vec<EpochRecord>> {
        train_classifier(
            m,
            vars,
            teachers,
            set,
            train,
            opts,
            None,
            checkpoint,
            &|_, _, _, _| {},
        )
    }

    /// An interrupted run resumed from its checkpoint ends with exactly the weights of an
    /// uninterrupted one; a checkpoint from other settings is refused.
    #[test]
    fn resumed_training_is_bit_identical() {
        let set = frugal_formats::digits::embedded_digits();
        let train: Vec<usize> = (0..300).collect();
        let cfg = frugal_models::cnn::CnnConfig {
            conv_channels: vec![4],
            hidden: 16,
            ..frugal_models::cnn::CnnConfig::classic(8, 8, 10)
        };
        let opts = TrainOptions {
            epochs: 3,
            batch: 50,
            ..Default::default()
        };
        let params = |vars: &[Var]| -> Vec<Vec<f32>> {
            vars.iter()
                .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        let run = |ck: Option<&Checkpointing>| {
            let (m, vars) = Cnn::init(cfg.clone(), 1, &Device::Cpu).unwrap();
            let r = train_quiet(&m, &vars, &[], &set, &train, &opts, ck).unwrap();
            (params(&vars), r)
        };
        let (straight, rs) = run(None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let first = Checkpointing {
            path: &path,
            resume: true,
            stop_after: Some(1),
        };
        let (_, r1) = run(Some(&first));
        assert_eq!(r1.len(), 1);
        let rest = Checkpointing {
            stop_after: None,
            ..first.clone()
        };
        let (resumed, r2) = run(Some(&rest));
        assert_eq!(r2.len(), 3);
        assert_eq!(resumed, straight, "weights differ after resuming");
        for (a, b) in rs.iter().zip(&r2) {
            assert_eq!(a.loss, b.loss);
        }
        // Other settings: refused, not silently mixed.
        let (m, vars) = Cnn::init(cfg.clone(), 1, &Device::Cpu).unwrap();
        let other = TrainOptions {
            lr: 1e-2,
            ..opts.clone()
        };
        let e = train_quiet(&m, &vars, &[], &set, &train, &other, Some(&rest)).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
        // A teacher that does not classify the student's images into its classes: refused.
        let (odd, _) = Cnn::init(
            frugal_models::cnn::CnnConfig::classic(8, 8, 5),
            2,
            &Device::Cpu,
        )
        .unwrap();
        let e = train_quiet(&m, &vars, &[&odd], &set, &train, &opts, None).unwrap_err();
        assert!(e.to_string().contains("a teacher of (1, 8, 8, 5)"), "{e}");
    }

    /// Attention maps have unit norm per image (zeros for an all-zero output); the attention
    /// term vanishes, gradient included, when the maps agree, and its gradient is the
    /// derivative of its loss (central differences) when they do not.
    #[test]
    fn attention_transfer_gradient_is_the_derivative() {
        let (pixels, channels) = (4, 3);
        let a: Vec<f32> = (0..2 * pixels * channels)
            .map(|i| ((i * 37) % 11) as f32 / 4.0 - 0.5)
            .map(|v| v.max(0.0))
            .collect();
        let other: Vec<f32> = (0..a.len()).map(|i| ((i * 53) % 7) as f32 / 3.0).collect();
        let mut maps = Vec::new();
        attention_maps(&a, pixels, channels, &mut maps);
        for img in maps.chunks(pixels) {
            let n: f64 = img.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-12, "norm² {n}");
        }
        let mut zero = Vec::new();
        attention_maps(&[0.0; 12], pixels, channels, &mut zero);
        assert_eq!(zero, vec![0.0; pixels]);

        let mut d = Vec::new();
        let same = attention_transfer_grad(&a, &maps, pixels, channels, 10.0, &mut d);
        assert!(
            same.abs() < 1e-20 && d.iter().all(|g| g.abs() < 1e-7),
            "{same} {d:?}"
        );

        let mut teacher = Vec::new();
        attention_maps(&other, pixels, channels, &mut teacher);
        let l0 = attention_transfer_grad(&a, &teacher, pixels, channels, 10.0, &mut d);
        assert!(l0 > 1e-3, "{l0}");
        let mut scratch = Vec::new();
        let h = 1e-3f32;
        for i in 0..a.len() {
            let mut ap = a.clone();
            ap[i] += h;
            let up = attention_transfer_grad(&ap, &teacher, pixels, channels, 10.0, &mut scratch);
            ap[i] -= 2.0 * h;
            let down = attention_transfer_grad(&ap, &teacher, pixels, channels, 10.0, &mut scratch);
            let numeric = (up - down) / f64::from(2.0 * h);
            assert!(
                (numeric - f64::from(d[i])).abs() < 1e-4,
                "element {i}: gradient {} vs central difference {numeric}",
                d[i]
            );
        }
    }

    /// With a teacher, the attention term changes training; without one, or with a teacher
    /// whose conv blocks are of other sizes, it is off or refused.
    #[test]
    fn attention_transfer_trains_and_checks_the_teacher() {
        let set = frugal_formats::digits::embedded_digits();
        let train: Vec<usize> = (0..200).collect();
        let cfg = |conv: Vec<usize>| frugal_models::cnn::CnnConfig {
            conv_channels: conv,
            hidden: 16,
            ..frugal_models::cnn::CnnConfig::classic(8, 8, 10)
        };
        let (teacher, _) = Cnn::init(cfg(vec![8, 8]), 5, &Device::Cpu).unwrap();
        let run_with = |teachers: &[&Cnn], attention: Option<f64>, decay: bool| {
            let (m, vars) = Cnn::init(cfg(vec![4, 4]), 1, &Device::Cpu).unwrap();
            let opts = TrainOptions {
                epochs: 2,
                batch: 50,
                attention_weight: attention,
                attention_decay: decay,
                ..Default::default()
            };
            let r = train_quiet(&m, &vars, teachers, &set, &train, &opts, None);
            r.map(|r| r.iter().map(|e| e.loss).collect::<Vec<_>>())
        };
        let run = |teachers: &[&Cnn], attention: Option<f64>| run_with(teachers, attention, false);
        let kd = run(&[&teacher], None).unwrap();
        let at = run(&[&teacher], Some(1000.0)).unwrap();
        assert!(at.iter().zip(&kd).all(|(a, k)| a > k), "{at:?} vs {kd:?}");
        // A decaying weight starts equal and ends smaller: less attention loss by epoch 2.
        let decaying = run_with(&[&teacher], Some(1000.0), true).unwrap();
        assert!(
            decaying[1] < at[1] && decaying[1] > kd[1],
            "{decaying:?} vs {at:?}, {kd:?}"
        );
        assert_eq!(run(&[], Some(1000.0)).unwrap(), run(&[], None).unwrap());
        let (one_block, _) = Cnn::init(cfg(vec![8]), 5, &Device::Cpu).unwrap();
        let e = run(&[&one_block], Some(1000.0)).unwrap_err();
        assert!(
            e.to_string().contains("pixels per block [16] (teacher)"),
            "{e}"
        );
    }

    #[test]
    fn augmentation_moves_and_mirrors_within_bounds() {
        // A 5×7 image with one lit pixel at (2, 1): every draw keeps it (a move of ≤ 1 cannot
        // push it out), moved by at most 1 row and column, mirrored columns included.
        let (rows, cols) = (5, 7);
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = SplitMix64(3);
        for _ in 0..400 {
            let mut x = vec![0f32; rows * cols];
            x[2 * cols + 1] = 1.0;
            super::augment(&mut x, rows, cols, 1, true, &mut rng);
            let lit: Vec<usize> = (0..x.len()).filter(|&i| x[i] != 0.0).collect();
            assert_eq!(lit.len(), 1, "one pixel stays lit");
            let (r, c) = (lit[0] / cols, lit[0] % cols);
            assert!((1..=3).contains(&r));
            assert!((0..=2).contains(&c) || (4..=6).contains(&c), "column {c}");
            seen.insert((r, c));
        }
        assert_eq!(seen.len(), 18, "all 9 moves, mirrored or not");
        // Off: untouched.
        let mut x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        super::augment(&mut x, rows, cols, 0, false, &mut rng);
        assert!(x.iter().enumerate().all(|(i, &v)| v == i as f32));
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
