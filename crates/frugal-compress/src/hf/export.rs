//! `frugal export`: a GGUF model as a Hugging Face checkpoint folder that `transformers` loads
//! (`LlamaForCausalLM`) — so that a pruned, distilled or quantized model can be fine-tuned in
//! PyTorch. Tensors are decoded to F32 (a quantized model is exported dequantized), Q and K
//! rows are put back in Hugging Face's order (the inverse of llama.cpp's permutation), and
//! each is written to `model.safetensors` before the next is decoded. `config.json`,
//! `tokenizer.json` (rebuilt from the GGUF vocabulary, merges and pre-tokenizer),
//! `tokenizer_config.json` (special tokens, chat template) and a `README.md` model card carrying
//! the GGUF's `general.*` names are written beside it; the folder appears whole or not at all.
//!
//! Checks: `frugal convert` of the folder gives back the GGUF's F32 tensors exactly, and is
//! byte-identical to llama.cpp's `convert_hf_to_gguf.py` of it (CI, `hf_export.rs`);
//! `transformers`' logits on Brown text match Frugal's F32 forward
//! (`bench/make-golden-export.sh`).
//!
//! Covered: the `llama` architecture with a GPT-2-style BPE vocabulary whose pre-tokenizer is
//! `smollm` or `gpt-2`, `qwen2`, `qwen3` and `phi3` with the same, and `gemma3` (`Gemma3ForCausalLM`) with its SentencePiece vocabulary,
//! written as a `tokenizer.model` (the pieces, scores and types of the GGUF) with the control
//! and user-defined tokens listed in `tokenizer_config.json`, as Gemma's own folders do. Gemma's
//! norms are stored in the GGUF with llama.cpp's `+ 1.0` folded in; the export writes `w - 1`,
//! exact in F32 whenever a preimage exists (the report counts values that have none). Anything
//! else is refused naming the key.

use super::convert::{
    encode, split_suffix, unpermute_rows, Llama3Rope, NameTable, GEMMA3_NAMES, LLAMA_NAMES,
    PHI3_NAMES, QWEN_NAMES,
};
use super::{HfError, OutType};
use frugal_formats::gguf::{GgmlType, GgufFile, Value};
use frugal_formats::output::{write_atomic, AtomicDir};
use frugal_formats::safetensors::{Dtype, SafetensorsStreamWriter, StTensorSpec};
use frugal_formats::sentencepiece::{self as sp, PieceType, SpModel};
use serde::Serialize;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `frugal export` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ExportReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub architecture: String,
    pub dtype: OutType,
    pub tensors: usize,
    /// Tensors that were quantized in the input and are exported decoded.
    pub dequantized: usize,
    /// Gemma norm values `x` for which no F32 `w` has `w + 1 == x` (written as the nearest):
    /// a conversion back cannot reproduce them exactly. 0 for other architectures.
    #[serde(default)]
    pub inexact_norm_values: u64,
    /// Llama 3's `rope_freqs`, written as `rope_scaling`: the largest difference, in units in
    /// the last place, between the file's factors and those the parameters give (0: a
    /// conversion back reproduces them exactly). `None` without such factors.
    #[serde(default)]
    pub rope_freqs_ulp: Option<u32>,
    pub bytes: u64,
}

impl ExportReport {
    pub fn to_text(&self) -> String {
        format!(
            "{} -> {} ({}, {}): {} tensors ({} dequantized), model.safetensors {} bytes{}\n",
            self.input.display(),
            self.output.display(),
            self.architecture,
            serde_json::to_string(&self.dtype)
                .unwrap_or_default()
                .trim_matches('"'),
            self.tensors,
            self.dequantized,
            self.bytes,
            if self.inexact_norm_values > 0 {
                format!(
                    "; {} norm values have no exact preimage of llama.cpp's +1",
                    self.inexact_norm_values
                )
            } else {
                String::new()
            }
        )
    }
}

/// The `config.json` keys every exported class has.
#[derive(Serialize)]
struct CommonConfig {
    architectures: [&'static str; 1],
    model_type: &'static str,
    hidden_size: u64,
    intermediate_size: u64,
    num_attention_heads: u64,
    num_key_value_heads: u64,
    num_hidden_layers: u64,
    vocab_size: u64,
    max_position_embeddings: u64,
    rms_norm_eps: f64,
    rope_theta: f64,
    tie_word_embeddings: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<u32>,
    torch_dtype: &'static str,
    use_cache: bool,
}

/// `config.json` of an exported Llama model.
#[derive(Serialize)]
struct LlamaConfigJson {
    #[serde(flatten)]
    common: CommonConfig,
    hidden_act: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_scaling: Option<Llama3RopeJson>,
    attention_bias: bool,
    mlp_bias: bool,
}

/// `config.json` of an exported Gemma 3 model (transformers' `Gemma3TextConfig`; every key
/// llama.cpp's converter reads is written, so its output does not depend on whether its
/// `transformers` knows the class).
#[derive(Serialize)]
struct Gemma3ConfigJson {
    #[serde(flatten)]
    common: CommonConfig,
    hidden_activation: &'static str,
    head_dim: u64,
    query_pre_attn_scalar: u64,
    rope_local_base_freq: f64,
    rope_scaling: Option<()>,
    sliding_window: u64,
    sliding_window_pattern: u64,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    attention_bias: bool,
    attention_dropout: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unk_token_id: Option<u32>,
}

/// `rope_scaling` of a Llama 3 model.
#[derive(Serialize)]
struct Llama3RopeJson {
    rope_type: &'static str,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max_position_embeddings: u64,
}

impl From<Llama3Rope> for Llama3RopeJson {
    fn from(r: Llama3Rope) -> Self {
        Llama3RopeJson {
            rope_type: "llama3",
            factor: r.factor,
            low_freq_factor: r.low_freq_factor,
            high_freq_factor: r.high_freq_factor,
            original_max_position_embeddings: r.original_max_position_embeddings as u64,
        }
    }
}

fn bad(key: &str, reason: impl Into<String>) -> HfError {
    HfError::Unsupported(format!("`{key}`: {}", reason.into()))
}

fn get<'a>(f: &'a GgufFile, key: &str) -> Option<&'a Value> {
    f.header.get(key)
}

fn need_u64(f: &GgufFile, key: &str) -> Result<u64, HfError> {
    get(f, key)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(key, "is missing or not a count"))
}

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<&'a [String], HfError> {
    match get(f, key) {
        Some(Value::Array(frugal_formats::gguf::Array::String(v))) => Ok(v),
        _ => Err(bad(key, "is missing or not a list of strings")),
    }
}

/// An f32 hyperparameter as the shortest decimal that reads back as the same f32.
fn short(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

/// The Hugging Face pre-tokenizer of a llama.cpp pre-tokenizer name (the ones whose
/// `tokenizers` form is known and checked by `convert_hf_to_gguf.py`'s hash).
fn pre_tokenizer(pre: &str) -> Result<Json, HfError> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    Ok(match pre {
        "gpt-2" => byte_level,
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        other => {
            return Err(bad(
                "tokenizer.ggml.pre",
                format!("`{other}` is not exported yet (smollm and gpt-2 are)"),
            ))
        }
    })
}

/// The architectures exported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Gemma3,
    Qwen2,
    Qwen3,
    Phi3,
}

impl Arch {
    fn names(self) -> &'static NameTable {
        match self {
            Arch::Llama => &LLAMA_NAMES,
            Arch::Gemma3 => &GEMMA3_NAMES,
            Arch::Qwen2 | Arch::Qwen3 => &QWEN_NAMES,
            Arch::Phi3 => &PHI3_NAMES,
        }
    }
}

/// `config.json` of an exported Phi-3 model (transformers' `Phi3Config`).
#[derive(Serialize)]
struct Phi3ConfigJson {
    #[serde(flatten)]
    common: CommonConfig,
    hidden_act: &'static str,
    original_max_position_embeddings: u64,
    rope_scaling: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<u64>,
    resid_pdrop: f64,
    embd_pdrop: f64,
    attention_dropout: f64,
}

/// `config.json` of an exported Qwen 2 or Qwen 3 model (transformers' `Qwen2Config`,
/// `Qwen3Config`).
#[derive(Serialize)]
struct QwenConfigJson {
    #[serde(flatten)]
    common: CommonConfig,
    hidden_act: &'static str,
    /// Qwen 3 only (its class default, 128, is not `hidden / heads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<u64>,
    /// Qwen 3 only (Qwen 2 always has Q, K and V biases).
    #[serde(skip_serializing_if = "Option::is_none")]
    attention_bias: Option<bool>,
    rope_scaling: Option<()>,
    use_sliding_window: bool,
    sliding_window: Option<u64>,
    max_window_layers: u64,
}

/// The special tokens' ids the GGUF names (`tokenizer.ggml.{bos,eos,unknown,padding}_token_id`).
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
}

impl SpecialIds {
    fn read(f: &GgufFile, n_tokens: usize) -> Result<Self, HfError> {
        let id = |k: &str| -> Result<Option<u32>, HfError> {
            let key = format!("tokenizer.ggml.{k}_token_id");
            match get(f, &key).and_then(Value::as_u64) {
                Some(v) if v as usize >= n_tokens => Err(bad(&key, "is outside the vocabulary")),
                v => Ok(v.map(|v| v as u32)),
            }
        };
        Ok(SpecialIds {
            bos: id("bos")?,
            eos: id("eos")?,
            unk: id("unknown")?,
            pad: id("padding")?,
        })
    }

    fn named(&self) -> [(&'static str, Option<u32>); 4] {
        [
            ("bos_token", self.bos),
            ("eos_token", self.eos),
            ("unk_token", self.unk),
            ("pad_token", self.pad),
        ]
    }
}

/// The tokenizer files an export writes: (file name, bytes).
type TokenizerFiles = Vec<(&'static str, Vec<u8>)>;

fn bool_key(f: &GgufFile, key: &str) -> Option<bool> {
    match get(f, key) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// `tokenizer_config.json` keys both vocabularies share: special tokens by content, the
/// chat template, the context length.
fn tokenizer_config_common(
    f: &GgufFile,
    tokens: &[String],
    ids: &SpecialIds,
    context_key: &str,
    cfg: &mut serde_json::Map<String, Json>,
) {
    for (k, v) in ids.named() {
        if let Some(i) = v {
            cfg.insert(k.into(), Json::String(tokens[i as usize].clone()));
        }
    }
    if let Some(t) = get(f, "tokenizer.chat_template").and_then(Value::as_str) {
        cfg.insert("chat_template".into(), Json::String(t.into()));
    }
    cfg.insert("clean_up_tokenization_spaces".into(), Json::Bool(false));
    if let Some(n) = get(f, context_key).and_then(Value::as_u64) {
        cfg.insert("model_max_length".into(), Json::from(n));
    }
}

/// The GGUF's token types (one per token).
fn token_types(f: &GgufFile, n: usize) -> Result<Vec<i32>, HfError> {
    match get(f, "tokenizer.ggml.token_type") {
        Some(Value::Array(frugal_formats::gguf::Array::I32(v))) if v.len() == n => Ok(v.clone()),
        _ => Err(bad(
            "tokenizer.ggml.token_type",
            "is missing or of the wrong length",
        )),
    }
}

/// The tokenizer files of a GPT-2-style BPE vocabulary: `tokenizer.json` and
/// `tokenizer_config.json`.
fn bpe_tokenizer_files(
    f: &GgufFile,
    context_key: &str,
) -> Result<(TokenizerFiles, SpecialIds), HfError> {
    if get(f, "tokenizer.ggml.model").and_then(Value::as_str) != Some("gpt2") {
        return Err(bad(
            "tokenizer.ggml.model",
            "only GPT-2-style BPE vocabularies are exported for llama",
        ));
    }
    let pre = get(f, "tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre_tok = pre_tokenizer(pre)?;
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let types = token_types(f, tokens.len())?;
    let ids = SpecialIds::read(f, tokens.len())?;
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), Json::from(i as u32));
    }
    if vocab.len() != tokens.len() {
        return Err(bad("tokenizer.ggml.tokens", "holds a token twice"));
    }
    let added: Vec<super::vocab::AddedToken> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == super::vocab::CONTROL || ty == super::vocab::USER_DEFINED)
        .map(|(i, (t, &ty))| added_token(i, t, ty == super::vocab::CONTROL))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tok,
        "post_processor": byte_level,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    let mut cfg = serde_json::Map::new();
    if let Some(b) = bool_key(f, "tokenizer.ggml.add_space_prefix") {
        cfg.insert("add_prefix_space".into(), Json::Bool(b));
    }
    tokenizer_config_common(f, tokens, &ids, context_key, &mut cfg);
    cfg.insert(
        "tokenizer_class".into(),
        Json::String("GPT2Tokenizer".into()),
    );
    Ok((
        vec![
            ("tokenizer.json", pretty(&tokenizer)),
            ("tokenizer_config.json", pretty(&Json::Object(cfg))),
        ],
        ids,
    ))
}

fn added_token(id: usize, content: &str, special: bool) -> super::vocab::AddedToken {
    super::vocab::AddedToken {
        id: id as u32,
        content: content.to_string(),
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special,
    }
}

/// The tokenizer files of a SentencePiece vocabulary (`tokenizer.ggml.model` "llama"):
/// `tokenizer.model` holding the GGUF's pieces, scores and types, and `tokenizer_config.json`
/// listing the control and user-defined tokens whose score is llama.cpp's -1000 (what it reads
/// back from that list), as Gemma's own folders do.
fn sp_tokenizer_files(
    f: &GgufFile,
    context_key: &str,
    arch: Arch,
) -> Result<(TokenizerFiles, SpecialIds), HfError> {
    if get(f, "tokenizer.ggml.model").and_then(Value::as_str) != Some("llama") {
        return Err(bad(
            "tokenizer.ggml.model",
            "only SentencePiece vocabularies are exported for gemma3 (and, with GPT-2's, llama)",
        ));
    }
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let types = token_types(f, tokens.len())?;
    let scores = match get(f, "tokenizer.ggml.scores") {
        Some(Value::Array(frugal_formats::gguf::Array::F32(v))) if v.len() == tokens.len() => v,
        _ => {
            return Err(bad(
                "tokenizer.ggml.scores",
                "is missing or of the wrong length",
            ))
        }
    };
    let ids = SpecialIds::read(f, tokens.len())?;
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut listed = Vec::new();
    for (i, ((t, &ty), &score)) in tokens.iter().zip(&types).zip(scores).enumerate() {
        let kind = PieceType::from_token_type(ty).ok_or_else(|| {
            bad(
                "tokenizer.ggml.token_type",
                format!("token {i} has type {ty}"),
            )
        })?;
        if kind == PieceType::UserDefined || (kind == PieceType::Control && score == -1000.0) {
            listed.push(added_token(i, t, kind == PieceType::Control));
        }
        pieces.push(sp::Piece {
            piece: t.clone(),
            score,
            kind,
        });
    }
    // SentencePiece needs an unknown piece. A GGUF whose unknown token is a listed control
    // token (Gemma's `<unk>`: llama.cpp's converter turned it into one from that list) gets it
    // back as SentencePiece's unknown piece; the list makes it a control token again.
    if !pieces.iter().any(|p| p.kind == PieceType::Unknown) {
        match ids.unk.map(|u| &mut pieces[u as usize]) {
            Some(p) if p.kind == PieceType::Control && p.score == -1000.0 => {
                p.kind = PieceType::Unknown
            }
            _ => {
                return Err(bad(
                    "tokenizer.ggml.token_type",
                    "no unknown token (SentencePiece needs one)",
                ))
            }
        }
    }
    let unk = pieces
        .iter()
        .position(|p| p.kind == PieceType::Unknown)
        .unwrap_or(0) as i32;
    let model = SpModel {
        trainer: sp::Trainer {
            // llama.cpp's SentencePiece tokenizer merges by score: SentencePiece's BPE.
            model_type: sp::ModelType::Bpe,
            vocab_size: pieces.len() as i32,
            byte_fallback: pieces.iter().any(|p| p.kind == PieceType::Byte),
            unk_id: unk,
            bos_id: ids.bos.map_or(-1, |v| v as i32),
            eos_id: ids.eos.map_or(-1, |v| v as i32),
            pad_id: ids.pad.map_or(-1, |v| v as i32),
        },
        normalizer: sp::Normalizer {
            name: "identity".into(),
            add_dummy_prefix: bool_key(f, "tokenizer.ggml.add_space_prefix").unwrap_or(true),
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
        },
        pieces,
    };
    model.validate().map_err(|e| {
        bad(
            "tokenizer.ggml.tokens",
            format!("not a valid SentencePiece model: {}", e.reason),
        )
    })?;
    let mut cfg = serde_json::Map::new();
    for typ in ["bos", "eos", "sep"] {
        if let Some(b) = bool_key(f, &format!("tokenizer.ggml.add_{typ}_token")) {
            cfg.insert(format!("add_{typ}_token"), Json::Bool(b));
        }
    }
    if arch == Arch::Llama {
        // Llama's converter writes `add_space_prefix` from here (Gemma's always false).
        if let Some(b) = bool_key(f, "tokenizer.ggml.add_space_prefix") {
            cfg.insert("add_prefix_space".into(), Json::Bool(b));
        }
    }
    let decoder: serde_json::Map<String, Json> = listed
        .iter()
        .map(|a| {
            (
                a.id.to_string(),
                json!({"content": a.content, "lstrip": false, "normalized": false,
                       "rstrip": false, "single_word": false, "special": a.special}),
            )
        })
        .collect();
    cfg.insert("added_tokens_decoder".into(), Json::Object(decoder));
    tokenizer_config_common(f, tokens, &ids, context_key, &mut cfg);
    cfg.insert("spaces_between_special_tokens".into(), Json::Bool(false));
    cfg.insert(
        "tokenizer_class".into(),
        Json::String(
            if arch == Arch::Gemma3 {
                "GemmaTokenizer"
            } else {
                "LlamaTokenizer"
            }
            .into(),
        ),
    );
    Ok((
        vec![
            ("tokenizer.model", model.to_bytes()),
            ("tokenizer_config.json", pretty(&Json::Object(cfg))),
        ],
        ids,
    ))
}

fn pretty(v: &dyn erased::Ser) -> Vec<u8> {
    let mut b = v.to_pretty().into_bytes();
    b.push(b'\n');
    b
}

/// One tensor to write: its index in the GGUF, Hugging Face name and shape, the heads to
/// un-permute by, and whether Gemma's `+ 1` is to be taken off.
struct Out {
    index: usize,
    name: String,
    shape: Vec<u64>,
    heads: Option<usize>,
    unshift: bool,
}

/// Exports `input` to the folder `out` (which must not exist).
pub fn export(input: &Path, out: &Path, dtype: OutType) -> Result<ExportReport, HfError> {
    let f = GgufFile::open(input)?;
    let arch_name = f.header.architecture().unwrap_or("").to_string();
    let arch = match arch_name.as_str() {
        "llama" => Arch::Llama,
        "gemma3" => Arch::Gemma3,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        "phi3" => Arch::Phi3,
        other => {
            return Err(bad(
                "general.architecture",
                format!("`{other}` is not exported yet (llama, gemma3, qwen2, qwen3 and phi3 are)"),
            ))
        }
    };
    if dtype == OutType::Q8_0 {
        return Err(HfError::Unsupported(
            "--dtype q8_0: a Hugging Face checkpoint holds f32, f16 or bf16".into(),
        ));
    }
    let key = |k: &str| format!("{arch_name}.{k}");
    let n_head = need_u64(&f, &key("attention.head_count"))?;
    let n_kv = get(&f, &key("attention.head_count_kv"))
        .and_then(Value::as_u64)
        .unwrap_or(n_head);
    let hidden = need_u64(&f, &key("embedding_length"))?;
    let n_layer = need_u64(&f, &key("block_count"))?;
    let n_ff = need_u64(&f, &key("feed_forward_length"))?;
    let n_ctx = need_u64(&f, &key("context_length"))?;
    for k in [
        "rope.scaling.type",
        "rope.freq_scale",
        "rope.scaling.factor",
    ] {
        if get(&f, &key(k)).is_some() {
            return Err(bad(&key(k), "RoPE scaling is not exported yet"));
        }
    }
    let rope_dim = get(&f, &key("rope.dimension_count"))
        .and_then(Value::as_u64)
        .unwrap_or(hidden / n_head.max(1));
    // Llama 3's RoPE factors: the `rope_scaling` that gives them exactly, else refused.
    let llama3_rope = match f.tensor("rope_freqs.weight") {
        None => None,
        Some(info) if arch == Arch::Llama => {
            let v = f32_values(&f, info)?;
            let base = get(&f, &key("rope.freq_base"))
                .and_then(Value::as_f64)
                .unwrap_or(10000.0);
            Some(Llama3Rope::infer(&v, base, rope_dim).ok_or_else(|| {
                bad(
                    "rope_freqs.weight",
                    "no Llama 3 rope_scaling (factor, low/high frequency factors, original \
                     context) reproduces these factors",
                )
            })?)
        }
        Some(_) => {
            return Err(bad(
                "rope_freqs.weight",
                format!("RoPE factors are not exported for {arch_name}"),
            ))
        }
    };
    let eps = get(&f, &key("attention.layer_norm_rms_epsilon"))
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(&key("attention.layer_norm_rms_epsilon"), "is missing"))?
        as f32;
    let f32_key = |k: &str| get(&f, &key(k)).and_then(Value::as_f64).map(|v| v as f32);
    let torch_dtype = match dtype {
        OutType::F16 => "float16",
        OutType::Bf16 => "bfloat16",
        _ => "float32",
    };
    let tied = f.tensor("output.weight").is_none();

    let (files, ids) = match arch {
        // A Llama GGUF with a SentencePiece vocabulary (Llama 2's) gets a tokenizer.model.
        Arch::Llama if get(&f, "tokenizer.ggml.model").and_then(Value::as_str) == Some("llama") => {
            sp_tokenizer_files(&f, &key("context_length"), arch)?
        }
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => {
            bpe_tokenizer_files(&f, &key("context_length"))?
        }
        Arch::Gemma3 => sp_tokenizer_files(&f, &key("context_length"), arch)?,
    };
    let n_tokens = strings(&f, "tokenizer.ggml.tokens")?.len() as u64;

    // Tensors, in the file's order, with their HF names.
    let mut plan: Vec<Out> = Vec::new();
    for (i, t) in f.header.tensors.iter().enumerate() {
        if t.name == "rope_freqs.weight" {
            continue; // in config.json's rope_scaling
        }
        let name = arch.names().to_hf(&t.name).ok_or_else(|| {
            bad(
                &t.name,
                format!("tensor is not exported ({arch_name} rows only)"),
            )
        })?;
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        let (stem, _) = split_suffix(&t.name);
        let heads = match arch {
            Arch::Llama if stem.ends_with(".attn_q") => Some(n_head as usize),
            Arch::Llama if stem.ends_with(".attn_k") => Some(n_kv as usize),
            _ => None,
        };
        if let Some(h) = heads {
            if h == 0 || !(shape[0] as usize).is_multiple_of(2 * h) {
                return Err(bad(
                    &t.name,
                    format!("{} rows do not split into {h} heads", shape[0]),
                ));
            }
        }
        plan.push(Out {
            index: i,
            name,
            shape,
            heads,
            unshift: arch == Arch::Gemma3 && t.name.ends_with("norm.weight"),
        });
    }

    let embd_rows = f
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| bad("token_embd.weight", "is missing"))?;
    let common =
        |class: &'static str, model_type: &'static str, vocab_size: u64, theta: f32| CommonConfig {
            architectures: [class],
            model_type,
            hidden_size: hidden,
            intermediate_size: n_ff,
            num_attention_heads: n_head,
            num_key_value_heads: n_kv,
            num_hidden_layers: n_layer,
            vocab_size,
            max_position_embeddings: n_ctx,
            rms_norm_eps: short(eps),
            rope_theta: short(f32_key("rope.freq_base").unwrap_or(theta)),
            tie_word_embeddings: tied,
            bos_token_id: ids.bos,
            eos_token_id: ids.eos,
            pad_token_id: ids.pad,
            torch_dtype,
            use_cache: true,
        };
    let config: Vec<u8> = match arch {
        Arch::Phi3 => {
            if f.tensor("blk.0.attn_qkv.bias").is_some() {
                return Err(bad(
                    "blk.0.attn_qkv.bias",
                    "transformers' Phi-3 has no attention biases",
                ));
            }
            let window = get(&f, &key("attention.sliding_window"))
                .and_then(Value::as_u64)
                .filter(|&w| w > 0);
            pretty(&Phi3ConfigJson {
                common: common("Phi3ForCausalLM", "phi3", embd_rows, 10000.0),
                hidden_act: "silu",
                original_max_position_embeddings: get(
                    &f,
                    &key("rope.scaling.original_context_length"),
                )
                .and_then(Value::as_u64)
                .unwrap_or(n_ctx),
                rope_scaling: None,
                partial_rotary_factor: (rope_dim * n_head != hidden)
                    .then(|| (rope_dim * n_head) as f64 / hidden as f64),
                sliding_window: window,
                resid_pdrop: 0.0,
                embd_pdrop: 0.0,
                attention_dropout: 0.0,
            })
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            let bias = f.tensor("blk.0.attn_q.bias").is_some();
            if arch == Arch::Qwen2 && !bias {
                return Err(bad(
                    "blk.0.attn_q.bias",
                    "is missing: transformers' Qwen2 always has Q, K and V biases",
                ));
            }
            let head_dim = get(&f, &key("attention.key_length"))
                .and_then(Value::as_u64)
                .unwrap_or(hidden / n_head.max(1));
            let qwen3 = arch == Arch::Qwen3;
            pretty(&QwenConfigJson {
                common: common(
                    if qwen3 {
                        "Qwen3ForCausalLM"
                    } else {
                        "Qwen2ForCausalLM"
                    },
                    if qwen3 { "qwen3" } else { "qwen2" },
                    embd_rows,
                    10000.0,
                ),
                hidden_act: "silu",
                head_dim: if qwen3 {
                    Some(head_dim)
                } else if head_dim != hidden / n_head.max(1) {
                    return Err(bad(
                        &key("attention.key_length"),
                        "Qwen 2's heads are hidden_size / heads wide",
                    ));
                } else {
                    None
                },
                attention_bias: qwen3.then_some(bias),
                rope_scaling: None,
                use_sliding_window: false,
                sliding_window: None,
                max_window_layers: n_layer,
            })
        }
        Arch::Llama => {
            let vocab_size = get(&f, &key("vocab_size"))
                .and_then(Value::as_u64)
                .unwrap_or(n_tokens);
            pretty(&LlamaConfigJson {
                common: common("LlamaForCausalLM", "llama", vocab_size, 10000.0),
                hidden_act: "silu",
                head_dim: (rope_dim != hidden / n_head.max(1)).then_some(rope_dim),
                rope_scaling: llama3_rope.map(|(r, _)| Llama3RopeJson::from(r)),
                attention_bias: f.tensor("blk.0.attn_q.bias").is_some(),
                mlp_bias: false,
            })
        }
        Arch::Gemma3 => {
            let head_dim = need_u64(&f, &key("attention.key_length"))?;
            if get(&f, &key("attention.value_length")).and_then(Value::as_u64) != Some(head_dim) {
                return Err(bad(
                    &key("attention.value_length"),
                    "differs from the key length",
                ));
            }
            // Frugal's and llama.cpp's rule: every sixth layer global unless the file says.
            let pattern = match get(&f, &key("attention.sliding_window_pattern")) {
                None => 6,
                Some(v) => v.as_u64().ok_or_else(|| {
                    bad(
                        &key("attention.sliding_window_pattern"),
                        "a per-layer list is not exported (an integer period is)",
                    )
                })?,
            };
            let window = get(&f, &key("attention.sliding_window")).and_then(Value::as_u64);
            pretty(&Gemma3ConfigJson {
                common: common("Gemma3ForCausalLM", "gemma3_text", n_tokens, 1_000_000.0),
                hidden_activation: "gelu_pytorch_tanh",
                head_dim,
                // llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 3 27B (62 layers).
                query_pre_attn_scalar: if n_layer == 62 {
                    hidden / n_head.max(1)
                } else {
                    head_dim
                },
                rope_local_base_freq: short(f32_key("rope.freq_base_swa").unwrap_or(10_000.0)),
                rope_scaling: None,
                // No window: every layer global (pattern 1).
                sliding_window: window.unwrap_or(n_ctx),
                sliding_window_pattern: if window.is_some() { pattern } else { 1 },
                final_logit_softcapping: f32_key("final_logit_softcapping").map(short),
                attn_logit_softcapping: None,
                attention_bias: false,
                attention_dropout: 0.0,
                unk_token_id: ids.unk,
            })
        }
    };
    let card = model_card(&f, input);

    let dir = AtomicDir::create(out)?;
    let tmp = dir.tmp_path().to_path_buf();
    let mut small: Vec<(&str, Vec<u8>)> = vec![("config.json", config)];
    small.extend(files);
    small.push(("README.md", card.into_bytes()));
    for (name, bytes) in &small {
        write_atomic(&tmp.join(name), &[input], |w| w.write_all(bytes))?;
    }

    let st_dtype = match dtype {
        OutType::F16 => Dtype::F16,
        OutType::Bf16 => Dtype::BF16,
        _ => Dtype::F32,
    };
    let specs: Vec<StTensorSpec> = plan
        .iter()
        .map(|o| StTensorSpec {
            name: &o.name,
            dtype: st_dtype,
            shape: &o.shape,
        })
        .collect();
    let st_path = tmp.join("model.safetensors");
    let mut w = SafetensorsStreamWriter::create(
        &st_path,
        &[input],
        &BTreeMap::from([("format".to_string(), "pt".to_string())]),
        &specs,
    )?;
    let mut dequantized = 0;
    let mut inexact = 0u64;
    for o in &plan {
        let info = &f.header.tensors[o.index];
        dequantized += usize::from(!matches!(
            info.ggml_type,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
        ));
        let mut v = f32_values(&f, info)?;
        f.release(info);
        if let Some(h) = o.heads {
            v = unpermute_rows(&v, o.shape[0] as usize, h);
        }
        if o.unshift {
            inexact += unshift_norm(&mut v);
        }
        // The same rounding as conversion's (F16, BF16 nearest even; F32 as it is).
        let row_len = *o.shape.last().unwrap_or(&1) as usize;
        w.write_tensor(&encode(dtype.ggml(), &v, row_len)?)?;
    }
    let bytes = w.finish()?;
    dir.commit()?;
    Ok(ExportReport {
        input: input.to_path_buf(),
        output: out.to_path_buf(),
        architecture: arch_name,
        dtype,
        tensors: plan.len(),
        dequantized,
        inexact_norm_values: inexact,
        rope_freqs_ulp: llama3_rope.map(|(_, u)| u),
        bytes,
    })
}

/// A tensor of the GGUF decoded to F32 (a quantized one dequantized).
fn f32_values(f: &GgufFile, info: &frugal_formats::gguf::TensorInfo) -> Result<Vec<f32>, HfError> {
    let t = frugal_models::gguf_load::load_f32(f, &info.name, &candle_core::Device::Cpu)?;
    Ok(t.flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(frugal_models::Error::from)?)
}

/// Gemma's norm weights without llama.cpp's `+ 1.0`: for each `x`, the F32 `w` nearest
/// `x - 1` (exact in f64), which is the one with `w + 1 == x` when any is. Returns how many
/// values have none.
fn unshift_norm(v: &mut [f32]) -> u64 {
    let mut inexact = 0;
    for x in v.iter_mut() {
        let w = (f64::from(*x) - 1.0) as f32;
        inexact += u64::from(w + 1.0 != *x);
        *x = w;
    }
    inexact
}

/// A model card whose front matter carries the GGUF's names, so that a conversion back
/// (Frugal's or llama.cpp's) finds them again.
fn model_card(f: &GgufFile, input: &Path) -> String {
    let mut s = String::from("---\n");
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    for k in [
        "name",
        "basename",
        "finetune",
        "version",
        "organization",
        "size_label",
        "license",
    ] {
        if let Some(v) = get(f, &format!("general.{k}")).and_then(Value::as_str) {
            s += &format!("{k}: {}\n", q(v));
        }
    }
    for (k, card) in [("general.languages", "language"), ("general.tags", "tags")] {
        if let Some(Value::Array(frugal_formats::gguf::Array::String(v))) = get(f, k) {
            s += &format!("{card}:\n");
            for x in v {
                s += &format!("- {}\n", q(x));
            }
        }
    }
    s += "---\n\n";
    s += &format!(
        "Exported by Frugal from `{}`: tensors decoded to floating point, in Hugging Face's layout.\n",
        input.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf")
    );
    s
}

/// Pretty JSON of the files written (a typed config or a tokenizer's JSON).
mod erased {
    pub trait Ser {
        fn to_pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_pretty(&self) -> String {
            serde_json::to_string_pretty(self).expect("JSON serializes")
        }
    }
}
