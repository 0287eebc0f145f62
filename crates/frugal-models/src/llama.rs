//! A Llama-family decoder (Touvron et al. 2023, "LLaMA"; SmolLM2 uses the same architecture)
//! loaded from GGUF, returning logits at every position (candle's own llama returns only the
//! last one). Reference implementation: llama.cpp's `llm_build_llama` in `src/llama-model.cpp`.
//!
//! Details that must match llama.cpp: RMSNorm with the file's epsilon; grouped-query attention;
//! RoPE on adjacent pairs (ggml's "normal" mode, because GGUF stores Q and K rows permuted for it,
//! unlike Hugging Face's rotate-half layout); SwiGLU; tied embeddings when `output.weight` is absent.
//!
//! Gemma 3 (`gemma3`; llama.cpp's `models/gemma3.cpp`) is a row of [`ARCHITECTURES`] with its own
//! parts switched on: the embedding scaled by √d; RMSNorm of each head's queries and keys before
//! RoPE; RoPE on the two halves of a head (ggml's NEOX mode); RMSNorm of the attention and MLP
//! outputs before each residual add; GeGLU with the tanh GELU; sliding-window attention (512
//! positions) on five layers of every six, with their own RoPE base (10,000 against 10⁶). Its
//! norms' `1 + w` is already folded into the GGUF weights by llama.cpp's converter, so every
//! norm here is a plain RMSNorm.

use crate::error::{Error, Result};
use crate::gguf_load::{info_shaped, load_f32, load_f32_shaped};
use crate::linear::{ActRounding, Linear, MappedWeight};
use candle_core::{DType, Device, Tensor, D};
use frugal_formats::gguf::{GgmlType, GgufFile};
use std::sync::Arc;

/// What a decoder architecture does differently: one row per `general.architecture` in
/// [`ARCHITECTURES`], read by the one block body ([`Llama::block_body`], which [`Llama::block`]
/// calls by index) that the full forward, the key/value-cache decode step and the
/// differentiable training pass share. A new architecture
/// is a row here plus what is truly new (a variant below and its arm in the block body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchSpec {
    /// `general.architecture`.
    pub name: &'static str,
    /// The normalisation before attention and before the MLP.
    pub norm: Norm,
    /// The MLP's gated activation.
    pub activation: Activation,
    /// How RoPE pairs a head's dimensions.
    pub rope: RopeLayout,
    /// Token embeddings multiplied by √d before the first block (Gemma).
    pub embed_scale: bool,
    /// Each head's queries and keys RMS-normed before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// The attention and MLP outputs RMS-normed before their residual adds
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// RoPE frequency factors (`rope_freqs.weight`, Llama 3.1's long-context scaling) are read
    /// and applied: each frequency divided by its factor (llama.cpp reads them for the Llama
    /// family only; elsewhere the tensor is refused).
    pub rope_freqs: bool,
    /// Phi-3's fused weights: the MLP's gate and up projections in one `ffn_up` (gate rows
    /// first, as ggml's `swiglu` splits it), and Q, K and V in one `attn_qkv` where the file
    /// has it (llama.cpp takes either form). Split by rows at load ([`fused_parts`]).
    pub fused: bool,
    /// Granite's multipliers: `embedding_scale` on the token embeddings, `residual_scale` on
    /// each branch before its residual add, `attention.scale` in place of 1/√head_dim, and the
    /// logits divided by `logit_scale` (a key llama.cpp requires for Granite).
    pub granite_scales: bool,
    /// Per-head attention sinks (`attn_sinks.weight`, `[n_head]`): a logit that each query's
    /// softmax counts in its denominator, with no value behind it (ggml's
    /// `soft_max_add_sinks`). Elsewhere the tensor is refused.
    pub sinks: bool,
    /// Which layers a window set by `attention.sliding_window` applies to.
    pub swa: Swa,
    /// llama.cpp sizes the queries by `attention.key_length` × heads, so a model with query
    /// heads removed still loads (its `qwen2` loader fixes them at the model width instead).
    pub heads_removable: bool,
}

/// The layers of an architecture that a sliding window (`attention.sliding_window`) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swa {
    /// None: a file that sets a window is refused (llama.cpp reads none for this architecture,
    /// or turns it off, as for Phi-3).
    Refused,
    /// All but every `n`th layer unless the file lists them (`attention.sliding_window_pattern`:
    /// one boolean per layer, or a period): Gemma 3, 6.
    AllButEvery(usize),
    /// The layers the file lists (`attention.sliding_window_pattern`, one boolean per layer,
    /// required as llama.cpp requires it), with the global RoPE base (llama.cpp's Granite graph
    /// has one for all layers and reads no `rope.freq_base_swa`): Granite's sliding-window
    /// models.
    Listed,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dimensions `2i` and `2i + 1` (ggml's normal mode; Llama's GGUF rows are permuted for it).
    Adjacent,
    /// Dimensions `i` and `i + d/2` (ggml's NEOX mode, Hugging Face's rotate-half).
    Halves,
}

/// A block's normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm with the file's epsilon, weight w: x / √(mean(x²) + ε) · w.
    Rms,
}

/// A gated MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: silu(gate) · up.
    SiluGlu,
    /// GeGLU: gelu(gate) · up, GELU by its tanh approximation (ggml's `gelu`).
    GeluTanhGlu,
}

/// The architectures Frugal runs.
pub const ARCHITECTURES: &[ArchSpec] = &[
    ArchSpec {
        name: "llama",
        ..LLAMA
    },
    ArchSpec {
        name: "mistral",
        ..LLAMA
    },
    ArchSpec {
        name: "gemma3",
        activation: Activation::GeluTanhGlu,
        rope: RopeLayout::Halves,
        embed_scale: true,
        qk_norm: true,
        post_norms: true,
        swa: Swa::AllButEvery(6),
        rope_freqs: false,
        ..LLAMA
    },
    // Qwen2: Llama with q/k/v biases (read wherever a file has them) and RoPE on halves.
    ArchSpec {
        name: "qwen2",
        rope: RopeLayout::Halves,
        rope_freqs: false,
        heads_removable: false,
        ..LLAMA
    },
    // Qwen3: Llama with per-head QK RMSNorm and RoPE on halves.
    ArchSpec {
        name: "qwen3",
        rope: RopeLayout::Halves,
        qk_norm: true,
        rope_freqs: false,
        ..LLAMA
    },
    // Phi-3: Llama with fused QKV and gate-up weights and RoPE on halves (its LongRoPE
    // factors, `rope_factors_long`/`_short`, and its sliding window — which llama.cpp turns
    // off — are refused).
    ArchSpec {
        name: "phi3",
        rope: RopeLayout::Halves,
        fused: true,
        rope_freqs: false,
        ..LLAMA
    },
    // Granite (3.x): Llama with four multipliers.
    ArchSpec {
        name: "granite",
        granite_scales: true,
        ..LLAMA
    },
    // Granite with a sliding window on the layers the file lists and attention sinks — also
    // how a Mistral-style model (every layer windowed) is written for llama.cpp to run it: its
    // `llama` architecture reads no window. Mixtures of experts, NoPE layers and deepstack
    // inputs are refused.
    ArchSpec {
        name: "granite_swa",
        granite_scales: true,
        sinks: true,
        swa: Swa::Listed,
        ..LLAMA
    },
];

/// A fused weight of the file ([`ArchSpec::fused`]) and the Linear layers a block holds in its
/// place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedWeight {
    /// The file's tensor (`blk.0.attn_qkv.weight`).
    pub name: String,
    pub parts: Vec<FusedPart>,
}

/// One part of a [`FusedWeight`]: rows `first_row..first_row + rows` of the tensor, named
/// `blk.0.attn_qkv.weight[q]` — not a name of the file's, so that a compression method that
/// writes weights back by name refuses a model with fused weights ([`fused_tensor`]) rather
/// than finding them missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedPart {
    pub name: String,
    pub first_row: usize,
    pub rows: usize,
}

/// Block `i`'s fused weights: `attn_qkv` (rows q, k, v) and `ffn_up` (rows gate, up).
pub fn fused_parts(c: &LlamaConfig, i: usize) -> [FusedWeight; 2] {
    let (qd, kv, ff) = (c.n_head * c.head_dim(), c.n_head_kv * c.head_dim(), c.n_ff);
    let fused = |name: String, parts: &[(&str, usize, usize)]| FusedWeight {
        parts: parts
            .iter()
            .map(|&(p, first_row, rows)| FusedPart {
                name: format!("{name}[{p}]"),
                first_row,
                rows,
            })
            .collect(),
        name,
    };
    [
        fused(
            format!("blk.{i}.attn_qkv.weight"),
            &[("q", 0, qd), ("k", qd, kv), ("v", qd + kv, kv)],
        ),
        fused(
            format!("blk.{i}.ffn_up.weight"),
            &[("gate", 0, ff), ("up", ff, ff)],
        ),
    ]
}

/// The first fused weight of `f` (Phi-3's `ffn_up` holding gate and up, or `attn_qkv`), if
/// any: what the compression methods that write decoder weights back one by one refuse.
pub fn fused_tensor(f: &GgufFile) -> Option<String> {
    let arch = f.header.architecture().and_then(ArchSpec::of)?;
    if !arch.fused {
        return None;
    }
    ["blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"]
        .into_iter()
        .find(|n| f.tensor(n).is_some())
        .map(str::to_string)
}

/// The Llama row, which the others start from.
const LLAMA: ArchSpec = ArchSpec {
    name: "llama",
    norm: Norm::Rms,
    activation: Activation::SiluGlu,
    rope: RopeLayout::Adjacent,
    embed_scale: false,
    qk_norm: false,
    post_norms: false,
    rope_freqs: true,
    fused: false,
    granite_scales: false,
    sinks: false,
    swa: Swa::Refused,
    heads_removable: true,
};

impl ArchSpec {
    /// The row of `general.architecture` `name`.
    pub fn of(name: &str) -> Option<&'static ArchSpec> {
        ARCHITECTURES.iter().find(|a| a.name == name)
    }
}

/// Hyperparameters read from GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f64,
    pub rope_base: f64,
    pub rope_dim: usize,
    /// Width of one attention head: `attention.key_length` when the file says (a model with
    /// heads removed), else `n_embd / n_head`, as llama.cpp reads it.
    pub head_dim: usize,
    /// The factor on `q·k`: 1/√head_dim (Gemma 3 27B: 1/√(n_embd / n_head), as llama.cpp).
    pub attn_scale: f64,
    /// Sliding-window attention: a windowed layer's query at position p sees keys at p − w + 1
    /// to p (0: no layer is windowed).
    pub swa_window: usize,
    /// Per layer, whether it is windowed.
    pub swa_layers: Vec<bool>,
    /// The RoPE base of windowed layers (`rope.freq_base_swa`, else 10,000 as llama.cpp).
    pub rope_base_swa: f64,
    /// Linear RoPE scaling: positions multiplied by this (`rope.scaling.type = linear`: 1 /
    /// `rope.scaling.factor`; else 1).
    pub rope_pos_scale: f64,
    /// Per-frequency divisors of the RoPE angles (`rope_freqs.weight`, `[rope_dim / 2]`), where
    /// the file has them.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// The factor on the token embeddings (Gemma: √d in f32; Granite: `embedding_scale`; else 1).
    #[serde(default = "one")]
    pub embed_scale: f64,
    /// The factor on each block's attention and MLP outputs before their residual adds
    /// (Granite's `residual_scale`; else 1).
    #[serde(default = "one")]
    pub residual_scale: f64,
    /// The divisor of the logits (Granite's `logit_scale`; else 1).
    #[serde(default = "one")]
    pub logit_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path().to_path_buf();
        let h = &f.header;
        let arch = h.architecture().unwrap_or("");
        let bad = |key: &str, reason: String| Error::BadMetadata {
            path: path.clone(),
            key: key.to_string(),
            reason,
        };
        if ArchSpec::of(arch).is_none() {
            return Err(bad(
                "general.architecture",
                format!(
                    "`{arch}` is not an architecture Frugal runs ({})",
                    ARCHITECTURES
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let int = |k: &str| -> Result<Option<usize>> {
            match h.arch_get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|x| Some(x as usize))
                    .ok_or_else(|| bad(&format!("{arch}.{k}"), "not an integer".into())),
            }
        };
        let need = |k: &str| -> Result<usize> {
            int(k)?.ok_or_else(|| bad(&format!("{arch}.{k}"), "missing".into()))
        };
        let n_embd = need("embedding_length")?;
        let n_head = need("attention.head_count")?;
        let n_vocab = match h.get("tokenizer.ggml.tokens") {
            Some(frugal_formats::gguf::Value::Array(a)) => a.len(),
            _ => need("vocab_size")?,
        };
        let cfg = LlamaConfig {
            n_layer: need("block_count")?,
            n_embd,
            n_ff: need("feed_forward_length")?,
            n_head,
            n_head_kv: int("attention.head_count_kv")?.unwrap_or(n_head),
            n_vocab,
            n_ctx_train: int("context_length")?.unwrap_or(2048),
            rms_eps: h
                .arch_get("attention.layer_norm_rms_epsilon")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5),
            rope_base: h
                .arch_get("rope.freq_base")
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0),
            rope_dim: 0,
            head_dim: 0,
            attn_scale: 0.0,
            swa_window: 0,
            swa_layers: Vec::new(),
            rope_base_swa: 10_000.0,
            rope_pos_scale: 1.0,
            rope_freq_factors: None,
            embed_scale: 1.0,
            residual_scale: 1.0,
            logit_scale: 1.0,
        };
        let key_length = int("attention.key_length")?;
        if cfg.n_head == 0
            || cfg.n_head_kv == 0
            || (key_length.is_none() && n_embd % cfg.n_head != 0)
            || !cfg.n_head.is_multiple_of(cfg.n_head_kv)
        {
            return Err(bad(
                &format!("{arch}.attention.head_count"),
                format!(
                    "{} heads / {} kv heads do not divide width {n_embd}",
                    cfg.n_head, cfg.n_head_kv
                ),
            ));
        }
        let head_dim = key_length.unwrap_or(n_embd / cfg.n_head);
        if int("attention.value_length")?.is_some_and(|v| v != head_dim) {
            return Err(bad(
                &format!("{arch}.attention.value_length"),
                format!("differs from the key length {head_dim}: not supported"),
            ));
        }
        let spec = ArchSpec::of(arch).expect("checked above");
        let attn_scale = if arch == "gemma3" && cfg.n_layer == 62 {
            1.0 / ((n_embd / cfg.n_head) as f64).sqrt()
        } else {
            1.0 / (head_dim as f64).sqrt()
        };
        let swa_window = int("attention.sliding_window")?.unwrap_or(0);
        let pattern_key = format!("{arch}.attention.sliding_window_pattern");
        let listed = match h.arch_get("attention.sliding_window_pattern") {
            Some(frugal_formats::gguf::Value::Array(frugal_formats::gguf::Array::Bool(v)))
                if v.len() >= cfg.n_layer =>
            {
                Some(v[..cfg.n_layer].to_vec())
            }
            Some(v) if v.as_u64().is_some() && spec.swa != Swa::Listed => {
                let n = v.as_u64().unwrap_or(0) as usize;
                Some((0..cfg.n_layer).map(|i| n == 0 || i % n < n - 1).collect())
            }
            Some(_) if swa_window > 0 => {
                return Err(bad(
                    &pattern_key,
                    match spec.swa {
                        Swa::Listed => format!("not {} booleans", cfg.n_layer),
                        _ => format!("neither an integer nor {} booleans", cfg.n_layer),
                    },
                ))
            }
            _ => None,
        };
        let swa_layers = match (swa_window, spec.swa, listed) {
            (0, ..) => vec![false; cfg.n_layer],
            (_, Swa::Refused, _) => {
                return Err(bad(
                    &format!("{arch}.attention.sliding_window"),
                    format!("sliding-window attention is not supported for `{arch}` (llama.cpp reads no window for it): refused rather than run without one"),
                ));
            }
            (_, _, Some(layers)) => layers,
            (_, Swa::AllButEvery(n), None) => (0..cfg.n_layer).map(|i| i % n < n - 1).collect(),
            (_, Swa::Listed, None) => {
                return Err(bad(
                    &pattern_key,
                    "missing: the windowed layers are not listed".into(),
                ))
            }
        };
        // Granite's multipliers: 0 or absent means none, as llama.cpp reads them.
        let multiplier = |k: &str, required: bool| -> Result<Option<f64>> {
            match h.arch_get(k).map(|v| v.as_f64()) {
                None if required => Err(bad(&format!("{arch}.{k}"), "missing".into())),
                None => Ok(None),
                Some(Some(x)) if x == 0.0 && !required => Ok(None),
                Some(Some(x)) if x.is_finite() && x != 0.0 => Ok(Some(x)),
                Some(_) => Err(bad(
                    &format!("{arch}.{k}"),
                    "not a finite, non-zero number".into(),
                )),
            }
        };
        let (embed_scale, residual_scale, logit_scale, attn_scale) = if spec.granite_scales {
            (
                multiplier("embedding_scale", false)?.unwrap_or(1.0),
                multiplier("residual_scale", false)?.unwrap_or(1.0),
                multiplier("logit_scale", true)?.unwrap_or(1.0),
                multiplier("attention.scale", false)?.unwrap_or(attn_scale),
            )
        } else if spec.embed_scale {
            // ggml scales in f32 by sqrtf(n_embd).
            (f64::from((n_embd as f32).sqrt()), 1.0, 1.0, attn_scale)
        } else {
            (1.0, 1.0, 1.0, attn_scale)
        };
        // What no row runs: experts, layers without RoPE, deepstack inputs.
        let refused = [
            (
                "expert_count",
                h.arch_get("expert_count")
                    .and_then(|v| v.as_u64())
                    .is_some_and(|n| n > 0),
                "mixtures of experts are",
            ),
            (
                "attention.rope_pattern",
                matches!(h.arch_get("attention.rope_pattern"), Some(frugal_formats::gguf::Value::Array(frugal_formats::gguf::Array::Bool(v))) if v.iter().any(|r| !r)),
                "layers without RoPE are",
            ),
            (
                "deepstack_mapping",
                h.arch_get("deepstack_mapping").is_some(),
                "deepstack (vision) inputs are",
            ),
        ];
        if let Some((k, _, what)) = refused.iter().find(|r| r.1) {
            return Err(bad(
                &format!("{arch}.{k}"),
                format!("{what} not supported for `{arch}` yet"),
            ));
        }
        let cfg = LlamaConfig {
            head_dim,
            rope_dim: int("rope.dimension_count")?.unwrap_or(head_dim),
            attn_scale,
            embed_scale,
            residual_scale,
            logit_scale,
            swa_window,
            swa_layers,
            rope_base_swa: match spec.swa {
                Swa::Listed => cfg.rope_base,
                _ => h
                    .arch_get("rope.freq_base_swa")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(10_000.0),
            },
            ..cfg
        };
        if cfg.n_embd == 0
            || cfg.n_ff == 0
            || cfg.n_vocab == 0
            || cfg.n_layer == 0
            || !cfg.head_dim().is_multiple_of(2)
        {
            return Err(bad(
                &format!("{arch}.embedding_length"),
                format!(
                    "unusable sizes: width {}, ffn {}, vocab {}, layers {}, head dim {}",
                    cfg.n_embd,
                    cfg.n_ff,
                    cfg.n_vocab,
                    cfg.n_layer,
                    cfg.head_dim()
                ),
            ));
        }
        // Features llama.cpp applies that this decoder does not: refuse rather than compute wrong logits.
        let rope_pos_scale = match h.arch_get("rope.scaling.type").and_then(|v| v.as_str()) {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = h
                    .arch_get("rope.scaling.factor")
                    .and_then(|v| v.as_f64())
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| {
                        bad(
                            &format!("{arch}.rope.scaling.factor"),
                            "missing or not a positive number (linear RoPE scaling)".into(),
                        )
                    })?;
                1.0 / factor
            }
            Some(t) => {
                return Err(bad(
                    &format!("{arch}.rope.scaling.type"),
                    format!("RoPE scaling `{t}` is not supported yet (none, linear)"),
                ))
            }
        };
        if h.arch_get("final_logit_softcapping")
            .and_then(|v| v.as_f64())
            .is_some_and(|c| c != 0.0)
        {
            return Err(bad(
                &format!("{arch}.final_logit_softcapping"),
                "final logit soft-capping is not supported yet".into(),
            ));
        }
        let unsupported: &[&str] = if spec.fused {
            &[
                "blk.0.attn_output.bias",
                "blk.0.attn_qkv.bias",
                "rope_factors_long.weight",
                "rope_factors_short.weight",
            ]
        } else {
            &["blk.0.attn_output.bias", "blk.0.attn_qkv.weight"]
        };
        if !spec.sinks && f.tensor("blk.0.attn_sinks.weight").is_some() {
            return Err(bad(
                "tensors",
                format!("`blk.0.attn_sinks.weight` is present, which llama.cpp does not read for `{arch}`: refused rather than guessed"),
            ));
        }
        if let Some(t) = unsupported.iter().find(|n| f.tensor(n).is_some()) {
            return Err(bad(
                "tensors",
                format!("`{t}` is present: output and fused biases, LongRoPE factors and fused QKV weights outside Phi-3 are not supported for `{arch}` yet"),
            ));
        }
        let rope_freq_factors = match f.tensor("rope_freqs.weight") {
            None => None,
            Some(_) if !spec.rope_freqs => {
                return Err(bad(
                    "tensors",
                    format!("`rope_freqs.weight` is present, which llama.cpp does not apply to `{arch}`: refused rather than guessed"),
                ))
            }
            Some(_) => {
                let half = cfg.rope_dim / 2;
                let t = load_f32_shaped(f, "rope_freqs.weight", &[half], &Device::Cpu)?;
                let v: Vec<f32> = t.to_vec1()?;
                if v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                    return Err(bad(
                        "rope_freqs.weight",
                        "RoPE frequency factors must be positive".into(),
                    ));
                }
                Some(v)
            }
        };
        let cfg = LlamaConfig {
            rope_pos_scale,
            rope_freq_factors,
            ..cfg
        };
        if cfg.rope_dim != cfg.head_dim() {
            return Err(bad(
                &format!("{arch}.rope.dimension_count"),
                "partial rotary embeddings are not supported".into(),
            ));
        }
        Ok(cfg)
    }
}

/// How to hold the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Decode every weight to f32 and multiply in f32 (fast with f32 GEMM); otherwise weights
    /// stay as stored: quantized ones use candle's or Frugal's quantized kernels, F16 and BF16
    /// ones Frugal's 16-bit products ([`crate::gemm`]).
    pub dequantize: bool,
    /// With `dequantize`, round each layer's input as ggml does for that weight type
    /// ([`ActRounding`]), so results match llama.cpp's; without it, activations stay exact f32.
    pub ggml_activations: bool,
}

impl LoadOptions {
    /// llama.cpp's arithmetic: decoded weights, inputs rounded per weight type (the default for
    /// evaluating GGUF models, whose numbers then compare one to one with llama.cpp's).
    pub const GGML: LoadOptions = LoadOptions {
        dequantize: true,
        ggml_activations: true,
    };
    /// Exact f32 arithmetic on the stored weights.
    pub const EXACT: LoadOptions = LoadOptions {
        dequantize: true,
        ggml_activations: false,
    };
    /// candle's quantized kernels.
    pub const KERNELS: LoadOptions = LoadOptions {
        dequantize: false,
        ggml_activations: false,
    };
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// The per-head norms of queries and keys (`[head_dim]`), where the architecture has them.
    pub qk_norm: Option<(Tensor, Tensor)>,
    /// The norms of the attention and MLP outputs (`[d]`), where the architecture has them.
    pub post_norms: Option<(Tensor, Tensor)>,
    /// A sliding-window layer ([`LlamaConfig::swa_layers`]).
    pub windowed: bool,
    /// The per-head attention sinks (`[n_head]`), where the architecture has them.
    pub sinks: Option<Tensor>,
}

impl Block {
    /// What stands in a streamed pass's model for block `i` once it is done: the same names,
    /// no weights (every tensor empty), so the blocks after it keep their indices.
    pub fn released(i: usize, device: &Device) -> Result<Block> {
        let empty = || Tensor::zeros(0, DType::F32, device);
        let lin = |s: &str| -> Result<Linear> {
            let w = Tensor::zeros((0, 0), DType::F32, device)?;
            Linear::dense(format!("blk.{i}.{s}.weight"), w, None)
        };
        Ok(Block {
            attn_norm: empty()?,
            q: lin("attn_q")?,
            k: lin("attn_k")?,
            v: lin("attn_v")?,
            o: lin("attn_output")?,
            ffn_norm: empty()?,
            gate: lin("ffn_gate")?,
            up: lin("ffn_up")?,
            down: lin("ffn_down")?,
            qk_norm: None,
            post_norms: None,
            windowed: false,
            sinks: None,
        })
    }
}

/// Whether [`Llama::embed_rows`] decodes rows of this type (candle's types and [`crate::iq`]'s).
fn rows_decodable(ty: GgmlType) -> bool {
    crate::gguf_load::candle_dtype(ty).is_some() || crate::iq::decodes(ty)
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub arch: &'static ArchSpec,
    pub embedding: Tensor,
    /// The token embedding's rows as stored, read in place, where the table is not decoded
    /// (a model loaded with stored weights): [`Llama::embed`] decodes the rows it needs.
    embedding_rows: Option<(GgmlType, frugal_formats::gguf::MappedBytes)>,
    pub blocks: Vec<Block>,
    pub output_norm: Tensor,
    /// `None` for a shell loaded without it ([`Llama::load_shell`]).
    pub output: Option<Linear>,
    device: Device,
}

fn linear(
    f: &GgufFile,
    name: &str,
    shape: [usize; 2],
    opts: LoadOptions,
    dev: &Device,
) -> Result<Linear> {
    let t = info_shaped(f, name, &shape)?;
    // The bias beside the weight (`….bias`, `[n_out]`), where the file has one (Qwen2's
    // q/k/v), added in f32 as llama.cpp's `build_qkv` does.
    let bias_name = format!("{}.bias", name.strip_suffix(".weight").unwrap_or(name));
    let bias = match f.tensor(&bias_name) {
        Some(_) => Some(load_f32_shaped(f, &bias_name, &[shape[0]], dev)?),
        None => None,
    };
    // Decoded to F32 when asked; else read in place from the file.
    if opts.dequantize {
        decoded_linear(
            name.to_string(),
            load_f32(f, name, dev)?,
            t.ggml_type,
            opts,
            bias,
        )
    } else {
        stored_linear(f, t, name.to_string(), f.tensor_data(t), shape, bias, dev)
    }
}

/// A layer of a decoded weight, its input rounded as ggml does for the stored type `ty` when
/// `opts` asks.
fn decoded_linear(
    name: String,
    w: Tensor,
    ty: GgmlType,
    opts: LoadOptions,
    bias: Option<Tensor>,
) -> Result<Linear> {
    let mut l = Linear::dense(name, w, bias)?;
    if opts.ggml_activations {
        l.set_act_rounding(ActRounding::for_weight(ty));
    }
    Ok(l)
}

/// A layer of `bytes`, a `[n_out, n_in]` weight of `t`'s type: read in place by Frugal's
/// kernels; candle's resident copy (and, under AVX-512 VNNI, its repacked second copy of Q8_0,
/// Q4_K and Q6_K weights) for a type they do not read in place, or when
/// `FRUGAL_CANDLE_QMATMUL=1` asks, for benchmarks.
fn stored_linear(
    f: &GgufFile,
    t: &frugal_formats::gguf::TensorInfo,
    name: String,
    bytes: frugal_formats::gguf::MappedBytes,
    [n_out, n_in]: [usize; 2],
    bias: Option<Tensor>,
    dev: &Device,
) -> Result<Linear> {
    if !crate::qmatmul::candle_forced() {
        if let Some(w) = MappedWeight::new(t.ggml_type, bytes.clone(), n_out, n_in) {
            return Ok(Linear::mapped(name, w, bias));
        }
    }
    if crate::iq::decodes(t.ggml_type) {
        // No kernel of Frugal's or candle's multiplies these in place yet: the weight decoded
        // once, its input rounded as ggml rounds it for the type (ggml's arithmetic up to the
        // order of the sums).
        let mut v = vec![0f32; n_out * n_in];
        crate::iq::decode_row(t.ggml_type, &bytes, &mut v).ok_or_else(|| Error::BadShape {
            path: f.path().to_path_buf(),
            name: t.name.clone(),
            found: vec![bytes.len()],
            expected: vec![n_out, n_in],
        })?;
        let w = Tensor::from_vec(v, (n_out, n_in), dev)?;
        let mut l = Linear::dense(name, w, bias)?;
        l.set_act_rounding(ActRounding::for_weight(t.ggml_type));
        return Ok(l);
    }
    let dtype =
        crate::gguf_load::candle_dtype(t.ggml_type).ok_or_else(|| Error::UnsupportedType {
            path: f.path().to_path_buf(),
            name: t.name.clone(),
            dtype: t.ggml_type.name(),
        })?;
    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &bytes,
        vec![n_out, n_in],
        dev,
    )?;
    Linear::quantized(name, Arc::new(q), bias)
}

/// The Linear layers of a fused weight's parts, each `[rows, n_in]`: row ranges of the stored
/// tensor read in place, or of its one decoded copy.
fn split_linear(
    f: &GgufFile,
    w: &FusedWeight,
    n_in: usize,
    opts: LoadOptions,
    dev: &Device,
) -> Result<Vec<Linear>> {
    let total = w.parts.iter().map(|p| p.rows).sum();
    let t = info_shaped(f, &w.name, &[total, n_in])?;
    if opts.dequantize {
        let whole = load_f32(f, &w.name, dev)?;
        return w
            .parts
            .iter()
            .map(|p| {
                let rows = whole.narrow(0, p.first_row, p.rows)?.contiguous()?;
                decoded_linear(p.name.clone(), rows, t.ggml_type, opts, None)
            })
            .collect();
    }
    let bytes = f.tensor_data(t);
    let row = bytes.len() / total;
    w.parts
        .iter()
        .map(|p| {
            let part = bytes.slice(p.first_row * row, p.rows * row);
            stored_linear(f, t, p.name.clone(), part, [p.rows, n_in], None, dev)
        })
        .collect()
}

impl Llama {
    pub fn load(f: &GgufFile, opts: LoadOptions, device: &Device) -> Result<Self> {
        let mut m = if opts.dequantize || crate::qmatmul::candle_forced() {
            Self::load_shell(f, device)?
        } else {
            // Stored weights: the embedding's rows stay in the file's mapping too.
            let mut m = Self::load_bare_shell(f, device)?;
            let t = info_shaped(f, "token_embd.weight", &[m.config.n_vocab, m.config.n_embd])?;
            if !rows_decodable(t.ggml_type) {
                m.embedding = load_f32(f, "token_embd.weight", device)?;
            } else {
                m.embedding_rows = Some((t.ggml_type, f.tensor_data(t)));
            }
            m
        };
        for i in 0..m.config.n_layer {
            m.blocks
                .push(Self::load_block(f, &m.config, i, opts, device)?);
        }
        m.load_output(f, opts)?;
        Ok(m)
    }

    /// Loads the output layer (`output.weight`, or the tied embedding), decoded as `opts` says.
    pub fn load_output(&mut self, f: &GgufFile, opts: LoadOptions) -> Result<()> {
        let output_name = if f.tensor("output.weight").is_some() {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let shape = [self.config.n_vocab, self.config.n_embd];
        self.output = Some(linear(f, output_name, shape, opts, &self.device)?);
        Ok(())
    }

    /// [`Llama::load_shell`] without the token embedding decoded (its table is empty:
    /// [`Llama::embed`] refuses every token): a streamed pass embeds its tokens from the file's
    /// rows ([`Llama::embed_from`]), so the table — the size of the output layer — is never in
    /// memory whole.
    pub fn load_bare_shell(f: &GgufFile, device: &Device) -> Result<Self> {
        let c = LlamaConfig::from_gguf(f)?;
        info_shaped(f, "token_embd.weight", &[c.n_vocab, c.n_embd])?;
        let output_norm = load_f32_shaped(f, "output_norm.weight", &[c.n_embd], device)?;
        let arch = f
            .header
            .architecture()
            .and_then(ArchSpec::of)
            .expect("checked by LlamaConfig::from_gguf");
        Ok(Llama {
            blocks: Vec::with_capacity(c.n_layer),
            embedding: Tensor::zeros((0, c.n_embd), DType::F32, device)?,
            embedding_rows: None,
            config: c,
            arch,
            output_norm,
            output: None,
            device: device.clone(),
        })
    }

    /// The first block's input `[T, d]` for one sequence, decoded from `f`'s rows of
    /// `token_embd.weight` (only the rows the tokens name: the same values as [`Llama::embed`]
    /// on the whole decoded table, since rows are whole blocks).
    pub fn embed_from(&self, f: &GgufFile, tokens: &[u32]) -> Result<Tensor> {
        let c = &self.config;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::BadToken {
                id,
                n_vocab: c.n_vocab,
            });
        }
        let name = "token_embd.weight";
        let t = info_shaped(f, name, &[c.n_vocab, c.n_embd])?;
        if !rows_decodable(t.ggml_type) {
            return Err(Error::UnsupportedType {
                path: f.path().to_path_buf(),
                name: name.to_string(),
                dtype: t.ggml_type.name(),
            });
        }
        self.embed_rows(t.ggml_type, &f.tensor_data(t), tokens)
    }

    /// The embedding rows of `tokens` (checked) decoded from the stored table `data` of type
    /// `ty` (one candle or [`crate::iq`] decodes), scaled as the architecture says.
    fn embed_rows(&self, ty: GgmlType, data: &[u8], tokens: &[u32]) -> Result<Tensor> {
        let c = &self.config;
        let row = data.len() / c.n_vocab;
        let mut out = Vec::with_capacity(tokens.len() * c.n_embd);
        for &id in tokens {
            let bytes = &data[id as usize * row..][..row];
            let decoded = match crate::gguf_load::candle_dtype(ty) {
                _ if ty == GgmlType::F32 => {
                    Tensor::from_raw_buffer(bytes, DType::F32, &[1, c.n_embd], &self.device)?
                }
                Some(dtype) => candle_core::quantized::ggml_file::qtensor_from_ggml(
                    dtype,
                    bytes,
                    vec![1, c.n_embd],
                    &self.device,
                )?
                .dequantize(&self.device)?,
                None => {
                    let mut v = vec![0f32; c.n_embd];
                    crate::iq::decode_row(ty, bytes, &mut v)
                        .ok_or(Error::NotLoaded("token embedding rows of whole blocks"))?;
                    Tensor::from_vec(v, (1, c.n_embd), &self.device)?
                }
            };
            out.extend(decoded.flatten_all()?.to_vec1::<f32>()?);
        }
        self.scale_embedding(Tensor::from_vec(
            out,
            (tokens.len(), c.n_embd),
            &self.device,
        )?)
    }

    /// The model without its decoder blocks and output layer — the embedding and the final
    /// norm only — for passes that take the blocks one at a time ([`Llama::load_block`],
    /// [`Llama::block_forward_with`]), so that at most one block is ever decoded (what a large
    /// model on a small machine needs).
    pub fn load_shell(f: &GgufFile, device: &Device) -> Result<Self> {
        let mut m = Self::load_bare_shell(f, device)?;
        let shape = [m.config.n_vocab, m.config.n_embd];
        m.embedding = load_f32_shaped(f, "token_embd.weight", &shape, device)?;
        Ok(m)
    }

    /// Decoder block `i`'s weights, decoded as `opts` says.
    pub fn load_block(
        f: &GgufFile,
        c: &LlamaConfig,
        i: usize,
        opts: LoadOptions,
        device: &Device,
    ) -> Result<Block> {
        let arch = f
            .header
            .architecture()
            .and_then(ArchSpec::of)
            .expect("checked by LlamaConfig::from_gguf");
        let (d, kv, qd) = (
            c.n_embd,
            c.n_head_kv * c.head_dim(),
            c.n_head * c.head_dim(),
        );
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let [qkv, gate_up] = fused_parts(c, i);
        let (q, k, v) = if arch.fused && f.tensor(&qkv.name).is_some() {
            let [q, k, v]: [Linear; 3] = split_linear(f, &qkv, d, opts, device)?
                .try_into()
                .expect("three parts");
            (q, k, v)
        } else {
            (
                linear(f, &n("attn_q"), [qd, d], opts, device)?,
                linear(f, &n("attn_k"), [kv, d], opts, device)?,
                linear(f, &n("attn_v"), [kv, d], opts, device)?,
            )
        };
        let (gate, up) = if arch.fused {
            let [g, u]: [Linear; 2] = split_linear(f, &gate_up, d, opts, device)?
                .try_into()
                .expect("two parts");
            (g, u)
        } else {
            (
                linear(f, &n("ffn_gate"), [c.n_ff, d], opts, device)?,
                linear(f, &n("ffn_up"), [c.n_ff, d], opts, device)?,
            )
        };
        Ok(Block {
            attn_norm: load_f32_shaped(f, &n("attn_norm"), &[d], device)?,
            q,
            k,
            v,
            o: linear(f, &n("attn_output"), [d, qd], opts, device)?,
            ffn_norm: load_f32_shaped(f, &n("ffn_norm"), &[d], device)?,
            gate,
            up,
            down: linear(f, &n("ffn_down"), [d, c.n_ff], opts, device)?,
            qk_norm: if arch.qk_norm {
                Some((
                    load_f32_shaped(f, &n("attn_q_norm"), &[c.head_dim()], device)?,
                    load_f32_shaped(f, &n("attn_k_norm"), &[c.head_dim()], device)?,
                ))
            } else {
                None
            },
            post_norms: if arch.post_norms {
                Some((
                    load_f32_shaped(f, &n("post_attention_norm"), &[d], device)?,
                    load_f32_shaped(f, &n("post_ffw_norm"), &[d], device)?,
                ))
            } else {
                None
            },
            windowed: c.swa_layers.get(i).copied().unwrap_or(false),
            sinks: if arch.sinks {
                Some(load_f32_shaped(f, &n("attn_sinks"), &[c.n_head], device)?)
            } else {
                None
            },
        })
    }

    /// The output layer (an error for a shell loaded without it).
    fn output(&self) -> Result<&Linear> {
        self.output
            .as_ref()
            .ok_or(crate::error::Error::NotLoaded("output layer"))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every linear layer, in execution order (the seam compression methods use).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = Vec::new();
        for b in &mut self.blocks {
            v.extend([
                &mut b.q,
                &mut b.k,
                &mut b.v,
                &mut b.o,
                &mut b.gate,
                &mut b.up,
                &mut b.down,
            ]);
        }
        if let Some(o) = &mut self.output {
            v.push(o);
        }
        v
    }

    /// RoPE tables for positions `0..n` at RoPE base `base`: `(cos, sin)`, each
    /// `[n, head_dim / 2]`.
    fn rope_tables(&self, n: usize, base: f64) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let half = c.rope_dim / 2;
        // θ_i = base^(−2i/d) / factor_i, at position p · scale (ggml_rope_ext's freq_factors
        // and freq_scale).
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                let f = (base.powf(-2.0 * i as f64 / c.rope_dim as f64)) as f32;
                match &c.rope_freq_factors {
                    Some(ff) => f / ff[i],
                    None => f,
                }
            })
            .collect();
        let scale = c.rope_pos_scale as f32;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let a = p as f32 * scale * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), &self.device)?,
            Tensor::from_vec(sin, (n, half), &self.device)?,
        ))
    }

    /// Logits `[tokens.len(), n_vocab]` at every position of one sequence starting at position 0.
    pub fn forward(&self, tokens: &[u32]) -> Result<Tensor> {
        self.forward_from(tokens, 0)
    }

    /// Logits `[tokens.len() − from, n_vocab]` for positions `from..` only (the output layer, a
    /// fifth of the model's arithmetic, runs only where logits are wanted, as llama.cpp's
    /// perplexity tool asks for).
    pub fn forward_from(&self, tokens: &[u32], from: usize) -> Result<Tensor> {
        let t = tokens.len();
        let mut x = self.embed(tokens)?;
        let ctx = self.attn_ctx(t)?;
        for i in 0..self.blocks.len() {
            x = self.block_forward(i, &x, &ctx, false)?.0;
        }
        let x = x.narrow(0, from.min(t), t - from.min(t))?;
        self.logits_of(&self.final_norm(&x)?)
    }

    /// Logits `[T, n_vocab]` of final-normed hidden states `[T, d]` (the output layer).
    pub fn logits_of(&self, normed: &Tensor) -> Result<Tensor> {
        self.unscale_logits(self.output()?.forward(normed)?.to_dtype(DType::F32)?)
    }

    /// The output layer's products divided by the logit scale (Granite), as llama.cpp's graph.
    fn unscale_logits(&self, x: Tensor) -> Result<Tensor> {
        if self.config.logit_scale == 1.0 {
            return Ok(x);
        }
        Ok((x * (1.0 / self.config.logit_scale))?)
    }

    /// The first block's input from token embeddings, times the architecture's factor (Gemma's
    /// √d, Granite's `embedding_scale`).
    fn scale_embedding(&self, x: Tensor) -> Result<Tensor> {
        if self.config.embed_scale == 1.0 {
            return Ok(x);
        }
        Ok((x * self.config.embed_scale)?)
    }

    /// The first block's input `[T, d]` for one sequence: the token embeddings (ids checked
    /// against the vocabulary), times √d where the architecture says (Gemma).
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let c = &self.config;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::BadToken {
                id,
                n_vocab: c.n_vocab,
            });
        }
        if let (0, Some((ty, rows))) = (self.embedding.dim(0)?, &self.embedding_rows) {
            return self.embed_rows(*ty, rows, tokens);
        }
        if self.embedding.dim(0)? == 0 && !tokens.is_empty() {
            return Err(Error::NotLoaded("token embedding"));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        self.scale_embedding(self.embedding.index_select(&ids, 0)?)
    }

    /// RoPE tables and causal masks for sequences of `t` tokens from position 0 (and for the
    /// windowed layers, theirs).
    pub fn attn_ctx(&self, t: usize) -> Result<AttnCtx> {
        let c = &self.config;
        let mask = |window: usize| -> Result<Tensor> {
            let m: Vec<f32> = (0..t * t)
                .map(|i| {
                    let (q, k) = (i / t, i % t);
                    if k > q || (window > 0 && q - k >= window) {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            Ok(Tensor::from_vec(m, (t, t), &self.device)?)
        };
        let global = {
            let (cos, sin) = self.rope_tables(t, c.rope_base)?;
            Rotary {
                cos,
                sin,
                mask: mask(0)?,
            }
        };
        let windowed = if c.swa_layers.iter().any(|&w| w) {
            let (cos, sin) = self.rope_tables(t, c.rope_base_swa)?;
            Some(Rotary {
                cos,
                sin,
                mask: mask(c.swa_window)?,
            })
        } else {
            None
        };
        Ok(AttnCtx { global, windowed })
    }

    /// The final RMS norm, whose output the output layer reads.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            x,
            &self.output_norm,
            self.config.rms_eps as f32,
        )?)
    }

    /// Decoder block `i` on hidden states `x` `[T, d]`. With `trace`, also the inputs its linear
    /// layers saw: `[attention in (q, k, v), attention out (o), FFN in (gate, up), FFN down]`.
    pub fn block_forward(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &AttnCtx,
        trace: bool,
    ) -> Result<(Tensor, Option<[Tensor; 4]>)> {
        self.block_forward_with(&self.blocks[i], x, ctx, trace)
    }

    /// [`Llama::block_forward`] with a block's weights given (loaded one at a time by
    /// [`Llama::load_block`] on a shell).
    pub fn block_forward_with(
        &self,
        b: &Block,
        x: &Tensor,
        ctx: &AttnCtx,
        trace: bool,
    ) -> Result<(Tensor, Option<[Tensor; 4]>)> {
        let out = self.block_body(b, x, Pass::Fused, Keys::Causal(ctx), None)?;
        Ok((out.x, trace.then_some(out.inputs)))
    }

    /// The one block body: attention (RoPE on adjacent pairs, grouped-query heads) and the gated
    /// MLP, each after its norm and added to the residual, as the architecture's row says. The
    /// pass chooses the arithmetic (candle's fused kernels, or operations with gradients); the
    /// keys are the sequence's own under a causal mask, or the cache's plus this position's.
    fn block(&self, i: usize, x: &Tensor, pass: Pass, keys: Keys) -> Result<BlockOut> {
        self.block_body(&self.blocks[i], x, pass, keys, None)
    }

    /// The output widths of a block's seven linear layers, in [`Llama::block_forward_probed`]'s
    /// order: q, k, v, attention output, gate, up, down.
    pub fn probe_widths(&self) -> [usize; 7] {
        let c = &self.config;
        let (hd, nh, nkv) = (c.head_dim(), c.n_head, c.n_head_kv);
        [
            nh * hd,
            nkv * hd,
            nkv * hd,
            c.n_embd,
            c.n_ff,
            c.n_ff,
            c.n_embd,
        ]
    }

    /// A block's differentiable pass (as [`Llama::forward_train`]'s) with `probes[k]` `[T, n]`
    /// added to the output of its k-th linear layer (q, k, v, attention output, gate, up, down;
    /// widths [`Llama::probe_widths`]): given zero probes, the output is the block's, and a
    /// backward pass gives the gradient with respect to every layer's output. Returns the
    /// block's output and, in the probes' order, each layer with the input it read.
    pub fn block_forward_probed<'b>(
        &self,
        b: &'b Block,
        x: &Tensor,
        ctx: &AttnCtx,
        probes: &[Tensor; 7],
    ) -> Result<(Tensor, [(&'b Linear, Tensor); 7])> {
        let out = self.block_body(b, x, Pass::Differentiable, Keys::Causal(ctx), Some(probes))?;
        let [h, y, h2, act] = out.inputs;
        Ok((
            out.x,
            [
                (&b.q, h.clone()),
                (&b.k, h.clone()),
                (&b.v, h),
                (&b.o, y),
                (&b.gate, h2.clone()),
                (&b.up, h2),
                (&b.down, act),
            ],
        ))
    }

    /// Logits `[T, n_vocab]` of the last block's output through operations with gradients (the
    /// final norm written out, then the output layer, which must be loaded).
    pub fn logits_train(&self, x: &Tensor) -> Result<Tensor> {
        let x = rms_norm_diff(x, &self.output_norm, self.config.rms_eps)?;
        self.unscale_logits(self.output()?.forward(&x)?)
    }

    fn block_body(
        &self,
        b: &Block,
        x: &Tensor,
        pass: Pass,
        keys: Keys,
        probes: Option<&[Tensor; 7]>,
    ) -> Result<BlockOut> {
        let c = &self.config;
        let probe = |k: usize, y: Tensor| -> Result<Tensor> {
            Ok(match probes {
                Some(p) => (y + &p[k])?,
                None => y,
            })
        };
        let (t, hd, nh, nkv) = (x.dim(0)?, c.head_dim(), c.n_head, c.n_head_kv);
        let norm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            match (self.arch.norm, pass) {
                (Norm::Rms, Pass::Fused) => Ok(candle_nn::ops::rms_norm(x, w, c.rms_eps as f32)?),
                (Norm::Rms, Pass::Differentiable) => rms_norm_diff(x, w, c.rms_eps),
            }
        };
        let (cos, sin) = keys.rope(b.windowed);
        let rope = |x: &Tensor| -> Result<Tensor> {
            match (self.arch.rope, pass) {
                (RopeLayout::Adjacent, Pass::Fused) => {
                    Ok(candle_nn::rotary_emb::rope_i(x, cos, sin)?)
                }
                (RopeLayout::Adjacent, Pass::Differentiable) => rope_diff(x, cos, sin),
                (RopeLayout::Halves, Pass::Fused) => Ok(candle_nn::rotary_emb::rope(x, cos, sin)?),
                (RopeLayout::Halves, Pass::Differentiable) => rope_halves_diff(x, cos, sin),
            }
        };
        let h = norm(x, &b.attn_norm)?;
        // q, k and v read the same input: one grouped product where their types allow.
        let Ok::<[Tensor; 3], _>([q, k, v]) =
            Linear::forward_group(&[&b.q, &b.k, &b.v], &h)?.try_into()
        else {
            unreachable!("three layers, three outputs")
        };
        let heads = |y: Tensor, k: usize, n: usize| -> Result<Tensor> {
            Ok(probe(k, y)?
                .reshape((1, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k) = (heads(q, 0, nh)?, heads(k, 1, nkv)?);
        let (q, k) = match &b.qk_norm {
            Some((qn, kn)) => (norm(&q, qn)?, norm(&k, kn)?),
            None => (q, k),
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let v = heads(v, 2, nkv)?;
        let (y, grown) = match keys {
            // The sequence's own keys and values are what a prefilled cache holds.
            Keys::Causal(ctx) => {
                let y = self.causal_attention(b, q, k.clone(), v.clone(), ctx, pass)?;
                (y, Some((k, v)))
            }
            // One query over the cache's positions and its own: a plain loop over the cached
            // rows, no copies of the cache (a candle pass concatenated the cache to each step's
            // key and repeated it per query head: 4 % of a small model's decoding in copies).
            Keys::Cached { past, .. } => {
                if t != 1 {
                    return Err(Error::Candle(candle_core::Error::Msg(format!(
                        "a cached pass takes one position ({t} given)"
                    ))));
                }
                let (kn, vn) = (flat(&k)?, flat(&v)?);
                let sinks = match &b.sinks {
                    Some(s) => Some(flat(s)?),
                    None => None,
                };
                let window = if b.windowed { c.swa_window } else { 0 };
                let shape = AttnShape {
                    heads: nh,
                    kv_heads: nkv,
                    head_dim: hd,
                    scale: c.attn_scale as f32,
                    window,
                };
                let y = attend_one(&shape, &flat(&q)?, past, (&kn, &vn), sinks.as_deref());
                (Tensor::from_vec(y, (1, nh * hd), x.device())?, Some((k, v)))
            }
        };
        let attn_out = probe(3, b.o.forward(&y)?)?;
        let attn_out = match &b.post_norms {
            Some((pa, _)) => norm(&attn_out, pa)?,
            None => attn_out,
        };
        let residual = |y: Tensor| -> Result<Tensor> {
            if c.residual_scale == 1.0 {
                return Ok(y);
            }
            Ok((y * c.residual_scale)?)
        };
        let attn_out = residual(attn_out)?;
        let x = (x + attn_out)?;
        let h2 = norm(&x, &b.ffn_norm)?;
        let Ok::<[Tensor; 2], _>([g, u]) =
            Linear::forward_group(&[&b.gate, &b.up], &h2)?.try_into()
        else {
            unreachable!("two layers, two outputs")
        };
        let (g, u) = (probe(4, g)?, probe(5, u)?);
        let gelu = self.arch.activation == Activation::GeluTanhGlu;
        let act = match pass {
            // One vectorised pass over the gate (candle's calls `tanh`/`exp` per value).
            Pass::Fused => {
                let (mut gv, uv) = (flat(&g)?, flat(&u)?);
                crate::kernels::glu_in_place(&mut gv, &uv, gelu);
                Tensor::from_vec(gv, g.shape(), g.device())?
            }
            Pass::Differentiable if gelu => (g.gelu()? * u)?,
            Pass::Differentiable => (g.silu()? * u)?,
        };
        let mlp_out = probe(6, b.down.forward(&act)?)?;
        let mlp_out = match &b.post_norms {
            Some((_, pf)) => norm(&mlp_out, pf)?,
            None => mlp_out,
        };
        let mlp_out = residual(mlp_out)?;
        Ok(BlockOut {
            x: (&x + mlp_out)?,
            inputs: [h, y, h2, act],
            grown,
        })
    }

    /// Attention of the sequence's own positions under the causal mask (each layer's window
    /// included in it): `q` `[1, heads, T, hd]`, `k` and `v` `[1, kv heads, T, hd]`; returns
    /// `[T, heads · hd]`.
    fn causal_attention(
        &self,
        b: &Block,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        ctx: &AttnCtx,
        pass: Pass,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (t, nh, hd) = (q.dim(2)?, c.n_head, c.head_dim());
        let (k, v) = (
            repeat_kv(k, nh / c.n_head_kv)?,
            repeat_kv(v, nh / c.n_head_kv)?,
        );
        let kt = match pass {
            Pass::Fused => k.t()?,
            Pass::Differentiable => k.t()?.contiguous()?,
        };
        let att = (q.matmul(&kt)? * c.attn_scale)?;
        let att = att.broadcast_add(&ctx.rotary(b.windowed).mask)?;
        let softmax = |att: &Tensor| -> Result<Tensor> {
            Ok(match pass {
                Pass::Fused => candle_nn::ops::softmax_last_dim(att)?,
                Pass::Differentiable => candle_nn::ops::softmax(att, D::Minus1)?,
            })
        };
        let att = match &b.sinks {
            None => softmax(&att)?,
            // Each head's sink is one more logit in its softmax, with no value behind it.
            Some(s) => {
                let (_, _, tq, tk) = att.dims4()?;
                let col = s.reshape((1, nh, 1, 1))?.broadcast_as((1, nh, tq, 1))?;
                let with = Tensor::cat(&[&att, &col.contiguous()?], 3)?;
                softmax(&with)?.narrow(3, 0, tk)?.contiguous()?
            }
        };
        Ok(att.matmul(&v)?.transpose(1, 2)?.reshape((t, nh * hd))?)
    }

    /// A key/value cache for decoding up to `capacity` positions with [`Llama::decode_step`].
    pub fn kv_cache(&self, capacity: usize) -> Result<KvCache> {
        let c = &self.config;
        let windowed = if c.swa_layers.iter().any(|&w| w) {
            Some(self.rope_tables(capacity, c.rope_base_swa)?)
        } else {
            None
        };
        Ok(KvCache {
            // Reserved, not touched: pages a short generation never reaches are never resident.
            k: vec![Vec::with_capacity(capacity * c.n_head_kv * c.head_dim()); self.blocks.len()],
            v: vec![Vec::with_capacity(capacity * c.n_head_kv * c.head_dim()); self.blocks.len()],
            row: c.n_head_kv * c.head_dim(),
            pos: 0,
            capacity,
            global: self.rope_tables(capacity, c.rope_base)?,
            windowed,
        })
    }

    /// Incremental decoding, as a serving runtime does: the logits `[n_vocab]` after `token` at
    /// the cache's next position, each block attending to the cached keys and values of the
    /// positions before (which this step extends; on an error the cache is left as it was).
    /// Agrees with [`Llama::forward`] at every position (tested).
    pub fn decode_step(&self, token: u32, cache: &mut KvCache) -> Result<Tensor> {
        on_a_worker(|| self.decode_step_here(token, cache))
    }

    fn decode_step_here(&self, token: u32, cache: &mut KvCache) -> Result<Tensor> {
        let pos = cache.pos;
        if pos >= cache.capacity {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "the key/value cache holds {} positions",
                cache.capacity
            ))));
        }
        let at = |(cos, sin): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> {
            Ok((cos.narrow(0, pos, 1)?, sin.narrow(0, pos, 1)?))
        };
        let global = at(&cache.global)?;
        let windowed = cache.windowed.as_ref().map(at).transpose()?;
        let mut x = self.embed(&[token])?;
        let mut grown = Vec::with_capacity(self.blocks.len());
        for i in 0..self.blocks.len() {
            let keys = Keys::Cached {
                global: (&global.0, &global.1),
                windowed: windowed.as_ref().map(|(c, s)| (c, s)),
                past: (&cache.k[i], &cache.v[i]),
            };
            let out = self.block(i, &x, Pass::Fused, keys)?;
            grown.push(out.grown.expect("a cached pass returns its keys"));
            x = out.x;
        }
        let logits = self.logits_of(&self.final_norm(&x)?)?.flatten_all()?;
        cache.append(&grown, 1)?;
        Ok(logits)
    }

    /// A prompt into an empty cache in one pass, as a serving runtime's prefill: every block
    /// runs on the whole prompt under the causal mask (the products batched, reading each
    /// weight once for all its tokens), the cache takes the prompt's keys and values, and the
    /// logits `[n_vocab]` after the prompt's last token are returned. Then [`Llama::decode_step`]
    /// goes on from there. Agrees with the token-by-token steps to the kernels' rounding
    /// (tested); on an error the cache is left empty.
    pub fn prefill(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        on_a_worker(|| self.prefill_here(tokens, cache))
    }

    fn prefill_here(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let t = tokens.len();
        if cache.pos != 0 || t == 0 || t > cache.capacity {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "a prefill takes 1 to {} tokens into an empty cache ({} tokens, {} cached)",
                cache.capacity, t, cache.pos
            ))));
        }
        let mut x = self.embed(tokens)?;
        let ctx = self.attn_ctx(t)?;
        let mut grown = Vec::with_capacity(self.blocks.len());
        for i in 0..self.blocks.len() {
            let out = self.block(i, &x, Pass::Fused, Keys::Causal(&ctx))?;
            grown.push(out.grown.expect("a causal pass returns its keys"));
            x = out.x;
        }
        let last = x.narrow(0, t - 1, 1)?;
        let logits = self.logits_of(&self.final_norm(&last)?)?.flatten_all()?;
        cache.append(&grown, t)?;
        Ok(logits)
    }
}

/// Runs `f` on a thread of rayon's pool (at once where this is one). A pass of many small
/// products called from outside the pool hands each product to the pool and sleeps until it is
/// done, a wake-up of every thread per product; from a worker, the caller takes a share of each
/// product and the other workers are still spinning when the next one comes.
fn on_a_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// The keys and values of the positions decoded so far, per block position-major (`[positions]
/// [kv heads][head dim]`: a step appends one position's rows, and nothing is copied again), and
/// the RoPE tables up to the capacity.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Values a position holds per block: kv heads × head dim.
    row: usize,
    pos: usize,
    capacity: usize,
    /// RoPE `(cos, sin)` up to the capacity, of the global layers and the windowed ones.
    global: (Tensor, Tensor),
    windowed: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Each block's keys and values of the `t` positions just computed (`[1, kv heads, t, hd]`),
    /// after the cached ones. All checked before any is appended, so an error leaves the cache
    /// as it was.
    fn append(&mut self, grown: &[(Tensor, Tensor)], t: usize) -> Result<()> {
        let refuse = |what: String| Error::Candle(candle_core::Error::Msg(what));
        if grown.len() != self.k.len() || self.pos + t > self.capacity {
            return Err(refuse(format!(
                "{} blocks' keys of {t} positions for a cache of {} blocks holding {} of {}",
                grown.len(),
                self.k.len(),
                self.pos,
                self.capacity
            )));
        }
        let mut rows = Vec::with_capacity(grown.len());
        for (k, v) in grown {
            let (one, heads, n, hd) = k.dims4()?;
            if one != 1 || n != t || heads * hd != self.row || v.dims4()? != (1, heads, t, hd) {
                return Err(refuse(format!(
                    "keys {:?} and values {:?} for {t} positions of {} values",
                    k.dims(),
                    v.dims(),
                    self.row
                )));
            }
            // `[1, heads, t, hd]` to position-major `[t, heads, hd]`.
            let pm = |x: &Tensor| -> Result<Vec<f32>> {
                Ok(x.transpose(1, 2)?.flatten_all()?.to_vec1()?)
            };
            rows.push((pm(k)?, pm(v)?));
        }
        for (i, (k, v)) in rows.into_iter().enumerate() {
            self.k[i].extend_from_slice(&k);
            self.v[i].extend_from_slice(&v);
        }
        self.pos += t;
        Ok(())
    }

    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

impl Llama {
    /// Logits `[T, n_vocab]` of one sequence through operations that all have gradients, for
    /// training (candle's fused RMSNorm, softmax and RoPE kernels have none): RMSNorm, RoPE and
    /// the attention softmax written out. Exact f32 arithmetic; agrees with [`Llama::forward`]
    /// on an exactly loaded model to float rounding (tested).
    pub fn forward_train(&self, tokens: &[u32]) -> Result<Tensor> {
        let t = tokens.len();
        let ctx = self.attn_ctx(t)?;
        let eps = self.config.rms_eps;
        let mut x = self.embed(tokens)?;
        for i in 0..self.blocks.len() {
            x = self.block_forward_train(i, &x, &ctx)?;
        }
        let x = rms_norm_diff(&x, &self.output_norm, eps)?;
        self.unscale_logits(self.output()?.forward(&x)?)
    }

    fn block_forward_train(&self, i: usize, x: &Tensor, ctx: &AttnCtx) -> Result<Tensor> {
        Ok(self.block(i, x, Pass::Differentiable, Keys::Causal(ctx))?.x)
    }
}

/// The arithmetic of a block pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// candle's fused kernels (RMSNorm, RoPE, softmax): inference.
    Fused,
    /// Operations that all have gradients: training.
    Differentiable,
}

/// Where a block's keys and values come from.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// The sequence's own, from position 0, under the causal mask.
    Causal(&'a AttnCtx),
    /// The cache's plus this one position's, with this position's RoPE tables (global layers'
    /// and windowed ones').
    Cached {
        global: (&'a Tensor, &'a Tensor),
        windowed: Option<(&'a Tensor, &'a Tensor)>,
        /// The cached keys and values, position-major: `[positions][kv heads][hd]`.
        past: (&'a [f32], &'a [f32]),
    },
}

impl Keys<'_> {
    /// The RoPE tables of the positions computed, for a windowed layer or a global one.
    fn rope(&self, windowed: bool) -> (&Tensor, &Tensor) {
        match self {
            Keys::Causal(ctx) => {
                let r = ctx.rotary(windowed);
                (&r.cos, &r.sin)
            }
            Keys::Cached {
                global,
                windowed: w,
                ..
            } => match (windowed, w) {
                (true, Some(w)) => *w,
                _ => *global,
            },
        }
    }
}

/// What a block pass returns: the new hidden states, the inputs its linear layers saw, and
/// the keys and values of the positions computed (`[1, kv heads, T, hd]`; the cache's own are
/// not among them).
struct BlockOut {
    x: Tensor,
    inputs: [Tensor; 4],
    grown: Option<(Tensor, Tensor)>,
}

/// RMSNorm from differentiable operations: x / √(mean(x²) + ε) · w.
fn rms_norm_diff(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&r)?.broadcast_mul(w)?)
}

/// RoPE on adjacent pairs (ggml's normal mode) from differentiable operations, for `x`
/// `[1, heads, T, hd]` and tables `[T, hd/2]`.
fn rope_diff(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    let pairs = x.reshape((b, h, t, hd / 2, 2))?;
    let (x0, x1) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
    let cos = cos.narrow(0, 0, t)?.reshape((1, 1, t, hd / 2, 1))?;
    let sin = sin.narrow(0, 0, t)?.reshape((1, 1, t, hd / 2, 1))?;
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Ok(Tensor::cat(&[y0, y1], 4)?.reshape((b, h, t, hd))?)
}

/// RoPE on the two halves of a head (ggml's NEOX mode) from differentiable operations, for
/// `x` `[1, heads, T, hd]` and tables `[T, hd/2]`.
fn rope_halves_diff(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, t, hd) = x.dims4()?;
    let (x0, x1) = (x.narrow(3, 0, hd / 2)?, x.narrow(3, hd / 2, hd / 2)?);
    let cos = cos.narrow(0, 0, t)?.reshape((1, 1, t, hd / 2))?;
    let sin = sin.narrow(0, 0, t)?.reshape((1, 1, t, hd / 2))?;
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Ok(Tensor::cat(&[y0, y1], 3)?)
}

/// What every block of one sequence length shares: RoPE tables and the causal mask, of the
/// global layers and (where the model has them) of the windowed ones.
#[derive(Debug, Clone)]
pub struct AttnCtx {
    global: Rotary,
    windowed: Option<Rotary>,
}

impl AttnCtx {
    fn rotary(&self, windowed: bool) -> &Rotary {
        match (windowed, &self.windowed) {
            (true, Some(w)) => w,
            _ => &self.global,
        }
    }
}

/// RoPE tables `[T, hd/2]` and the additive mask `[T, T]` of one kind of layer.
#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

/// Repeats each key/value head `n` times for grouped-query attention: `[1, kv, T, hd]` → `[1, kv·n, T, hd]`.
fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, n, t, hd))?
        .reshape((b, kv * n, t, hd))?)
}

/// Argmax of the last dimension, for tests and greedy decoding.
pub fn argmax_last(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1()?)
}

/// All of a tensor's values, in order.
fn flat(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// The heads of one attention layer.
struct AttnShape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The factor on every query·key logit.
    scale: f32,
    /// How many of the last positions a query sees (0: all).
    window: usize,
}

/// One query position's attention (`q` `[heads][hd]`, after RoPE) over the cached positions
/// (`past`, keys and values `[positions][kv heads][hd]`) and its own (`new`, `[kv heads][hd]`):
/// query head `h` reads kv head `h / (heads / kv heads)`, as grouped-query attention repeats
/// them; a windowed layer sees only its last `window` positions; a head's sink is one more
/// logit in its softmax with no value behind it. Returns `[heads][hd]`.
fn attend_one(
    s: &AttnShape,
    q: &[f32],
    past: (&[f32], &[f32]),
    new: (&[f32], &[f32]),
    sinks: Option<&[f32]>,
) -> Vec<f32> {
    use rayon::prelude::*;
    let (hd, row) = (s.head_dim, s.kv_heads * s.head_dim);
    let cached = past.0.len() / row;
    let n = cached + 1;
    let from = if s.window > 0 {
        n.saturating_sub(s.window)
    } else {
        0
    };
    let group = s.heads / s.kv_heads;
    // Position `p`'s key and value rows of kv head `g`.
    let at = |p: usize, g: usize| -> (&[f32], &[f32]) {
        if p < cached {
            let o = p * row + g * hd;
            (&past.0[o..o + hd], &past.1[o..o + hd])
        } else {
            (&new.0[g * hd..(g + 1) * hd], &new.1[g * hd..(g + 1) * hd])
        }
    };
    let head = |h: usize, out: &mut [f32]| {
        let g = h / group;
        let qh = &q[h * hd..(h + 1) * hd];
        let logits: Vec<f32> = (from..n)
            .map(|p| s.scale * crate::kernels::dot(at(p, g).0, qh))
            .collect();
        let sink = sinks.map(|v| v[h]);
        let max = logits
            .iter()
            .copied()
            .chain(sink)
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f32 = weights.iter().sum::<f32>() + sink.map_or(0.0, |l| (l - max).exp());
        out.fill(0.0);
        for (p, w) in (from..n).zip(&weights) {
            let w = w / total;
            for (o, v) in out.iter_mut().zip(at(p, g).1) {
                *o += w * v;
            }
        }
    };
    let mut y = vec![0f32; s.heads * hd];
    // Long contexts spread the heads over the threads; a short one is not worth a hand-off.
    if (n - from) * s.heads * hd >= 1 << 16 {
        y.par_chunks_mut(hd)
            .enumerate()
            .for_each(|(h, out)| head(h, out));
    } else {
        y.chunks_mut(hd)
            .enumerate()
            .for_each(|(h, out)| head(h, out));
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One query's attention over a position-major cache equals candle's over the same keys
    /// laid out `[1, kv heads, positions, hd]` with [`repeat_kv`] (the full pass's arithmetic):
    /// grouped-query heads, with and without a window, with and without sinks.
    #[test]
    fn one_query_attends_as_the_repeated_heads_do() {
        let dev = Device::Cpu;
        let (heads, kv_heads, hd, cached) = (6, 2, 8, 9);
        let mut rng = frugal_formats::rng::SplitMix64(5);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| 2.0 * rng.next_f64() as f32 - 1.0).collect() };
        let row = kv_heads * hd;
        let (past_k, past_v) = (draw(cached * row), draw(cached * row));
        let (new_k, new_v) = (draw(row), draw(row));
        let q = draw(heads * hd);
        let sinks = draw(heads);
        // `[positions][kv][hd]` (the cache, then the new position) to `[1, kv, positions, hd]`.
        let heads_major = |past: &[f32], new: &[f32]| -> Tensor {
            let all: Vec<f32> = past.iter().chain(new).copied().collect();
            Tensor::from_vec(all, (1, cached + 1, kv_heads, hd), &dev)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let k = repeat_kv(heads_major(&past_k, &new_k), heads / kv_heads).unwrap();
        let v = repeat_kv(heads_major(&past_v, &new_v), heads / kv_heads).unwrap();
        let qt = Tensor::from_vec(q.clone(), (1, heads, 1, hd), &dev).unwrap();
        let scale = 0.3f32;
        for window in [0, 4] {
            for sink in [false, true] {
                let shape = AttnShape {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    scale,
                    window,
                };
                let got = attend_one(
                    &shape,
                    &q,
                    (&past_k, &past_v),
                    (&new_k, &new_v),
                    sink.then_some(&sinks[..]),
                );
                let n = cached + 1;
                let from = if window > 0 { n - window } else { 0 };
                let att = (qt.matmul(&k.t().unwrap()).unwrap() * f64::from(scale)).unwrap();
                let mask: Vec<f32> = (0..n)
                    .map(|p| if p < from { f32::NEG_INFINITY } else { 0.0 })
                    .collect();
                let att = att
                    .broadcast_add(&Tensor::from_vec(mask, n, &dev).unwrap())
                    .unwrap();
                let att = if sink {
                    let col = Tensor::from_vec(sinks.clone(), (1, heads, 1, 1), &dev).unwrap();
                    let with = Tensor::cat(&[&att, &col], 3).unwrap();
                    candle_nn::ops::softmax_last_dim(&with)
                        .unwrap()
                        .narrow(3, 0, n)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                } else {
                    candle_nn::ops::softmax_last_dim(&att).unwrap()
                };
                let want: Vec<f32> = att
                    .matmul(&v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "window {window} sink {sink} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}
