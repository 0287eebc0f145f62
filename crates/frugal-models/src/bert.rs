//! A BERT encoder (Devlin et al. 2019) with mean pooling, as sentence-transformers runs
//! all-MiniLM-L6-v2 (Reimers & Gurevych 2019): WordPiece tokens from `tokenizer.json`, post-LN
//! transformer layers with exact (erf) GELU, mean of the last hidden states over real tokens,
//! then L2 normalisation. Reference: Hugging Face `transformers` `modeling_bert.py` and
//! sentence-transformers' `Transformer` → `Pooling(mean)` → `Normalize` modules.

use crate::error::{Error, Result};
use crate::linear::Linear;
use candle_core::{DType, Device, Tensor, D};
use frugal_formats::safetensors::{Dtype, SafetensorsFile};
use std::path::{Path, PathBuf};

/// Hyperparameters from `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

/// One encoder layer.
#[derive(Debug, Clone)]
pub struct BertLayer {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub attn_out: Linear,
    pub attn_ln: (Tensor, Tensor),
    pub inter: Linear,
    pub out: Linear,
    pub out_ln: (Tensor, Tensor),
    /// The int8 integers and scales of `[q, k, v, attn_out, inter, out]` as stored in the
    /// file, each with the id of the weight tensor decoded from them: integer products are
    /// used only while a layer still holds that tensor (not after a compression method has
    /// replaced it).
    pub int8: [Option<StoredInt8>; 6],
}

/// An int8 weight as stored, for [`crate::int8_kernels`].
#[derive(Debug, Clone)]
pub struct StoredInt8 {
    pub weight_id: candle_core::TensorId,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
}

/// The encoder with its tokenizer.
pub struct Bert {
    pub config: BertConfig,
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub emb_ln: (Tensor, Tensor),
    pub layers: Vec<BertLayer>,
    tokenizer: tokenizers::Tokenizer,
    /// The same without truncation, for cutting long texts into passages.
    untruncated: tokenizers::Tokenizer,
    /// Longest input in tokens (sentence-transformers' `max_seq_length`).
    pub max_seq_len: usize,
    device: Device,
}

fn tensor(f: &SafetensorsFile, name: &str, dev: &Device) -> Result<Tensor> {
    let t = f.tensor(name).ok_or_else(|| Error::MissingTensor {
        path: f.path().to_path_buf(),
        name: name.to_string(),
    })?;
    if t.dtype != Dtype::F32 {
        return Err(Error::UnsupportedType {
            path: f.path().to_path_buf(),
            name: name.into(),
            dtype: t.dtype.to_string(),
        });
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    Ok(Tensor::from_raw_buffer(
        f.tensor_data(t),
        DType::F32,
        &shape,
        dev,
    )?)
}

fn layer_norm(x: &Tensor, (w, b): &(Tensor, Tensor), eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(y.broadcast_mul(w)?.broadcast_add(b)?)
}

impl Bert {
    /// Loads `model.safetensors`, `config.json`, `tokenizer.json` and, when present,
    /// `sentence_bert_config.json` from a sentence-transformers folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let p: PathBuf = dir.join(name);
            let bytes = frugal_formats::guard::read_capped(&p, name, 64 << 20)?;
            serde_json::from_slice(&bytes).map_err(|e| Error::BadMetadata {
                path: p,
                key: "(file)".into(),
                reason: e.to_string(),
            })
        };
        let cfg_v = read_json("config.json")?;
        let config: BertConfig = serde_json::from_value(cfg_v).map_err(|e| Error::BadMetadata {
            path: dir.join("config.json"),
            key: "(file)".into(),
            reason: e.to_string(),
        })?;
        if config.hidden_act != "gelu" {
            return Err(Error::BadMetadata {
                path: dir.join("config.json"),
                key: "hidden_act".into(),
                reason: format!("`{}` is not supported (gelu)", config.hidden_act),
            });
        }
        if config.num_attention_heads == 0
            || config.hidden_size == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
            || config.num_hidden_layers == 0
        {
            return Err(Error::BadMetadata {
                path: dir.join("config.json"),
                key: "num_attention_heads".into(),
                reason: format!(
                    "{} heads do not divide hidden size {}",
                    config.num_attention_heads, config.hidden_size
                ),
            });
        }
        let max_seq_len = read_json("sentence_bert_config.json")
            .ok()
            .and_then(|v| v.get("max_seq_length")?.as_u64())
            .map_or(config.max_position_embeddings, |v| v as usize)
            .min(config.max_position_embeddings);
        let f = SafetensorsFile::open(dir.join("model.safetensors"))?;
        let t = |n: &str| tensor(&f, n, device);
        let lin = |n: &str| -> Result<Linear> {
            Linear::dense(
                n,
                crate::int_weights::load_weight(&f, &format!("{n}.weight"), device)?,
                Some(t(&format!("{n}.bias"))?),
            )
        };
        let ln = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((t(&format!("{n}.weight"))?, t(&format!("{n}.bias"))?))
        };
        let stored = |lin: &Linear| -> Result<Option<StoredInt8>> {
            let crate::linear::Weight::Dense(w) = lin.weight() else {
                return Ok(None);
            };
            Ok(
                crate::int_weights::load_int8(&f, &format!("{}.weight", lin.name))?.map(
                    |(q, scale)| StoredInt8 {
                        weight_id: w.id(),
                        q,
                        scale,
                    },
                ),
            )
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let lins = [
                lin(&format!("{p}.attention.self.query"))?,
                lin(&format!("{p}.attention.self.key"))?,
                lin(&format!("{p}.attention.self.value"))?,
                lin(&format!("{p}.attention.output.dense"))?,
                lin(&format!("{p}.intermediate.dense"))?,
                lin(&format!("{p}.output.dense"))?,
            ];
            let int8 = [
                stored(&lins[0])?,
                stored(&lins[1])?,
                stored(&lins[2])?,
                stored(&lins[3])?,
                stored(&lins[4])?,
                stored(&lins[5])?,
            ];
            let [q, k, v, attn_out, inter, out] = lins;
            layers.push(BertLayer {
                q,
                k,
                v,
                attn_out,
                attn_ln: ln(&format!("{p}.attention.output.LayerNorm"))?,
                inter,
                out,
                out_ln: ln(&format!("{p}.output.LayerNorm"))?,
                int8,
            });
        }
        let tok_path = dir.join("tokenizer.json");
        let tok_bytes = frugal_formats::guard::read_capped(&tok_path, "tokenizer", 64 << 20)?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(&tok_bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        tokenizer.with_padding(None);
        let mut untruncated = tokenizer.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Bert {
            word: t("embeddings.word_embeddings.weight")?,
            position: t("embeddings.position_embeddings.weight")?,
            token_type: t("embeddings.token_type_embeddings.weight")?,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
            config,
            tokenizer,
            untruncated,
            max_seq_len,
            device: device.clone(),
        })
    }

    /// Every linear layer (the seam compression methods use).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.q,
                    &mut l.k,
                    &mut l.v,
                    &mut l.attn_out,
                    &mut l.inter,
                    &mut l.out,
                ]
            })
            .collect()
    }

    /// Token ids (with `[CLS]` … `[SEP]`, truncated to `max_seq_len`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Last hidden states `[B, T, H]` for a padded batch of token ids with its 0/1 mask `[B, T]`.
    pub fn hidden_states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = ids.dims2()?;
        let (nh, hd) = (c.num_attention_heads, c.hidden_size / c.num_attention_heads);
        let pos = Tensor::arange(0u32, t as u32, &self.device)?;
        let x = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, c.hidden_size))?;
        let x = x
            .broadcast_add(&self.position.index_select(&pos, 0)?)?
            .broadcast_add(&self.token_type.get(0)?)?;
        let mut x = layer_norm(&x, &self.emb_ln, c.layer_norm_eps)?;
        // Additive mask over keys: 0 for tokens, a large negative number for padding.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?.reshape((b, 1, 1, t))?;
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let heads = |lin: &Linear| -> Result<Tensor> {
                Ok(lin
                    .forward(&x)?
                    .reshape((b, t, nh, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (heads(&l.q)?, heads(&l.k)?, heads(&l.v)?);
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, c.hidden_size))?;
            x = layer_norm(
                &(l.attn_out.forward(&y)? + &x)?,
                &l.attn_ln,
                c.layer_norm_eps,
            )?;
            let h = l.inter.forward(&x)?.gelu_erf()?;
            x = layer_norm(&(l.out.forward(&h)? + &x)?, &l.out_ln, c.layer_norm_eps)?;
        }
        Ok(x)
    }

    /// Token ids of `text` without special tokens and without truncation (for cutting long
    /// texts into passages), and the `[CLS]`, `[SEP]` ids.
    pub fn tokenize_untruncated(&self, text: &str) -> Result<(Vec<u32>, u32, u32)> {
        let tok = &self.untruncated;
        let enc = tok
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let id = |t: &str| {
            tok.token_to_id(t)
                .ok_or_else(|| Error::Tokenizer(format!("no {t} token")))
        };
        Ok((enc.get_ids().to_vec(), id("[CLS]")?, id("[SEP]")?))
    }

    /// L2-normalised mean-pooled sentence embeddings `[n, H]`, computed in batches of `batch`
    /// sentences sorted by length (less padding), returned in input order.
    pub fn embed(&self, sentences: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| self.tokenize(s))
            .collect::<Result<_>>()?;
        self.embed_ids(&ids, batch)
    }

    /// [`Bert::embed`] on token ids (each with its special tokens, at most `max_seq_len` long).
    pub fn embed_ids(&self, ids: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        match self.native_weights()? {
            Some(w) => self.embed_groups(ids, batch, |group| {
                let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
                let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
                let x = crate::bert_kernels::hidden_states(&w, &seqs);
                Ok(crate::bert_kernels::mean_pool_normalize(
                    &x, &lens, w.hidden,
                ))
            }),
            None => self.embed_ids_candle(ids, batch),
        }
    }

    /// Checks `ids`, then embeds them in batches of `batch` sorted by length (less padding)
    /// with `embed_group` (given indices into `ids`), returned in input order.
    fn embed_groups(
        &self,
        ids: &[Vec<u32>],
        batch: usize,
        mut embed_group: impl FnMut(&[usize]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>> {
        if let Some(l) = ids
            .iter()
            .find(|i| i.len() > self.max_seq_len || i.is_empty())
        {
            return Err(Error::Tokenizer(format!(
                "a sequence of {} tokens (1 to {} allowed)",
                l.len(),
                self.max_seq_len
            )));
        }
        let n_vocab = self.word.dim(0)?;
        if let Some(&id) = ids.iter().flatten().find(|&&i| i as usize >= n_vocab) {
            return Err(Error::BadToken { id, n_vocab });
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for group in order.chunks(batch.max(1)) {
            for (&i, v) in group.iter().zip(embed_group(group)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The weights as flat buffers for [`crate::bert_kernels`], or `None` when a linear layer
    /// records its inputs, rounds them, or holds a block-quantized weight (those run on the
    /// candle path, through the linear seam).
    pub fn native_weights(&self) -> Result<Option<crate::bert_kernels::BertWeights>> {
        use crate::linear::{ActRounding, Weight};
        let seam_needed = self.layers.iter().any(|l| {
            [&l.q, &l.k, &l.v, &l.attn_out, &l.inter, &l.out]
                .iter()
                .any(|lin| {
                    lin.is_recording()
                        || lin.act_rounding() != ActRounding::None
                        || !matches!(lin.weight(), Weight::Dense(_))
                        || lin.bias().is_none()
                })
        });
        if seam_needed {
            return Ok(None);
        }
        use crate::bert_kernels::{Dense, LayerWeights, Product};
        let v = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let ln =
            |p: &(Tensor, Tensor)| -> Result<(Vec<f32>, Vec<f32>)> { Ok((v(&p.0)?, v(&p.1)?)) };
        // Linear layers `idx` of `l` (stacked when several) as one product: integer products
        // when each weight is still the int8 one read from the file, else f32.
        let dense = |l: &BertLayer, idx: &[usize]| -> Result<Dense> {
            let lins = [&l.q, &l.k, &l.v, &l.attn_out, &l.inter, &l.out];
            let mut bias = Vec::new();
            for &i in idx {
                bias.extend(v(lins[i].bias().expect("checked above"))?);
            }
            let k = lins[idx[0]].n_in();
            let stored: Option<Vec<&StoredInt8>> = idx
                .iter()
                .map(|&i| {
                    let s = l.int8[i].as_ref()?;
                    match lins[i].weight() {
                        Weight::Dense(w) if w.id() == s.weight_id => Some(s),
                        _ => None,
                    }
                })
                .collect();
            let weight = match stored {
                Some(s) if k.is_multiple_of(crate::int8_kernels::GROUP) => {
                    let q = s.iter().flat_map(|s| s.q.iter().copied()).collect();
                    let scale = s.iter().flat_map(|s| s.scale.iter().copied()).collect();
                    Product::Int8(crate::int8_kernels::PackedI8::new(q, scale, k))
                }
                _ => {
                    let mut w = Vec::new();
                    for &i in idx {
                        w.extend(v(&lins[i].weight_f32()?)?);
                    }
                    Product::F32(w)
                }
            };
            Ok(Dense { weight, bias })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerWeights {
                    qkv: dense(l, &[0, 1, 2])?,
                    attn_out: dense(l, &[3])?,
                    attn_ln: ln(&l.attn_ln)?,
                    inter: dense(l, &[4])?,
                    out: dense(l, &[5])?,
                    out_ln: ln(&l.out_ln)?,
                })
            })
            .collect::<Result<_>>()?;
        let c = &self.config;
        Ok(Some(crate::bert_kernels::BertWeights {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            eps: c.layer_norm_eps as f32,
            word: v(&self.word)?,
            position: v(&self.position)?,
            token_type0: v(&self.token_type.get(0)?)?,
            emb_ln: ln(&self.emb_ln)?,
            layers,
        }))
    }

    /// [`Bert::embed_ids`] on the candle path (padded batches through the linear seam), whatever
    /// the layers hold: the reference the hand-written path is tested against.
    pub fn embed_ids_candle(&self, ids: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        self.embed_groups(ids, batch, |group| self.embed_group_candle(ids, group))
    }

    fn embed_group_candle(&self, ids: &[Vec<u32>], group: &[usize]) -> Result<Vec<Vec<f32>>> {
        let t = group.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(group.len() * t);
        let mut m = Vec::with_capacity(group.len() * t);
        for &i in group {
            flat.extend(
                ids[i]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, t - ids[i].len())),
            );
            m.extend((0..t).map(|j| if j < ids[i].len() { 1f32 } else { 0.0 }));
        }
        let idt = Tensor::from_vec(flat, (group.len(), t), &self.device)?;
        let mt = Tensor::from_vec(m, (group.len(), t), &self.device)?;
        let h = self.hidden_states(&idt, &mt)?;
        let mt3 = mt.unsqueeze(2)?;
        let summed = h.broadcast_mul(&mt3)?.sum(1)?;
        let counts = mt3.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}
