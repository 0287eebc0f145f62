//! Logit distillation of a Llama-family student (a pruned or smaller model with the teacher's
//! vocabulary) from its teacher on text. The teacher runs once: its `k` most likely next tokens
//! and their log-probabilities at every position are cached ([`TeacherTopK`]), and every epoch
//! of the student reads the cache. The student minimises, per position,
//!
//!   α · (−Σ_{j ∈ top-k} p_t(j) · log p_s(j)) + (1 − α) · (−log p_s(next token))
//!
//! — the cross-entropy against the teacher's distribution restricted to its top k (equal, up to
//! the teacher's constant entropy term, to the KL divergence on those tokens), plus the usual
//! next-token loss. Temperature 1, as is usual for language models. The student's MLP weights
//! (`ffn_gate`, `ffn_up`, `ffn_down` of every block) are trained with AdamW, one sequence per
//! step, linear warm-up then cosine decay; attention, norms and embeddings stay as they are.
//! Gradients come from candle's autograd through [`Llama::forward_train`]; the update is
//! [`crate::distill::AdamW`] on flat buffers, so that with a checkpoint file the weights,
//! AdamW's moments and the records are saved after every epoch and a resumed run continues bit
//! for bit where the interrupted one stopped.

use crate::distill::{
    end_epoch, resume_training, set_vars, shuffle, stop_before, AdamW, Checkpointing,
};
use crate::{Error, Result};
use candle_core::{Tensor, Var, D};
use frugal_formats::rng::SplitMix64;
use frugal_models::linear::Linear;
use frugal_models::llama::Llama;

/// Settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LmDistillOptions {
    pub epochs: usize,
    /// Teacher tokens cached per position.
    pub top_k: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up.
    pub warmup: f64,
    /// Weight α of the teacher's distribution (1 − α on the next token).
    pub alpha: f64,
    /// Seed of the order of the sequences.
    pub seed: u64,
    /// Sequences per optimizer step (their gradients averaged). Under MPI the ranks share each
    /// step's sequences.
    #[serde(default = "one")]
    pub batch: usize,
}

fn one() -> usize {
    1
}

impl Default for LmDistillOptions {
    fn default() -> Self {
        LmDistillOptions {
            epochs: 1,
            top_k: 64,
            lr: 5e-5,
            weight_decay: 0.0,
            warmup: 0.1,
            alpha: 0.9,
            seed: 0,
            batch: 1,
        }
    }
}

impl LmDistillOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadOptions(m));
        if self.epochs == 0 || self.top_k == 0 || self.batch == 0 {
            return bad("epochs, top-k and sequences per step must be positive".into());
        }
        crate::distill::check_schedule(self.lr, self.alpha, self.warmup)
    }
}

/// The teacher's top-k next-token log-probabilities at every position of every sequence.
#[derive(Debug, Clone)]
pub struct TeacherTopK {
    pub k: usize,
    pub seqs: Vec<Vec<u32>>,
    /// Per sequence, `[T·k]` token ids and their log-probabilities (most likely first).
    pub ids: Vec<Vec<u32>>,
    pub logp: Vec<Vec<f32>>,
}

impl TeacherTopK {
    /// Bytes held (the cache's cost instead of re-running the teacher every epoch).
    pub fn bytes(&self) -> usize {
        self.ids.iter().map(|v| v.len() * 8).sum()
    }
}

/// The peak memory of distilling `student` (trained) from `teacher` on `seqs` sequences of at
/// most `ctx` tokens, estimated from the shapes before anything is loaded: the larger of the
/// teacher's pass (its weights as stored, read in place from its file; one sequence through a
/// block and its logits; the cache growing) and the training (the student's frozen weights
/// read in place from its file, the largest decoded for a product and for its input's
/// gradient; its MLP weights in F32, their flat copy, gradients twice — candle's and the
/// step's sum —, AdamW's two moments and the updated weights; one sequence's autograd graph through every block — the
/// intermediates kept for the backward pass, 3.5 block passes' worth as measured on SmolLM2 at
/// 128, 256 and 512 tokens, BENCHMARKS.md; its logits, log-softmax and their gradients; the
/// teacher's cache).
pub fn memory_plan(
    student: &frugal_formats::gguf::GgufFile,
    teacher: &frugal_formats::gguf::GgufFile,
    seqs: usize,
    ctx: usize,
    top_k: usize,
) -> Result<frugal_models::memory::MemoryPlan> {
    use frugal_models::llama::LlamaConfig;
    use frugal_models::memory::{self, MemoryPlan};
    crate::refuse_fused(student, "LM distillation")?;
    let sc = LlamaConfig::from_gguf(student)?;
    let tc = LlamaConfig::from_gguf(teacher)?;
    let cache = (seqs * ctx * top_k * 8) as u64;
    let mut teach = MemoryPlan::new();
    teach
        .add(
            "the teacher's weights not read in place",
            memory::stored_model_bytes(teacher),
        )
        .add(
            "one sequence through a teacher block",
            memory::block_pass_bytes(&tc, ctx),
        )
        .add(
            "its logits and their softmax",
            2 * 4 * (ctx * tc.n_vocab) as u64,
        )
        .add("the teacher's top-k cache", cache);
    let is_mlp = |n: &str| {
        n.starts_with("blk.")
            && ["ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
                .iter()
                .any(|m| n.ends_with(m))
    };
    let mlp: u64 = student
        .header
        .tensors
        .iter()
        .filter(|t| is_mlp(&t.name))
        .map(|t| t.n_elements())
        .sum();
    // The frozen weights stay in the file; the largest is decoded for a product and again for
    // its input's gradient.
    let frozen = student
        .header
        .tensors
        .iter()
        .filter(|t| !is_mlp(&t.name) && t.dims.iter().filter(|&&d| d > 1).count() > 1)
        .map(|t| 4 * t.n_elements())
        .max()
        .unwrap_or(0);
    let mut train = MemoryPlan::new();
    train
        .add(
            "the student's weights not read in place",
            memory::stored_model_bytes(student),
        )
        .add("its largest frozen weight decoded, twice", 2 * frozen)
        .add(
            "its MLP weights in F32, their copy, gradients (twice), AdamW moments and the update",
            7 * 4 * mlp,
        )
        .add(
            "one sequence's autograd graph through every block",
            sc.n_layer as u64 * memory::block_pass_bytes(&sc, ctx) * 7 / 2,
        )
        .add(
            "its logits, log-softmax and their gradients",
            4 * 4 * (ctx * sc.n_vocab) as u64,
        )
        .add("the teacher's top-k cache", cache);
    Ok(teach.max(train))
}

/// Runs `teacher` once over `seqs` and keeps its top `k` log-probabilities per position.
/// `progress(done, total)`.
pub fn teacher_top_k(
    teacher: &Llama,
    seqs: Vec<Vec<u32>>,
    k: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<TeacherTopK> {
    let v = teacher.config.n_vocab;
    if k == 0 || k > v {
        return Err(Error::BadOptions(format!("top-k {k} must lie in 1..={v}")));
    }
    // Each rank (one alone) runs the teacher on its share of the sequences and every rank
    // receives the whole cache (k ids and log-probabilities per position: small).
    let comm = frugal_dist::world();
    let n = seqs.len();
    let mut done = 0;
    let items = frugal_dist::gather_items(comm, n, &mut |r| {
        let len = r.len();
        r.map(|s| {
            let (ids, logp) = top_k_of(teacher, &seqs[s], k)?;
            done += 1;
            progress(done, len);
            let mut b = Vec::with_capacity(ids.len() * 8);
            ids.iter()
                .for_each(|i| b.extend_from_slice(&i.to_le_bytes()));
            logp.iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            Ok(b)
        })
        .collect::<Result<Vec<_>>>()
    })?;
    let (mut ids, mut logp) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (seq, b) in seqs.iter().zip(items) {
        let m = seq.len() * k;
        if b.len() != m * 8 {
            return Err(frugal_dist::Error::Protocol(format!(
                "teacher cache of a {}-token sequence: {} bytes, expected {}",
                seq.len(),
                b.len(),
                m * 8
            ))
            .into());
        }
        let word = |c: &[u8]| <[u8; 4]>::try_from(c).expect("4 bytes");
        ids.push(
            b[..m * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(word(c)))
                .collect(),
        );
        logp.push(
            b[m * 4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(word(c)))
                .collect(),
        );
    }
    Ok(TeacherTopK { k, seqs, ids, logp })
}

/// The teacher's top `k` token ids and log-probabilities at every position of `seq` (most
/// likely first).
fn top_k_of(teacher: &Llama, seq: &[u32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let v = teacher.config.n_vocab;
    let logits: Vec<f32> = teacher.forward(seq)?.flatten_all()?.to_vec1()?;
    let (mut si, mut sl) = (
        Vec::with_capacity(seq.len() * k),
        Vec::with_capacity(seq.len() * k),
    );
    for row in logits.chunks(v) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z = f64::from(m)
            + row
                .iter()
                .map(|&x| f64::from(x - m).exp())
                .sum::<f64>()
                .ln();
        let mut idx: Vec<u32> = (0..v as u32).collect();
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        for j in idx {
            si.push(j);
            sl.push((f64::from(row[j as usize]) - z) as f32);
        }
    }
    Ok((si, sl))
}

/// One training step's record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LmStepRecord {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    /// KL divergence from the teacher on its top-k tokens, per position.
    pub kl_top_k: f64,
    /// Next-token cross-entropy, per predicted token.
    pub ce: f64,
}

/// Turns every block's MLP weights into trainable variables (the model's layers then read
/// them) and returns them.
fn mlp_vars(model: &mut Llama) -> Result<Vec<Var>> {
    let mut vars = Vec::new();
    for b in &mut model.blocks {
        for l in [&mut b.gate, &mut b.up, &mut b.down] {
            let var = Var::from_tensor(&l.weight_f32()?)?;
            *l = Linear::dense(l.name.clone(), var.as_tensor().clone(), None)?;
            vars.push(var);
        }
    }
    Ok(vars)
}

/// What a checkpoint must have been made with to be resumed: the same settings and the same
/// training data (by size; the teacher pass is deterministic and is run again on resume).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct LmCheckpointKey {
    opts: LmDistillOptions,
    sequences: usize,
    positions: usize,
    /// Which student the run started from (the caller's fingerprint of its file).
    student: String,
}

/// Whether the checkpoint at `path` was made by a run with these settings, data and student
/// (`Ok(false)` for another run's; an error only for an unreadable file).
pub fn checkpoint_matches(
    path: &std::path::Path,
    cache: &TeacherTopK,
    opts: &LmDistillOptions,
    student: &str,
) -> Result<bool> {
    let f = frugal_formats::safetensors::SafetensorsFile::open(path)?;
    let want = key(cache, opts, student);
    Ok(crate::distill::checkpoint_opts::<LmCheckpointKey>(&f).is_some_and(|k| k == want))
}

fn key(cache: &TeacherTopK, opts: &LmDistillOptions, student: &str) -> LmCheckpointKey {
    LmCheckpointKey {
        opts: opts.clone(),
        sequences: cache.seqs.len(),
        positions: cache.seqs.iter().map(Vec::len).sum(),
        student: student.to_string(),
    }
}

/// Distils `student` from the cached teacher: trains its MLP weights in place. With
/// `checkpoint`, saves after every epoch and, when resuming, continues from the saved epoch —
/// only a checkpoint made with the same settings, data and `student_id` (a fingerprint of the
/// student the run started from) is accepted. `progress(step, total, loss)` after every step.
/// Returns every step's record (the resumed ones included).
pub fn distill_lm(
    student: &mut Llama,
    student_id: &str,
    cache: &TeacherTopK,
    opts: &LmDistillOptions,
    checkpoint: Option<&Checkpointing>,
    progress: &dyn Fn(usize, usize, f64),
) -> Result<Vec<LmStepRecord>> {
    opts.validate()?;
    if cache.seqs.is_empty() {
        return Err(Error::BadOptions("no training sequences".into()));
    }
    let dev = student.device().clone();
    let vars = mlp_vars(student)?;
    let mut params: Vec<Vec<f32>> = vars
        .iter()
        .map(|v| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?))
        .collect::<Result<_>>()?;
    let mut adam = AdamW::new(&params, opts.weight_decay);
    let mut grads: Vec<Vec<f32>> = Vec::with_capacity(vars.len());
    let key = key(cache, opts, student_id);
    let mut order: Vec<usize> = (0..cache.seqs.len()).collect();
    let mut rng = SplitMix64(opts.seed);
    let comm = frugal_dist::world();
    if comm.size() > opts.batch {
        return Err(Error::BadOptions(format!(
            "{} ranks share each step's sequences: --seq-batch {} leaves some with none (give at least {})",
            comm.size(),
            opts.batch,
            comm.size()
        )));
    }
    let total = order.len().div_ceil(opts.batch) * opts.epochs;
    let (first, mut records) = resume_training(
        checkpoint,
        &mut params,
        &mut adam,
        &vars,
        &key,
        &mut order,
        &mut rng,
    )?;
    for epoch in first..opts.epochs {
        if stop_before(checkpoint, epoch, first) {
            break;
        }
        shuffle(&mut order, &mut rng);
        for batch in order.chunks(opts.batch) {
            // Nothing to learn from (sequences under 2 tokens): no step, on every rank alike.
            if batch.iter().all(|&s| cache.seqs[s].len() < 2) {
                continue;
            }
            let step = records.len();
            let lr = crate::distill::warmup_cosine(opts.lr, opts.warmup, step, total);
            // The step's loss is the mean over its sequences; under MPI each rank takes its
            // share of them and the gradients are summed over the ranks in rank order.
            let share = 1.0 / batch.len() as f64;
            let mine = frugal_dist::shard(batch.len(), comm.rank(), comm.size());
            grads.clear();
            grads.extend(vars.iter().map(|v| vec![0f32; v.elem_count()]));
            // Loss, KL on the top k, next-token cross-entropy: this rank's part of the means.
            let mut sums = [0f64; 3];
            for &s in &batch[mine] {
                let seq = &cache.seqs[s];
                let t = seq.len();
                if t < 2 {
                    continue;
                }
                let k = cache.k;
                let logits = student.forward_train(seq)?;
                let ls = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                let ids = Tensor::from_slice(&cache.ids[s], (t, k), &dev)?;
                let lt = Tensor::from_slice(&cache.logp[s], (t, k), &dev)?;
                let pt = lt.exp()?;
                let picked = ls.gather(&ids, 1)?;
                let soft = ((&pt * &picked)?.sum_all()? * (-1.0 / t as f64))?;
                let targets = Tensor::from_slice(&seq[1..], (t - 1, 1), &dev)?;
                let ce = (ls.narrow(0, 0, t - 1)?.gather(&targets, 1)?.mean_all()? * -1.0)?;
                let mut loss = ((&soft * opts.alpha)? + (&ce * (1.0 - opts.alpha))?)?;
                if batch.len() > 1 {
                    loss = (loss * share)?;
                }
                let scalar = |x: &Tensor| -> Result<f64> { Ok(f64::from(x.to_scalar::<f32>()?)) };
                let l = scalar(&loss)?;
                if !l.is_finite() {
                    return Err(Error::Numerical(format!(
                        "distillation loss became {l} at step {}",
                        step + 1
                    )));
                }
                let g = loss.backward()?;
                for (acc, v) in grads.iter_mut().zip(&vars) {
                    if let Some(d) = g.get(v.as_tensor()) {
                        let d: Vec<f32> = d.flatten_all()?.to_vec1()?;
                        acc.iter_mut().zip(d).for_each(|(a, x)| *a += x);
                    }
                }
                // KL on the top k = soft cross-entropy − the teacher's own Σ p·log p there.
                let teacher_term: f64 = cache.logp[s]
                    .iter()
                    .map(|&x| f64::from(x).exp() * f64::from(x))
                    .sum::<f64>()
                    / t as f64;
                sums[0] += l;
                sums[1] += (scalar(&soft)? + teacher_term) * share;
                sums[2] += scalar(&ce)? * share;
            }
            if comm.size() > 1 {
                crate::distill::sum_over_ranks(comm, &mut grads, &mut sums)?;
            }
            adam.step(&mut params, &grads, lr);
            set_vars(&vars, &params)?;
            records.push(LmStepRecord {
                step: step + 1,
                epoch: epoch + 1,
                loss: sums[0],
                kl_top_k: sums[1],
                ce: sums[2],
            });
            progress(step + 1, total, sums[0]);
        }
        end_epoch(checkpoint, epoch + 1, &params, &adam, &key, &records)?;
    }
    Ok(records)
}
