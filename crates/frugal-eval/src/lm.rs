//! Perplexity and KL divergence of a decoder on a token stream.

use crate::{Error, Result};
use frugal_dist::Comm;
use frugal_models::llama::Llama;
use rayon::prelude::*;
use serde::Serialize;

/// The largest evaluation text read (about 200 M tokens, far past any evaluation).
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Options of a language-model evaluation.
#[derive(Debug, Clone)]
pub struct LmEvalOptions {
    /// Tokens per chunk (llama.cpp's `-c`).
    pub ctx: usize,
    /// At most this many chunks (llama.cpp's `--chunks`); `None` for all.
    pub max_chunks: Option<usize>,
    /// Replace each chunk's first token with this BOS (when the vocabulary adds one).
    pub bos: Option<u32>,
    /// Chunks a streamed model ([`LmSource::File`]) runs through its blocks together; `None`
    /// for as many as [`STREAM_HIDDEN_BYTES`] of hidden states hold. Results do not depend on
    /// it.
    pub group_chunks: Option<usize>,
    /// How the ranks of a distributed run share the work (one process: no difference).
    pub split: RankSplit,
}

frugal_formats::name_table! {
    "lowercase";
    /// How the ranks of an MPI evaluation share the work. The figures are the single process's
    /// either way, bit for bit.
    #[derive(Default)]
    pub enum RankSplit {
        /// Each rank scores its share of the chunks through every block (the default: the
        /// ranks work at once from the start).
        #[default]
        Chunks,
        /// Each rank runs only its share of the blocks (rank r: blocks `⌊rL/N⌋..`) on every
        /// chunk and hands the states on to the next rank, which is the only one to read its
        /// blocks from the file; the last rank scores. Groups of chunks follow each other
        /// through the ranks as through a pipeline. Models streamed from files only.
        Blocks,
    }
}

type ChunkMap = std::collections::HashMap<(Vec<u32>, usize), std::sync::Arc<Vec<f32>>>;

/// The reference model's logits at the scored positions of the chunks evaluated so far, so that
/// later evaluations against the same reference on the same chunks skip its forward pass — and,
/// through [`eval_lm_files_cached`], its loading. `frugal tune` judges every candidate against
/// one reference on the same two texts. A chunk is known by its tokens and context, so a cache
/// may serve several texts; it must serve one reference model only (the caller's promise, which
/// [`eval_lm_files_cached`] checks by path). At most `max_bytes` of logits are kept; chunks
/// beyond that are computed every time.
pub struct ReferenceCache {
    reference: Option<std::path::PathBuf>,
    max_bytes: usize,
    /// Keyed by the chunk's tokens and first scored position: exact, no hash collision.
    rows: std::sync::Mutex<ChunkMap>,
    hits: std::sync::atomic::AtomicUsize,
}

impl ReferenceCache {
    /// A cache for the reference in `reference` (a path, checked by [`eval_lm_files_cached`];
    /// `None` for one used with [`eval_lm`] directly), keeping at most `max_bytes` of logits.
    pub fn new(reference: Option<std::path::PathBuf>, max_bytes: usize) -> Self {
        ReferenceCache {
            reference,
            max_bytes,
            rows: Default::default(),
            hits: Default::default(),
        }
    }

    /// Chunks served from the cache so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of logits kept.
    pub fn bytes(&self) -> usize {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.values().map(|r| r.len() * 4).sum()
    }

    fn get(&self, chunk: &[u32], first: usize) -> Option<std::sync::Arc<Vec<f32>>> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.get(&(chunk.to_vec(), first)).cloned()
    }

    /// [`Self::get`] for an evaluation, counted in [`Self::hits`] when kept.
    fn hit(&self, chunk: &[u32], first: usize) -> Option<std::sync::Arc<Vec<f32>>> {
        let kept = self.get(chunk, first);
        if kept.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        kept
    }

    fn put(&self, chunk: &[u32], first: usize, logits: Vec<f32>) -> std::sync::Arc<Vec<f32>> {
        let logits = std::sync::Arc::new(logits);
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = rows.values().map(|r| r.len() * 4).sum();
        if kept + logits.len() * 4 <= self.max_bytes {
            rows.insert((chunk.to_vec(), first), logits.clone());
        }
        logits
    }

    /// Whether every chunk an evaluation of `tokens` with `opts` scores is kept.
    pub fn has_all(&self, tokens: &[u32], opts: &LmEvalOptions) -> bool {
        let Some(chunks) = chunks_of(tokens, opts) else {
            return false;
        };
        chunks.iter().all(|c| self.get(c, opts.ctx / 2).is_some())
    }
}

/// The chunks an evaluation of `tokens` with `opts` scores, BOS applied (`None` when the
/// options or the text do not allow one; [`eval_lm`] says why).
fn chunks_of(tokens: &[u32], opts: &LmEvalOptions) -> Option<Vec<Vec<u32>>> {
    let ctx = opts.ctx;
    if ctx < 4 || tokens.len() < ctx.saturating_mul(2) || opts.max_chunks == Some(0) {
        return None;
    }
    let n = (tokens.len() / ctx).min(opts.max_chunks.unwrap_or(usize::MAX));
    Some(
        (0..n)
            .map(|c| {
                let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
                if let Some(bos) = opts.bos {
                    chunk[0] = bos;
                }
                chunk
            })
            .collect(),
    )
}

/// What the evaluation measured. Uncertainties are one standard error, as llama.cpp prints them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
pub struct LmEvalResult {
    pub ctx: usize,
    pub n_chunks: usize,
    /// Tokens in the whole text.
    pub n_tokens_text: usize,
    /// Tokens scored (`n_chunks × (ctx − 1 − ctx/2)`).
    pub n_scored: usize,
    pub ppl: f64,
    pub ppl_se: f64,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
    pub kld: Option<KldStats>,
}

/// Statistics against a reference model, with llama.cpp's definitions.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
pub struct KldStats {
    pub reference_ppl: f64,
    pub reference_ppl_se: f64,
    /// Mean KL(P_ref ‖ P_model) per token, nats.
    pub mean: f64,
    pub mean_se: f64,
    /// The upper end of the mean's 95 % interval over chunks (Student t on the chunks' mean
    /// KL divergences; tokens within a chunk are not independent, so this is wider than the
    /// per-token `mean_se` gives): the figure a guarantee is checked against. None for one
    /// chunk (nothing bounds the mean).
    #[serde(default)]
    pub mean_upper95: Option<f64>,
    pub median: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    /// Share of tokens where both models' most likely token agrees, percent.
    pub same_top1_pct: f64,
    pub same_top1_se_pct: f64,
    /// Root mean square of p_model(next) − p_ref(next), percent.
    pub rms_dp_pct: f64,
    pub rms_dp_se_pct: f64,
    /// Mean of p_model(next) − p_ref(next), percent.
    pub mean_dp_pct: f64,
}

/// Per-token results from one row of logits.
#[derive(Debug, Clone, Copy)]
struct TokenScore {
    nll: f64,
    p: f64,
    top: u32,
}

/// One chunk's per-token scores, the reference's, and the KL divergences.
type ChunkScores = (Vec<TokenScore>, Vec<TokenScore>, Vec<f64>);

/// A chunk's scores as bytes for another rank: three counted lists.
fn chunk_to_wire((s, rs, kl): &ChunkScores) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + 20 * (s.len() + rs.len()) + 8 * kl.len());
    for list in [s, rs] {
        v.extend_from_slice(&(list.len() as u64).to_le_bytes());
        for t in list {
            v.extend_from_slice(&t.nll.to_le_bytes());
            v.extend_from_slice(&t.p.to_le_bytes());
            v.extend_from_slice(&t.top.to_le_bytes());
        }
    }
    v.extend_from_slice(&(kl.len() as u64).to_le_bytes());
    kl.iter()
        .for_each(|k| v.extend_from_slice(&k.to_le_bytes()));
    v
}

/// The inverse of [`chunk_to_wire`], every count checked against the bytes.
fn chunk_from_wire(b: &[u8]) -> Result<ChunkScores> {
    let bad = || {
        Error::from(frugal_dist::Error::Protocol(
            "chunk scores cut short or too long".into(),
        ))
    };
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= b.len())
            .ok_or_else(bad)?;
        let s = &b[pos..end];
        pos = end;
        Ok(s)
    };
    let f64_of = |s: &[u8]| f64::from_le_bytes(s.try_into().expect("8 bytes"));
    // A count is trusted only as far as the message could hold that many items.
    let count = |raw: &[u8], each: usize| -> Result<usize> {
        usize::try_from(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
            .ok()
            .filter(|n| n.checked_mul(each).is_some_and(|t| t <= b.len()))
            .ok_or_else(bad)
    };
    let mut lists = Vec::with_capacity(2);
    for _ in 0..2 {
        let n = count(take(8)?, 20)?;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            let t = take(20)?;
            list.push(TokenScore {
                nll: f64_of(&t[..8]),
                p: f64_of(&t[8..16]),
                top: u32::from_le_bytes(t[16..].try_into().expect("4 bytes")),
            });
        }
        lists.push(list);
    }
    let n = count(take(8)?, 8)?;
    let kl = (0..n)
        .map(|_| take(8).map(f64_of))
        .collect::<Result<Vec<_>>>()?;
    if pos != b.len() {
        return Err(bad());
    }
    let rs = lists.pop().expect("two lists");
    let s = lists.pop().expect("two lists");
    Ok((s, rs, kl))
}

/// log-softmax at `tok` as llama.cpp computes it (f32 max, f64 sum of f32 exponentials).
fn score_row(row: &[f32], tok: u32) -> TokenScore {
    let (mut max, mut top) = (row[0], 0u32);
    for (i, &v) in row.iter().enumerate() {
        if v > max {
            max = v;
            top = i as u32;
        }
    }
    let sum: f64 = row.iter().map(|&v| f64::from((v - max).exp())).sum();
    let lp = f64::from(row[tok as usize] - max) - sum.ln();
    TokenScore {
        nll: -lp,
        p: lp.exp(),
        top,
    }
}

/// KL(P ‖ Q) for one row of reference logits `p` and model logits `q`, in f64.
fn kl_row(p: &[f32], q: &[f32]) -> f64 {
    let lse = |r: &[f32]| {
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        f64::from(m)
            + r.iter()
                .map(|&v| (f64::from(v) - f64::from(m)).exp())
                .sum::<f64>()
                .ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = f64::from(a) - lp;
            la.exp() * (la - (f64::from(b) - lq))
        })
        .sum::<f64>()
}

/// Mean and standard error of the mean as llama.cpp computes them.
/// The upper end of the 95 % Student-t interval of the mean of `xs` (none for fewer than two
/// values: nothing bounds the mean).
pub fn upper95(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    Some(mean + crate::t95(xs.len() - 1) * (var / n).sqrt())
}

fn mean_se(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let n = n as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    (
        mean,
        if n > 1.0 && var > 0.0 {
            (var / (n - 1.0)).sqrt()
        } else {
            0.0
        },
    )
}

/// The value at quantile `q` of sorted values, as llama.cpp's `percentile` (linear interpolation).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Where an evaluated model's logits come from.
#[derive(Clone, Copy)]
pub enum LmSource<'a> {
    /// A model in memory: each chunk one whole forward pass.
    Loaded(&'a Llama),
    /// A GGUF file streamed block by block: the tokens embedded from the file's rows, every
    /// chunk of a group through one decoded block before the next block is decoded, so the
    /// weights held at once are one block, then the output layer — never the whole model (the same arithmetic as [`LmSource::Loaded`],
    /// bit for bit: `tests/stream_eval.rs`).
    File(
        &'a frugal_formats::gguf::GgufFile,
        frugal_models::llama::LoadOptions,
    ),
}

impl LmSource<'_> {
    fn config(&self) -> Result<std::borrow::Cow<'_, frugal_models::llama::LlamaConfig>> {
        Ok(match self {
            LmSource::Loaded(m) => std::borrow::Cow::Borrowed(&m.config),
            LmSource::File(f, _) => {
                std::borrow::Cow::Owned(frugal_models::llama::LlamaConfig::from_gguf(f)?)
            }
        })
    }

    /// Blocks a group of chunks is streamed through on this rank of `stages` (0 for a model
    /// in memory).
    fn streamed_blocks(&self, stages: &dyn Comm) -> Result<usize> {
        Ok(match self {
            LmSource::Loaded(_) => 0,
            LmSource::File(..) => {
                frugal_dist::shard(self.config()?.n_layer, stages.rank(), stages.size()).len()
            }
        })
    }

    /// Ready to give the logits of chunks `group` (for a file: streamed through every block,
    /// calling `step()` after each). The blocks are split across the ranks of `stages` (a
    /// pipeline; [`frugal_dist::Single`] runs them all): rank r runs blocks
    /// `shard(n_layer, r, size)` on the states rank r − 1 hands it (rank 0 embeds the tokens)
    /// and hands them on; only the last rank finishes the pass and is ready (`None` on the
    /// others). Every rank of `stages` calls it, in the same order.
    fn ready(
        &self,
        stages: &dyn Comm,
        chunks: &[Vec<u32>],
        group: std::ops::Range<usize>,
        first: usize,
        step: &(dyn Fn() + Sync),
    ) -> Result<Option<Ready<'_>>> {
        let (f, load) = match *self {
            LmSource::Loaded(m) => return Ok(Some(Ready::Loaded(m))),
            LmSource::File(f, load) => (f, load),
        };
        let (rank, size) = (stages.rank(), stages.size());
        let dev = candle_core::Device::Cpu;
        let mut model = Llama::load_bare_shell(f, &dev)?;
        let ctx = chunks[group.start].len();
        let mut xs = if rank == 0 {
            chunks[group.clone()]
                .iter()
                .map(|c| model.embed_from(f, c))
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            let bytes = stages.exchange(rank - 1, &[])?;
            states_from_wire(&bytes, group.len(), ctx, model.config.n_embd)?
        };
        let attn = model.attn_ctx(ctx)?;
        for i in frugal_dist::shard(model.config.n_layer, rank, size) {
            let block = Llama::load_block(f, &model.config, i, load, &dev)?;
            xs = xs
                .par_iter()
                .map(|x| Ok(model.block_forward_with(&block, x, &attn, false)?.0))
                .collect::<Result<Vec<_>>>()?;
            step();
        }
        if rank + 1 < size {
            stages.exchange(rank + 1, &states_to_wire(&xs)?)?;
            return Ok(None);
        }
        let hidden = xs
            .iter()
            .map(|x| Ok(model.final_norm(&x.narrow(0, first, ctx - first)?)?))
            .collect::<Result<Vec<_>>>()?;
        drop(xs);
        model.load_output(f, load)?;
        Ok(Some(Ready::Streamed {
            model: Box::new(model),
            start: group.start,
            hidden,
        }))
    }
}

/// A group's hidden states `[ctx, d]` each, as the bytes one rank hands the next (f32, little
/// endian, chunk after chunk: the values exactly).
fn states_to_wire(xs: &[candle_core::Tensor]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for x in xs {
        for v in x.flatten_all()?.to_vec1::<f32>()? {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// The inverse of [`states_to_wire`] for `n` chunks of `ctx` × `d`; any other length is refused.
fn states_from_wire(
    bytes: &[u8],
    n: usize,
    ctx: usize,
    d: usize,
) -> Result<Vec<candle_core::Tensor>> {
    let per = ctx * d * 4;
    if bytes.len() != n * per {
        return Err(Error::Dist(frugal_dist::Error::Protocol(format!(
            "{} bytes of hidden states for {n} chunks of {ctx} × {d}",
            bytes.len()
        ))));
    }
    bytes
        .chunks_exact(per)
        .map(|b| {
            let v: Vec<f32> = b
                .chunks_exact(4)
                .map(|w| f32::from_le_bytes(w.try_into().expect("4 bytes")))
                .collect();
            Ok(candle_core::Tensor::from_vec(
                v,
                (ctx, d),
                &candle_core::Device::Cpu,
            )?)
        })
        .collect()
}

/// A model ready to give chunks' logits.
enum Ready<'a> {
    Loaded(&'a Llama),
    /// A shell holding the output layer, and the final-normed hidden states at the scored
    /// positions of chunks `start..`.
    Streamed {
        model: Box<Llama>,
        start: usize,
        hidden: Vec<candle_core::Tensor>,
    },
}

impl Ready<'_> {
    /// Logits `[(ctx − first), n_vocab]` of chunk `c`, flattened.
    fn logits(&self, c: usize, chunk: &[u32], first: usize) -> Result<Vec<f32>> {
        let t = match self {
            Ready::Loaded(m) => m.forward_from(chunk, first)?,
            Ready::Streamed {
                model,
                start,
                hidden,
            } => model.logits_of(&hidden[c - start])?,
        };
        Ok(t.flatten_all()?.to_vec1()?)
    }
}

/// Bytes of hidden states and reference logits an evaluation keeps at once (one group of
/// chunks).
pub const STREAM_HIDDEN_BYTES: usize = 512 << 20;

/// Evaluates `model` on `tokens`, optionally against `reference` (same vocabulary). Calls
/// `progress(done, total)` after each chunk scored and each block a streamed model's group of
/// chunks passes. With `cache`, the reference's logits of a chunk
/// are taken from it when kept there, and kept when computed; against a cache alone (no
/// `reference`), every chunk must be kept.
pub fn eval_lm(
    model: LmSource,
    reference: Option<LmSource>,
    cache: Option<&ReferenceCache>,
    tokens: &[u32],
    opts: &LmEvalOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<LmEvalResult> {
    let config = model.config()?;
    let ctx = opts.ctx;
    if ctx < 4 || !ctx.is_multiple_of(2) {
        return Err(Error::BadCtx {
            ctx,
            reason: "must be even and at least 4".into(),
        });
    }
    if ctx > config.n_ctx_train {
        return Err(Error::BadCtx {
            ctx,
            reason: format!(
                "exceeds the model's training context {}",
                config.n_ctx_train
            ),
        });
    }
    if let Some(r) = &reference {
        let rv = r.config()?.n_vocab;
        if rv != config.n_vocab {
            return Err(Error::Mismatch(format!(
                "vocabularies of {} and {rv} tokens",
                config.n_vocab
            )));
        }
    }
    if opts.max_chunks == Some(0) {
        return Err(Error::BadCtx {
            ctx,
            reason: "--chunks must be at least 1".into(),
        });
    }
    let needed = ctx.saturating_mul(2);
    if tokens.len() < needed {
        return Err(Error::TextTooShort {
            n_tokens: tokens.len(),
            needed,
        });
    }
    // The same chunks a cache is asked about ([`ReferenceCache::has_all`]).
    let chunks = chunks_of(tokens, opts).ok_or_else(|| Error::BadCtx {
        ctx,
        reason: "no chunk to score".into(),
    })?;
    let n_chunks = chunks.len();
    let first = ctx / 2;
    let n_vocab = config.n_vocab;
    // Chunks are independent: they run in parallel (each also uses parallel GEMM), which keeps
    // both cores busy through the single-threaded parts of a forward pass. Results are
    // collected in chunk order, so the sums below do not depend on scheduling.
    //
    // Each rank (one alone) scores its share of the chunks ([`frugal_dist::shard`]); the
    // per-chunk results are gathered in chunk order, so every sum and percentile below is the
    // single process's, bit for bit. With the blocks split instead ([`RankSplit::Blocks`]),
    // every rank takes every chunk through its blocks and the last rank scores them all.
    let comm = frugal_dist::world();
    let by_blocks = opts.split == RankSplit::Blocks && comm.size() > 1;
    if by_blocks {
        let in_memory =
            matches!(model, LmSource::Loaded(_)) || matches!(reference, Some(LmSource::Loaded(_)));
        if in_memory || cache.is_some() {
            return Err(Error::Split(
                if in_memory {
                    "a model in memory holds every block"
                } else {
                    "a reference cache is kept by the rank that scores"
                }
                .into(),
            ));
        }
    }
    let stages: &dyn Comm = if by_blocks {
        comm
    } else {
        &frugal_dist::Single
    };
    let scores_here = stages.rank() + 1 == stages.size();
    //
    // The chunks run in groups: in each, the reference's logits first (taken from the cache
    // where kept there), then the model's, so one output layer is in memory at a time, beside
    // the group's hidden states and reference logits, which together fit
    // [`STREAM_HIDDEN_BYTES`]. Progress counts each group's block passes (streamed sources)
    // and each chunk scored.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mine = if by_blocks {
        0..n_chunks
    } else {
        frugal_dist::shard(n_chunks, comm.rank(), comm.size())
    };
    let scored = (ctx - 1 - first) * n_vocab;
    let per_chunk_bytes = 4 * (ctx * config.n_embd + if reference.is_some() { scored } else { 0 });
    // With the blocks split, at least two groups per rank keep the pipeline full (a rank
    // starts the next group while the later ranks finish this one).
    let pipelined = if by_blocks {
        n_chunks.div_ceil(2 * comm.size())
    } else {
        usize::MAX
    };
    let group_len = opts
        .group_chunks
        .unwrap_or((STREAM_HIDDEN_BYTES / per_chunk_bytes.max(1)).min(pipelined))
        .max(1);
    let n_groups = mine.len().div_ceil(group_len);
    let passes = model.streamed_blocks(stages)?
        + match &reference {
            Some(r) => r.streamed_blocks(stages)?,
            None => 0,
        };
    let total = if scores_here { mine.len() } else { 0 } + n_groups * passes;
    let step = || {
        progress(
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            total,
        )
    };
    type Logits = std::sync::Arc<Vec<f32>>;
    // The reference's logits of chunk `c` at the scored positions: kept, or computed by `r`.
    let reference_logits = |r: Option<&Ready>, c: usize| -> Result<Option<Logits>> {
        let chunk = &chunks[c];
        Ok(match (cache.and_then(|k| k.hit(chunk, first)), r) {
            (Some(kept), _) => Some(kept),
            (None, Some(r)) => {
                let mut rl = r.logits(c, chunk, first)?;
                rl.truncate(scored);
                Some(match cache {
                    Some(k) => k.put(chunk, first, rl),
                    None => std::sync::Arc::new(rl),
                })
            }
            (None, None) if cache.is_some() => {
                return Err(Error::Mismatch(format!(
                    "the reference's logits of chunk {c} are not cached and there is no reference model"
                )))
            }
            (None, None) => None,
        })
    };
    let score_chunk = |m: &Ready, rl: Option<&Logits>, c: usize| -> Result<ChunkScores> {
        let chunk = &chunks[c];
        let targets = &tokens[c * ctx + first + 1..(c + 1) * ctx];
        let logits = m.logits(c, chunk, first)?;
        let rows = &logits[..scored];
        let s: Vec<TokenScore> = rows
            .chunks(n_vocab)
            .zip(targets)
            .map(|(r, &t)| score_row(r, t))
            .collect();
        let (mut rs, mut kl) = (Vec::new(), Vec::new());
        if let Some(rl) = rl {
            if rl.len() != scored {
                return Err(Error::Mismatch(format!(
                    "cached reference logits of {} values for {scored} ({} positions × {n_vocab})",
                    rl.len(),
                    ctx - 1 - first
                )));
            }
            let rrows = &rl[..];
            rs = rrows
                .chunks(n_vocab)
                .zip(targets)
                .map(|(r, &t)| score_row(r, t))
                .collect();
            kl = rrows
                .chunks(n_vocab)
                .zip(rows.chunks(n_vocab))
                .map(|(p, q)| kl_row(p, q))
                .collect();
        }
        // Finite logits give a finite loss: anything else is a broken model, not a figure.
        for (which, scores) in [("model", &s), ("reference", &rs)] {
            if let Some(i) = scores.iter().position(|t| !t.nll.is_finite()) {
                return Err(Error::NonFinite {
                    which,
                    chunk: c,
                    position: first + i,
                });
            }
        }
        step();
        Ok((s, rs, kl))
    };
    // The scores of chunks `range`, as wire bytes (none on a rank of `stages` that does not
    // score).
    let run_groups = |range: std::ops::Range<usize>| -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(range.len());
        let mut start = range.start;
        while start < range.end {
            let group = start..(start + group_len).min(range.end);
            start = group.end;
            // The reference runs only when some chunk of the group is not cached.
            let cached = |c: usize| cache.is_some_and(|k| k.get(&chunks[c], first).is_some());
            let r = match &reference {
                Some(src) if !group.clone().all(cached) => {
                    src.ready(stages, &chunks, group.clone(), first, &step)?
                }
                Some(src) => {
                    // Its block passes are not needed: counted as done.
                    (0..src.streamed_blocks(stages)?).for_each(|_| step());
                    None
                }
                None => None,
            };
            // (`None` for every chunk on a rank that does not score: it has no reference pass.)
            let rls = group
                .clone()
                .into_par_iter()
                .map(|c| reference_logits(r.as_ref(), c))
                .collect::<Result<Vec<_>>>()?;
            drop(r);
            let Some(m) = model.ready(stages, &chunks, group.clone(), first, &step)? else {
                continue;
            };
            out.extend(
                group
                    .clone()
                    .into_par_iter()
                    .map(|c| {
                        score_chunk(&m, rls[c - group.start].as_ref(), c).map(|s| chunk_to_wire(&s))
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok(out)
    };
    let wire = if by_blocks {
        let mine = run_groups(0..n_chunks)?;
        frugal_dist::exchange_owned(
            comm,
            n_chunks,
            mine.into_iter().enumerate().collect(),
            false,
        )?
        .expect("every rank receives the items")
    } else {
        frugal_dist::gather_items::<Error>(comm, n_chunks, &mut |mine| run_groups(mine))?
    };
    let per_chunk = wire
        .iter()
        .map(|b| chunk_from_wire(b))
        .collect::<Result<Vec<_>>>()?;
    let mut scores: Vec<TokenScore> = Vec::new();
    let mut ref_scores: Vec<TokenScore> = Vec::new();
    let mut klds: Vec<f64> = Vec::new();
    let mut chunk_klds: Vec<f64> = Vec::new();
    for (s, rs, kl) in per_chunk {
        if !kl.is_empty() {
            chunk_klds.push(kl.iter().sum::<f64>() / kl.len() as f64);
        }
        scores.extend(s);
        ref_scores.extend(rs);
        klds.extend(kl);
    }
    let ppl_of = |s: &[TokenScore]| {
        // Summed in token order, so results do not depend on thread count.
        let (sum, sum2) = s
            .iter()
            .fold((0.0, 0.0), |(a, b), t| (a + t.nll, b + t.nll * t.nll));
        let (nll, se) = mean_se(sum, sum2, s.len());
        (nll, nll.exp(), se * nll.exp())
    };
    let (nll, ppl, ppl_se) = ppl_of(&scores);
    let kld = (reference.is_some() || cache.is_some()).then(|| {
        let n = klds.len();
        let (ref_nll, ref_ppl, ref_se) = ppl_of(&ref_scores);
        let _ = ref_nll;
        let (mean, mean_se_) = mean_se(klds.iter().sum(), klds.iter().map(|k| k * k).sum(), n);
        let mut sorted = klds.clone();
        sorted.sort_by(f64::total_cmp);
        let same = scores
            .iter()
            .zip(&ref_scores)
            .filter(|(a, b)| a.top == b.top)
            .count() as f64
            / n as f64;
        let dps: Vec<f64> = scores
            .iter()
            .zip(&ref_scores)
            .map(|(a, b)| a.p - b.p)
            .collect();
        let (dp_mean, _) = mean_se(dps.iter().sum(), dps.iter().map(|d| d * d).sum(), n);
        let (dp2_mean, dp2_se) = mean_se(
            dps.iter().map(|d| d * d).sum(),
            dps.iter().map(|d| d.powi(4)).sum(),
            n,
        );
        let rms = dp2_mean.sqrt();
        KldStats {
            reference_ppl: ref_ppl,
            reference_ppl_se: ref_se,
            mean,
            mean_se: mean_se_,
            mean_upper95: upper95(&chunk_klds),
            median: percentile(&sorted, 0.5),
            p99: percentile(&sorted, 0.99),
            p99_9: percentile(&sorted, 0.999),
            max: *sorted.last().unwrap_or(&f64::NAN),
            same_top1_pct: 100.0 * same,
            same_top1_se_pct: 100.0 * (same * (1.0 - same) / (n as f64 - 1.0)).sqrt(),
            rms_dp_pct: 100.0 * rms,
            // Delta method: se(√m) = se(m) / (2√m).
            rms_dp_se_pct: if rms > 0.0 {
                100.0 * dp2_se / (2.0 * rms)
            } else {
                0.0
            },
            mean_dp_pct: 100.0 * dp_mean,
        }
    });
    Ok(LmEvalResult {
        ctx,
        n_chunks,
        n_tokens_text: tokens.len(),
        n_scored: scores.len(),
        ppl,
        ppl_se,
        nll,
        kld,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_row_matches_a_plain_log_softmax() {
        let row = [1.0f32, 3.0, -2.0, 0.5];
        let z: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
        let s = score_row(&row, 2);
        assert!((s.nll - (z.ln() + 2.0)).abs() < 1e-6);
        assert_eq!(s.top, 1);
        assert!((s.p - (-2.0f64).exp() / z).abs() < 1e-7);
    }

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        let p = [0.1f32, 2.0, -1.0];
        assert!(kl_row(&p, &p).abs() < 1e-12);
        let q = [0.3f32, 1.0, -1.0];
        // Reference value computed by hand from the definition.
        let sm = |r: &[f32]| {
            let z: f64 = r.iter().map(|&v| f64::from(v).exp()).sum();
            r.iter()
                .map(|&v| f64::from(v).exp() / z)
                .collect::<Vec<_>>()
        };
        let (pp, qq) = (sm(&p), sm(&q));
        let want: f64 = pp.iter().zip(&qq).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((kl_row(&p, &q) - want).abs() < 1e-9);
    }

    /// The cache knows a chunk by its tokens (BOS applied) and context, keeps no more than its
    /// bound, and says whether an evaluation's chunks are all kept.
    #[test]
    fn reference_cache_keys_chunks_and_keeps_its_bound() {
        let tokens: Vec<u32> = (0..20).collect();
        let opts = LmEvalOptions {
            ctx: 8,
            max_chunks: None,
            bos: Some(1),
            group_chunks: None,
            split: RankSplit::Chunks,
        };
        let chunks = chunks_of(&tokens, &opts).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1][0], 1, "BOS replaces the first token");
        // Room for one chunk of 3 positions × 2 values.
        let k = ReferenceCache::new(None, 6 * 4);
        assert!(!k.has_all(&tokens, &opts));
        k.put(&chunks[0], 4, vec![0.5; 6]);
        k.put(&chunks[1], 4, vec![0.25; 6]);
        assert_eq!(k.bytes(), 24, "the second chunk is over the bound");
        assert_eq!(k.get(&chunks[0], 4).unwrap()[0], 0.5);
        assert!(k.get(&chunks[1], 4).is_none());
        assert!(
            k.get(&chunks[0], 3).is_none(),
            "another context is another chunk"
        );
        let one = LmEvalOptions {
            max_chunks: Some(1),
            ..opts.clone()
        };
        assert!(k.has_all(&tokens, &one) && !k.has_all(&tokens, &opts));
        let no_bos = LmEvalOptions { bos: None, ..one };
        assert!(!k.has_all(&tokens, &no_bos));
        assert!(
            !k.has_all(&tokens[..10], &opts),
            "too short a text has no chunks"
        );
    }

    #[test]
    fn percentile_interpolates() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.99) - 3.96).abs() < 1e-12);
    }
}

/// A whole `frugal eval` run on files.
#[derive(Debug, Clone)]
pub struct LmEvalFiles {
    pub model: std::path::PathBuf,
    pub reference: Option<std::path::PathBuf>,
    pub text: std::path::PathBuf,
    pub opts_ctx: usize,
    pub max_chunks: Option<usize>,
    /// How weights are held and multiplied (`LoadOptions::GGML` to compare with llama.cpp).
    pub load: frugal_models::llama::LoadOptions,
    /// How the ranks of an MPI run share the work.
    pub split: RankSplit,
}

impl LmEvalFiles {
    /// The peak memory of this evaluation ([`eval_lm`] on the streamed files), estimated from
    /// the shapes before it starts: the larger of a group's block passes (its states, twice
    /// while they move, one decoded block, each thread's chunk through it, the reference's
    /// logits kept for the group) and its scoring (an output layer in F32, the group's final
    /// states, the kept logits, each thread's logits of a chunk).
    pub fn memory_plan(&self) -> Result<frugal_models::memory::MemoryPlan> {
        use frugal_formats::gguf::GgufFile;
        use frugal_models::llama::LlamaConfig;
        use frugal_models::memory::{self, MemoryPlan};
        let f = GgufFile::open(&self.model).map_err(frugal_models::Error::from)?;
        let c = LlamaConfig::from_gguf(&f)?;
        let rf = match &self.reference {
            Some(p) => Some(GgufFile::open(p).map_err(frugal_models::Error::from)?),
            None => None,
        };
        let ctx = self.opts_ctx as u64;
        let first = ctx / 2;
        let scored = ctx.saturating_sub(1 + first) * c.n_vocab as u64;
        let per_chunk = 4 * (ctx * c.n_embd as u64 + if rf.is_some() { scored } else { 0 });
        let group = (STREAM_HIDDEN_BYTES as u64 / per_chunk.max(1))
            .max(1)
            .min(self.max_chunks.unwrap_or(usize::MAX) as u64);
        let threads = (rayon::current_num_threads() as u64).min(group);
        let mut block = memory::largest_block_f32_bytes(&f, &c);
        let mut output = memory::output_f32_bytes(&f, &c);
        if let Some(rf) = &rf {
            let rc = LlamaConfig::from_gguf(rf)?;
            block = block.max(memory::largest_block_f32_bytes(rf, &rc));
            output = output.max(memory::output_f32_bytes(rf, &rc));
        }
        let kept = if rf.is_some() { 4 * group * scored } else { 0 };
        let mut passes = MemoryPlan::new();
        passes
            .add(
                format!("the states of {group} chunks, twice"),
                2 * group * 4 * ctx * c.n_embd as u64,
            )
            .add("one block in F32 (and a stored copy)", block)
            .add(
                format!("{threads} chunks' passes through it"),
                threads * memory::block_pass_bytes(&c, self.opts_ctx),
            )
            .add("the reference's logits of the group", kept);
        let mut scoring = MemoryPlan::new();
        scoring
            .add("an output layer in F32 (and its stored copy)", output)
            .add(
                "the group's final states",
                group * 4 * (ctx - first) * c.n_embd as u64,
            )
            .add("the reference's logits of the group", kept)
            .add(
                format!("{threads} chunks' logits, twice"),
                threads * 2 * 4 * (ctx - first) * c.n_vocab as u64,
            );
        Ok(passes.max(scoring))
    }
}

/// The report of [`eval_lm_files`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LmEvalReport {
    pub model: String,
    pub reference: Option<String>,
    pub text: String,
    pub tokenizer_pre: String,
    #[serde(flatten)]
    pub result: LmEvalResult,
    /// Wall time of the forward passes and scoring, seconds: the weights' decoding, which the
    /// block-by-block streaming interleaves with the passes, is in it; opening the files and
    /// tokenizing are not.
    pub eval_seconds: f64,
    /// Tokens processed by the evaluated model per second (`n_chunks × ctx / eval_seconds`;
    /// with a reference, both models' passes are in the time, unless the reference's logits
    /// came from a [`ReferenceCache`]).
    pub tokens_per_second: f64,
    pub threads: usize,
}

/// Checks, before any work, that an evaluation of `model` on `text` with `ctx` tokens per chunk
/// can run: `ctx` even, at least 4 and within the model's training context, and the text at
/// least two chunks long in the model's tokens (only the model's header and tokenizer are read).
pub fn check_eval_text(model: &std::path::Path, text: &std::path::Path, ctx: usize) -> Result<()> {
    use frugal_formats::gguf::GgufFile;
    use frugal_models::tokenizer::GgufTokenizer;
    let f = GgufFile::open(model).map_err(frugal_models::Error::from)?;
    let config = frugal_models::llama::LlamaConfig::from_gguf(&f)?;
    if ctx < 4 || !ctx.is_multiple_of(2) || ctx > config.n_ctx_train {
        return Err(Error::BadCtx {
            ctx,
            reason: format!(
                "must be even, at least 4 and at most the model's training context {}",
                config.n_ctx_train
            ),
        });
    }
    let tok = GgufTokenizer::from_gguf(&f)?;
    let text = frugal_formats::guard::read_text_capped(text, "evaluation text", MAX_TEXT_BYTES)
        .map_err(frugal_models::Error::from)?;
    let needed = ctx.saturating_mul(2);
    // A prefix is enough when it already holds two chunks (no token is longer than 64 bytes).
    let mut end = text.len().min(needed.saturating_mul(64));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut n = tok.encode(&text[..end], true)?.len();
    // One token more than needed: the prefix's last token may merge differently in the whole.
    if n <= needed && end < text.len() {
        n = tok.encode(&text, true)?.len();
    }
    if n < needed {
        return Err(Error::TextTooShort {
            n_tokens: n,
            needed,
        });
    }
    Ok(())
}

/// Loads the model (and reference), tokenizes the text with the model's tokenizer, evaluates.
pub fn eval_lm_files(
    job: &LmEvalFiles,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<LmEvalReport> {
    eval_lm_files_cached(job, None, progress)
}

/// [`eval_lm_files`] with the reference's logits taken from and kept in `cache` (made for
/// `job.reference`); the reference is not even loaded when every chunk is kept.
pub fn eval_lm_files_cached(
    job: &LmEvalFiles,
    cache: Option<&ReferenceCache>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<LmEvalReport> {
    use frugal_formats::gguf::GgufFile;
    use frugal_models::tokenizer::GgufTokenizer;
    let lopts = job.load;
    let f = GgufFile::open(&job.model).map_err(frugal_models::Error::from)?;
    let tok = GgufTokenizer::from_gguf(&f)?;
    if let Some(k) = cache {
        if k.reference != job.reference || job.reference.is_none() {
            return Err(Error::Mismatch(format!(
                "a cache of the reference {:?} used for {:?}",
                k.reference, job.reference
            )));
        }
    }
    let text = frugal_formats::guard::read_text_capped(&job.text, "text", MAX_TEXT_BYTES)
        .map_err(frugal_models::Error::from)?;
    let tokens = tok.encode(&text, true)?;
    let opts = LmEvalOptions {
        ctx: job.opts_ctx,
        max_chunks: job.max_chunks,
        bos: if tok.add_bos { tok.bos } else { None },
        group_chunks: None,
        split: job.split,
    };
    // Both models are streamed from their files, block by block (the reference is not even
    // opened when the cache holds every chunk).
    let rf = match &job.reference {
        Some(_) if cache.is_some_and(|k| k.has_all(&tokens, &opts)) => None,
        Some(p) => Some(GgufFile::open(p).map_err(frugal_models::Error::from)?),
        None => None,
    };
    let t0 = std::time::Instant::now();
    let result = eval_lm(
        LmSource::File(&f, lopts),
        rf.as_ref().map(|rf| LmSource::File(rf, lopts)),
        cache,
        &tokens,
        &opts,
        progress,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(LmEvalReport {
        model: job.model.display().to_string(),
        reference: job.reference.as_ref().map(|p| p.display().to_string()),
        text: job.text.display().to_string(),
        tokenizer_pre: tok.pre.clone(),
        tokens_per_second: (result.n_chunks * result.ctx) as f64 / secs,
        result,
        eval_seconds: secs,
        threads: rayon::current_num_threads(),
    })
}

impl LmEvalReport {
    pub fn to_text(&self) -> String {
        let r = &self.result;
        let mut s = format!(
            "model      {}\ntext       {} ({} tokens, tokenizer pre `{}`)\nchunks     {} × {} tokens, {} scored\nPPL        {:.4} ± {:.5}\n",
            self.model, self.text, r.n_tokens_text, self.tokenizer_pre, r.n_chunks, r.ctx, r.n_scored, r.ppl, r.ppl_se
        );
        if let (Some(k), Some(rp)) = (&r.kld, &self.reference) {
            s += &format!(
                "reference  {rp}: PPL {:.4} ± {:.5}\nKLD        mean {:.6} ± {:.6}, median {:.6}, 99% {:.6}, 99.9% {:.6}, max {:.6}\nsame top-1 {:.3} ± {:.3} %\nRMS Δp     {:.3} ± {:.3} % (mean Δp {:.3} %)\n",
                k.reference_ppl, k.reference_ppl_se, k.mean, k.mean_se, k.median, k.p99, k.p99_9, k.max, k.same_top1_pct, k.same_top1_se_pct, k.rms_dp_pct, k.rms_dp_se_pct, k.mean_dp_pct
            );
            if let Some(u) = k.mean_upper95 {
                s += &format!(
                    "           mean KLD ≤ {u:.6} at 95 % (Student t over the {} chunks' means)\n",
                    r.n_chunks
                );
            }
        }
        s += &format!(
            "speed      {:.1} tokens/s ({:.1} s, {} threads)\n",
            self.tokens_per_second, self.eval_seconds, self.threads
        );
        s
    }
}
