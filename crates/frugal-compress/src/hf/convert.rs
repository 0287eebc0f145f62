//! `frugal convert`: a Hugging Face checkpoint folder to the GGUF file llama.cpp's
//! `convert_hf_to_gguf.py` (pinned sdist llama-cpp-python 0.3.36) writes for it — the same
//! metadata keys in the same order, tensor names, Q/K permutation, tensor order and encodings,
//! so the two files are byte-identical (checked in CI on all-MiniLM-L6-v2 and on SmolLM2
//! exported by `frugal export`).
//!
//! [`plan`] does every check that needs no tensor data (folder, shards and index, config sizes
//! against tensor shapes, tokenizer, model card) and fixes the header; [`convert`] then streams:
//! each tensor is read from its memory-mapped shard, decoded to F32, permuted, encoded and
//! written before the next is read, so peak memory is about one tensor in F32 plus its encoding
//! (BENCHMARKS.md, "Converting a 7B-shaped checkpoint").
//!
//! Architectures: BERT encoders (`BertModel`, `BertForMaskedLM`) and Llama-family decoders
//! (`LlamaForCausalLM`, `MistralForCausalLM`) with a GPT-2-style BPE `tokenizer.json`. Others
//! are refused naming `config.json`'s `architectures`, before anything is written.

use super::metadata;
use super::vocab::{self, HfTokenizer};
use super::{HfError, OutType};
use crate::quant::codec::codec;
use frugal_formats::gguf::{Array, GgmlType, GgufStreamWriter, TensorSpec, Value};
use frugal_formats::hf::{HfFolder, HfTensor, MAX_SMALL_JSON};
use frugal_formats::model_card;
use frugal_formats::safetensors::Dtype;
use rayon::prelude::*;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// The most README.md read for its front matter.
const MAX_README: u64 = 16 << 20;

/// The architectures converted: `config.json`'s `architectures[0]` → family.
pub const ARCHS: &[(&str, Family)] = &[
    ("BertModel", Family::Bert),
    ("BertForMaskedLM", Family::Bert),
    ("LlamaForCausalLM", Family::Llama),
    ("MistralForCausalLM", Family::Llama),
    ("Gemma3ForCausalLM", Family::Gemma3),
    ("Qwen2ForCausalLM", Family::Qwen2),
    ("Qwen3ForCausalLM", Family::Qwen3),
    ("Phi3ForCausalLM", Family::Phi3),
];

/// A converter family: one set of naming, hyperparameter and vocabulary rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Llama,
    Gemma3,
    Qwen2,
    Qwen3,
    Phi3,
}

impl Family {
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Llama => "llama",
            Family::Gemma3 => "gemma3",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Phi3 => "phi3",
        }
    }

    /// Whether the family is a decoder (a language model).
    pub fn is_decoder(self) -> bool {
        self != Family::Bert
    }
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub src: Source,
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Rows regrouped for llama.cpp's RoPE layout: (heads).
    pub permute: Option<usize>,
    /// Gemma's norms: 1.0 added to each weight (its RMSNorm scales by `1 + w`), in the
    /// checkpoint's precision where llama.cpp's converter adds in it (F16; BF16 is widened
    /// to F32 first).
    pub norm_shift: bool,
    /// Rows written, when fewer than the checkpoint's (Gemma's embedding trimmed to the
    /// vocabulary).
    pub rows: Option<usize>,
}

/// Where a planned tensor's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The folder's tensor of this index.
    Folder(usize),
    /// Made by the converter (Llama 3's `rope_freqs`), in F32.
    Values(Vec<f32>),
}

impl PlannedTensor {
    /// Whether the output values are the checkpoint's, in its order (only the encoding may
    /// differ).
    pub fn is_verbatim(&self) -> bool {
        matches!(self.src, Source::Folder(_))
            && self.permute.is_none()
            && !self.norm_shift
            && self.rows.is_none()
    }
}

/// Everything decided before any tensor is read.
pub struct Plan {
    pub folder: HfFolder,
    pub family: Family,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<PlannedTensor>,
    pub total_params: u64,
}

/// What `frugal convert` reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ConvertReport {
    pub input: PathBuf,
    pub output: PathBuf,
    /// `config.json`'s `architectures[0]` and the GGUF architecture written.
    pub hf_architecture: String,
    pub gguf_architecture: String,
    pub outtype: OutType,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
}

impl ConvertReport {
    pub fn to_text(&self) -> String {
        format!(
            "{} ({}) -> {} ({}, {}): {} tensors, {} parameters, {} bytes\n",
            self.input.display(),
            self.hf_architecture,
            self.output.display(),
            self.gguf_architecture,
            serde_json::to_string(&self.outtype)
                .unwrap_or_default()
                .trim_matches('"'),
            self.tensors,
            self.parameters,
            self.bytes
        )
    }
}

fn cfg_err(folder: &HfFolder, field: &str, reason: impl Into<String>) -> HfError {
    HfError::Config {
        path: folder.dir().join("config.json"),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The hyperparameters llama.cpp's converter reads: not `config.json` as written but
/// `AutoConfig.from_pretrained(dir).to_dict()`, i.e. with the defaults of `transformers`' config
/// class filled in (pinned: transformers 4.46.3, the version of `bench/make-golden-convert.sh`).
/// Those defaults change the output: a Llama config without `head_dim` still gets
/// `attention.key_length`, one without `rope_theta` gets 10000.
struct Hp<'a> {
    folder: &'a HfFolder,
    map: serde_json::Map<String, Json>,
}

/// `transformers` 4.46.3 defaults of the config classes converted (the keys the converter
/// reads), applied where `config.json` lacks the key. Gemma 3 has none: transformers 4.46.3
/// does not know `gemma3_text`, so the converter falls back to `config.json` as written.
fn class_defaults(family: Family, hf_arch: &str) -> Json {
    match (family, hf_arch) {
        // Gemma 3 and Qwen 3 have none: transformers 4.46.3 knows neither `gemma3_text` nor
        // `qwen3`, so the converter falls back to `config.json` as written.
        (Family::Gemma3 | Family::Qwen3, _) => serde_json::json!({}),
        (Family::Phi3, _) => serde_json::json!({
            "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
            "num_hidden_layers": 32, "num_attention_heads": 32, "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0}),
        (Family::Qwen2, _) => serde_json::json!({
            "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}),
        (Family::Bert, _) => serde_json::json!({
            "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}),
        (Family::Llama, "MistralForCausalLM") => serde_json::json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "sliding_window": 4096}),
        (Family::Llama, _) => serde_json::json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0}),
    }
}

impl<'a> Hp<'a> {
    fn new(folder: &'a HfFolder, family: Family, hf_arch: &str) -> Self {
        let mut map = folder.config.clone();
        if family == Family::Qwen2 && map.get("num_key_value_heads") == Some(&Json::Null) {
            // Qwen2Config: null means as many as the attention heads (absent means 32).
            let heads = map
                .get("num_attention_heads")
                .cloned()
                .unwrap_or(Json::from(32));
            map.insert("num_key_value_heads".into(), heads);
        }
        if let Json::Object(d) = class_defaults(family, hf_arch) {
            for (k, v) in d {
                if map.get(&k).is_none_or(Json::is_null) {
                    map.insert(k, v);
                }
            }
        }
        if family == Family::Phi3 && map.get("num_key_value_heads").is_none_or(Json::is_null) {
            // Phi3Config: as many as the attention heads when absent or null.
            let heads = map
                .get("num_attention_heads")
                .cloned()
                .unwrap_or(Json::Null);
            map.insert("num_key_value_heads".into(), heads);
        }
        if family == Family::Llama {
            // LlamaConfig/MistralConfig derive these when absent or null.
            let heads = map
                .get("num_attention_heads")
                .and_then(Json::as_u64)
                .unwrap_or(0);
            if map.get("num_key_value_heads").is_none_or(Json::is_null) {
                map.insert("num_key_value_heads".into(), Json::from(heads));
            }
            if map.get("head_dim").is_none_or(Json::is_null) {
                let hidden = map.get("hidden_size").and_then(Json::as_u64).unwrap_or(0);
                if let Some(d) = hidden.checked_div(heads) {
                    map.insert("head_dim".into(), Json::from(d));
                }
            }
        }
        Hp { folder, map }
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> HfError {
        cfg_err(self.folder, field, reason)
    }

    /// The first of `keys` present (llama.cpp's `find_hparam`).
    /// The RoPE parameters llama.cpp reads: `rope_parameters`, else `rope_scaling` (null: none).
    fn rope(&self) -> Option<&Json> {
        self.map
            .get("rope_parameters")
            .or_else(|| self.map.get("rope_scaling"))
            .filter(|v| !v.is_null())
    }

    fn find(&self, keys: &[&str]) -> Option<(&str, &Json)> {
        keys.iter()
            .find_map(|k| self.map.get_key_value(*k))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn u64(&self, keys: &[&str]) -> Result<Option<u64>, HfError> {
        match self.find(keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .filter(|&n| n < u32::MAX as u64)
                .map(Some)
                .ok_or_else(|| self.err(k, format!("{v} is not a count"))),
        }
    }

    fn need(&self, keys: &[&str]) -> Result<u64, HfError> {
        self.u64(keys)?
            .ok_or_else(|| self.err(keys[0], "is missing"))
    }

    fn f32(&self, keys: &[&str]) -> Result<Option<f32>, HfError> {
        match self.find(keys) {
            None | Some((_, Json::Null)) => Ok(None),
            Some((k, v)) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| self.err(k, format!("{v} is not a number"))),
        }
    }
}

/// Sets `key` as llama.cpp's writer does: a repeated key keeps its first place and takes the
/// new value.
fn put(kv: &mut Vec<(String, Value)>, key: impl Into<String>, v: Value) {
    let key = key.into();
    if let Some(e) = kv.iter_mut().find(|(k, _)| *k == key) {
        e.1 = v;
    } else {
        kv.push((key, v));
    }
}

/// A family's tensor names, both ways: Hugging Face stem ↔ GGUF stem (without `.weight` or
/// `.bias`), for the tensors outside the blocks and those of block N (`{block}N.` in Hugging
/// Face's names, `blk.N.` in GGUF's). `convert` reads it one way, `export` the other.
pub struct NameTable {
    pub outside: Rows,
    pub block: &'static str,
    /// Groups of rows (families share groups).
    pub inside: &'static [Rows],
}

/// (Hugging Face stem, GGUF stem) pairs.
pub type Rows = &'static [(&'static str, &'static str)];

/// BERT (llama.cpp's `tensor_mapping.py` rows for `bert`).
pub const BERT_NAMES: NameTable = NameTable {
    outside: &[
        ("embeddings.word_embeddings", "token_embd"),
        ("embeddings.token_type_embeddings", "token_types"),
        ("embeddings.position_embeddings", "position_embd"),
        ("embeddings.LayerNorm", "token_embd_norm"),
    ],
    block: "encoder.layer.",
    inside: &[&[
        ("attention.self.query", "attn_q"),
        ("attention.self.key", "attn_k"),
        ("attention.self.value", "attn_v"),
        ("attention.output.dense", "attn_output"),
        ("attention.output.LayerNorm", "attn_output_norm"),
        ("intermediate.dense", "ffn_up"),
        ("output.dense", "ffn_down"),
        ("output.LayerNorm", "layer_output_norm"),
    ]],
};

/// Rows a block of Llama's lineage shares: attention projections.
const ATTN_ROWS: Rows = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
];
/// Per-head Q and K norms (Qwen 3, Gemma 3).
const QK_NORM_ROWS: Rows = &[
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
];
/// The gated MLP.
const GATED_MLP_ROWS: Rows = &[
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];
/// Llama's two norms per block.
const LLAMA_NORM_ROWS: Rows = &[
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];

/// Llama and Mistral (`tensor_mapping.py`'s rows for `llama`).
pub const LLAMA_NAMES: NameTable = NameTable {
    outside: &[
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("lm_head", "output"),
    ],
    block: "model.layers.",
    inside: &[ATTN_ROWS, GATED_MLP_ROWS, LLAMA_NORM_ROWS],
};

/// Gemma 3 (`tensor_mapping.py`'s rows for `gemma3`): four norms per block.
pub const GEMMA3_NAMES: NameTable = NameTable {
    outside: &[
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
    ],
    block: "model.layers.",
    inside: &[
        ATTN_ROWS,
        QK_NORM_ROWS,
        GATED_MLP_ROWS,
        &[
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ],
    ],
};

/// Qwen 2 and Qwen 3 (`tensor_mapping.py`'s rows for `qwen2`, `qwen3`): Llama's names with
/// Qwen 3's per-head Q and K norms.
pub const QWEN_NAMES: NameTable = NameTable {
    outside: LLAMA_NAMES.outside,
    block: "model.layers.",
    inside: &[ATTN_ROWS, QK_NORM_ROWS, GATED_MLP_ROWS, LLAMA_NORM_ROWS],
};

/// Phi-3 (`tensor_mapping.py`'s rows for `phi3`): Q, K and V fused, and the MLP's gate and up.
pub const PHI3_NAMES: NameTable = NameTable {
    outside: LLAMA_NAMES.outside,
    block: "model.layers.",
    inside: &[
        &[
            ("self_attn.qkv_proj", "attn_qkv"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ],
        LLAMA_NORM_ROWS,
    ],
};

/// A tensor name split into its stem and its `weight`/`bias` suffix ("" when neither).
pub fn split_suffix(name: &str) -> (&str, &str) {
    match name.rsplit_once('.') {
        Some((s, x)) if x == "weight" || x == "bias" => (s, x),
        _ => (name, ""),
    }
}

fn with_suffix(stem: String, suffix: &str) -> String {
    if suffix.is_empty() {
        stem
    } else {
        format!("{stem}.{suffix}")
    }
}

impl NameTable {
    /// The GGUF name of a Hugging Face tensor name.
    pub fn to_gguf(&self, name: &str) -> Option<String> {
        let (stem, suffix) = split_suffix(name);
        let g = match self.outside.iter().find(|(h, _)| *h == stem) {
            Some((_, g)) => g.to_string(),
            None => {
                let (b, rest) = stem.strip_prefix(self.block)?.split_once('.')?;
                let b: usize = b.parse().ok()?;
                let (_, g) = self
                    .inside
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|(h, _)| *h == rest)?;
                format!("blk.{b}.{g}")
            }
        };
        Some(with_suffix(g, suffix))
    }

    /// The Hugging Face name of a GGUF tensor name.
    pub fn to_hf(&self, name: &str) -> Option<String> {
        let (stem, suffix) = split_suffix(name);
        let h = match self.outside.iter().find(|(_, g)| *g == stem) {
            Some((h, _)) => h.to_string(),
            None => {
                let (b, rest) = stem.strip_prefix("blk.")?.split_once('.')?;
                let b: usize = b.parse().ok()?;
                let (h, _) = self
                    .inside
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|(_, g)| *g == rest)?;
                format!("{}{b}.{h}", self.block)
            }
        };
        Some(with_suffix(h, suffix))
    }
}

/// HF name → GGUF name, `None` for tensors llama.cpp drops, `Err` for unknown ones.
fn map_name(family: Family, hf_arch: &str, name: &str) -> Result<Option<String>, String> {
    if name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".rotary_emb.inv_freq")
    {
        return Ok(None);
    }
    let mapped = match family {
        Family::Bert => {
            // BertModel.filter_tensors: the `bert.` prefix, TF-style gamma/beta, and the
            // pooler and pre-training heads, which llama.cpp drops.
            let mut n = name.strip_prefix("bert.").unwrap_or(name).to_string();
            if let Some(s) = n.strip_suffix(".gamma") {
                n = format!("{s}.weight");
            }
            if let Some(s) = n.strip_suffix(".beta") {
                n = format!("{s}.bias");
            }
            if matches!(
                n.as_str(),
                "embeddings.position_ids" | "pooler.dense.weight" | "pooler.dense.bias"
            ) || n.starts_with("cls.predictions")
                || n.starts_with("cls.seq_relationship")
            {
                return Ok(None);
            }
            BERT_NAMES.to_gguf(&n)
        }
        Family::Llama => {
            let mut n = name.replace("text_model.", "");
            if hf_arch == "LlamaModel" {
                n = format!("model.{n}");
            }
            LLAMA_NAMES.to_gguf(&n)
        }
        Family::Gemma3 => GEMMA3_NAMES.to_gguf(name),
        Family::Qwen2 | Family::Qwen3 => QWEN_NAMES.to_gguf(name),
        Family::Phi3 => PHI3_NAMES.to_gguf(name),
    };
    mapped
        .map(Some)
        .ok_or_else(|| format!("cannot map tensor `{name}` to a GGUF name"))
}

/// The ggml type llama.cpp's converter gives a tensor (its `prepare_tensors` rules).
fn tensor_type(name: &str, n_dims: usize, row_len: u64, outtype: OutType) -> GgmlType {
    let keep_f32 = n_dims <= 1
        || name.ends_with("_norm.weight")
        || name == "position_embd.weight"
        || name == "token_types.weight"
        || !name.ends_with(".weight");
    if keep_f32 {
        return GgmlType::F32;
    }
    let t = outtype.ggml();
    // gguf-py falls back to F16 when a row is not a whole number of blocks.
    if t == GgmlType::Q8_0 && !row_len.is_multiple_of(32) {
        return GgmlType::F16;
    }
    t
}

/// Checks `config.json`'s sizes against the tensors' shapes.
fn check_sizes(
    hp: &Hp,
    family: Family,
    shapes: &[(String, Vec<u64>, String)],
) -> Result<(), HfError> {
    let shape = |g: &str| shapes.iter().find(|(n, _, _)| n == g);
    let expect = |field: &str, want: u64, g: &str, axis: usize| -> Result<(), HfError> {
        let Some((_, s, hf)) = shape(g) else {
            return Err(hp.err(field, format!("the checkpoint has no tensor for `{g}`")));
        };
        // `s` is in ggml order (reversed); `axis` counts from the HF (row-major) side.
        let got = s.get(s.len().wrapping_sub(1 + axis)).copied();
        if got != Some(want) {
            return Err(hp.err(
                field,
                format!(
                    "is {want}, but tensor `{hf}` has shape {:?}",
                    s.iter().rev().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(())
    };
    let n_layer = hp.need(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    let hidden = hp.need(&["hidden_size", "n_embd", "dim"])?;
    let vocab = hp.u64(&["vocab_size"])?;
    let ff = hp.u64(&["intermediate_size", "n_inner", "hidden_dim"])?;
    let blocks: std::collections::BTreeSet<usize> = shapes
        .iter()
        .filter_map(|(n, _, _)| {
            n.strip_prefix("blk.")
                .and_then(|r| r.split('.').next()?.parse().ok())
        })
        .collect();
    if blocks.len() as u64 != n_layer
        || blocks
            .iter()
            .next_back()
            .is_some_and(|&b| b as u64 + 1 != n_layer)
    {
        return Err(hp.err(
            "num_hidden_layers",
            format!(
                "is {n_layer}, but the checkpoint has {} blocks",
                blocks.len()
            ),
        ));
    }
    expect("hidden_size", hidden, "token_embd.weight", 1)?;
    if let Some(v) = vocab {
        expect("vocab_size", v, "token_embd.weight", 0)?;
    }
    let per_block: &[(&str, &str, usize)] = match family {
        Family::Bert => &[
            ("attn_q.weight", "hidden_size", 1),
            ("ffn_up.weight", "intermediate_size", 0),
            ("ffn_down.weight", "intermediate_size", 1),
        ],
        Family::Llama | Family::Gemma3 | Family::Qwen2 | Family::Qwen3 => &[
            ("attn_q.weight", "hidden_size", 1),
            ("ffn_gate.weight", "intermediate_size", 0),
            ("ffn_up.weight", "intermediate_size", 0),
            ("ffn_down.weight", "intermediate_size", 1),
        ],
        Family::Phi3 => &[
            ("attn_qkv.weight", "hidden_size", 1),
            ("ffn_down.weight", "intermediate_size", 1),
        ],
    };
    for b in 0..n_layer {
        for (t, field, axis) in per_block {
            let want = if *field == "hidden_size" {
                Some(hidden)
            } else {
                ff
            };
            if let Some(w) = want {
                expect(field, w, &format!("blk.{b}.{t}"), *axis)?;
            }
        }
    }
    match family {
        Family::Bert => {
            if let Some(p) = hp.u64(&["max_position_embeddings"])? {
                expect("max_position_embeddings", p, "position_embd.weight", 0)?;
            }
            if let Some(t) = hp.u64(&["type_vocab_size"])? {
                expect("type_vocab_size", t, "token_types.weight", 0)?;
            }
        }
        Family::Llama | Family::Gemma3 | Family::Qwen2 | Family::Qwen3 => {
            let n_head = hp.need(&["n_heads", "num_attention_heads"])?;
            let n_kv = hp
                .u64(&["n_kv_heads", "num_key_value_heads"])?
                .unwrap_or(n_head);
            let head_dim = match (hp.u64(&["head_dim"])?, family) {
                (Some(d), _) => d,
                // Gemma3Model's default.
                (None, Family::Gemma3) => 256,
                (None, _) => hidden / n_head.max(1),
            };
            if n_head == 0 || n_kv == 0 || n_head % n_kv != 0 || head_dim % 2 != 0 {
                return Err(hp.err(
                    "num_key_value_heads",
                    format!("{n_kv} key-value heads for {n_head} heads of {head_dim}"),
                ));
            }
            for b in 0..n_layer {
                expect(
                    "num_attention_heads",
                    n_head * head_dim,
                    &format!("blk.{b}.attn_q.weight"),
                    0,
                )?;
                expect(
                    "num_key_value_heads",
                    n_kv * head_dim,
                    &format!("blk.{b}.attn_k.weight"),
                    0,
                )?;
                expect(
                    "num_key_value_heads",
                    n_kv * head_dim,
                    &format!("blk.{b}.attn_v.weight"),
                    0,
                )?;
            }
        }
        Family::Phi3 => {
            let n_head = hp.need(&["num_attention_heads", "n_head"])?;
            let n_kv = hp.need(&["num_key_value_heads", "n_head_kv"])?;
            if n_head == 0 || n_kv == 0 || n_head % n_kv != 0 || hidden % n_head != 0 {
                return Err(hp.err(
                    "num_key_value_heads",
                    format!("{n_kv} key-value heads for {n_head} heads of {hidden}"),
                ));
            }
            let qkv = (n_head + 2 * n_kv) * (hidden / n_head);
            for b in 0..n_layer {
                expect(
                    "num_key_value_heads",
                    qkv,
                    &format!("blk.{b}.attn_qkv.weight"),
                    0,
                )?;
                if let Some(f) = ff {
                    expect(
                        "intermediate_size",
                        2 * f,
                        &format!("blk.{b}.ffn_up.weight"),
                        0,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The architecture-specific hyperparameters (llama.cpp's `set_gguf_parameters`), after the
/// metadata and before `general.quantization_version`.
fn hparams(
    hp: &Hp,
    family: Family,
    outtype: OutType,
    kv: &mut Vec<(String, Value)>,
) -> Result<(), HfError> {
    let a = family.gguf_arch();
    let cfg = &hp.map;
    let u = |v: u64| Value::U32(v as u32);
    if family == Family::Phi3 {
        return phi3_hparams(hp, outtype, kv);
    }
    put(
        kv,
        format!("{a}.block_count"),
        u(hp.need(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?),
    );
    let optional: [(&str, &[&str]); 5] = [
        (
            "context_length",
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ],
        ),
        ("embedding_length", &["hidden_size", "n_embd", "dim"]),
        (
            "feed_forward_length",
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "n_heads"],
        ),
        (
            "attention.head_count_kv",
            &["num_key_value_heads", "n_kv_heads"],
        ),
    ];
    for (key, names) in optional {
        if let Some(v) = hp.u64(names)? {
            put(kv, format!("{a}.{key}"), u(v));
        }
    }
    if cfg.get("is_causal") == Some(&Json::Bool(false)) {
        put(kv, format!("{a}.attention.causal"), Value::Bool(false));
    }
    // RoPE: llama.cpp reads `rope_parameters` or `rope_scaling`, mirroring `rope_theta` in.
    let rope = hp.rope();
    if let Some(r) = rope {
        if r.get("full_attention").is_some() || r.get("sliding_attention").is_some() {
            return Err(hp.err(
                "rope_parameters",
                "per-attention-type RoPE parameters are not converted yet",
            ));
        }
        rope_scaling(hp, a, r, kv)?;
    }
    for k in [
        "partial_rotary_factor",
        "rope_pct",
        "rope_percent",
        "mrope_section",
    ] {
        if cfg.contains_key(k) {
            return Err(hp.err(k, "is not converted yet"));
        }
    }
    // `rope_parameters["rope_theta"]` first, else the top-level key llama.cpp mirrors into it.
    let theta = match rope.and_then(|r| r.get("rope_theta")) {
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| hp.err("rope_theta", format!("{v} is not a number")))?
                as f32,
        ),
        None => hp.f32(&[
            "global_rope_theta",
            "rope_global_theta",
            "rope_theta_global",
            "rope_theta",
            "rotary_emb_base",
        ])?,
    };
    if let Some(t) = theta {
        put(kv, format!("{a}.rope.freq_base"), Value::F32(t));
    }
    // The windowed layers' base (Gemma 3's `rope_local_base_freq`).
    if let Some(t) = hp.f32(&[
        "local_rope_theta",
        "rope_local_theta",
        "rope_theta_local",
        "swa_rope_theta",
        "rope_local_base_freq",
    ])? {
        put(kv, format!("{a}.rope.freq_base_swa"), Value::F32(t));
    }
    if let Some(e) = hp.f32(&["rms_norm_eps", "norm_eps"])? {
        put(
            kv,
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(e),
        );
    }
    if let Some(e) = hp.f32(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
        put(
            kv,
            format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(e),
        );
    }
    for k in [
        "num_local_experts",
        "num_experts",
        "n_routed_experts",
        "num_experts_per_tok",
        "n_group",
        "topk_group",
    ] {
        if cfg.get(k).is_some_and(|v| !v.is_null()) {
            return Err(hp.err(k, "mixture-of-experts checkpoints are not converted"));
        }
    }
    if let Some(hd) = cfg.get("head_dim").filter(|v| !v.is_null()) {
        let hd = hd
            .as_u64()
            .ok_or_else(|| hp.err("head_dim", "is not a count"))?;
        put(kv, format!("{a}.attention.key_length"), u(hd));
        put(kv, format!("{a}.attention.value_length"), u(hd));
    }
    put(kv, "general.file_type", Value::U32(outtype.file_type()));
    match family {
        Family::Phi3 => {} // its own keys above
        Family::Bert => {
            put(kv, format!("{a}.attention.causal"), Value::Bool(false));
            if let Some(p) = pooling(hp.folder)? {
                put(kv, format!("{a}.pooling_type"), Value::U32(p));
            }
        }
        Family::Qwen2 | Family::Qwen3 => {
            // Qwen2Model.set_gguf_parameters: sentence-transformers' pooling, when given.
            if let Some(p) = pooling(hp.folder)? {
                put(kv, format!("{a}.pooling_type"), Value::U32(p));
            }
            if cfg.get("classifier_pooling").is_some_and(|v| !v.is_null()) {
                return Err(hp.err("classifier_pooling", "classifier heads are not converted"));
            }
        }
        Family::Llama => {
            let vocab = hp.need(&["vocab_size"])?;
            put(kv, format!("{a}.vocab_size"), u(vocab));
            let hidden = hp.need(&["hidden_size"])?;
            let heads = hp.need(&["num_attention_heads"])?;
            let rope_dim = match cfg.get("head_dim").and_then(Json::as_u64) {
                Some(d) => d,
                None => hidden / heads.max(1),
            };
            put(kv, format!("{a}.rope.dimension_count"), u(rope_dim));
        }
        Family::Gemma3 => {
            // Gemma3Model.set_gguf_parameters: its defaults where `config.json` lacks the key
            // (a key present as null is refused: llama.cpp's writer fails on it).
            let or = |k: &str, d: Json| -> Result<Json, HfError> {
                match cfg.get(k) {
                    None => Ok(d),
                    Some(Json::Null) => Err(hp.err(k, "is null")),
                    Some(v) => Ok(v.clone()),
                }
            };
            let count = |k: &str, d: u64| -> Result<Value, HfError> {
                or(k, Json::from(d))?
                    .as_u64()
                    .filter(|&n| n < u32::MAX as u64)
                    .map(|n| Value::U32(n as u32))
                    .ok_or_else(|| hp.err(k, "is not a count"))
            };
            let num = |k: &str, d: f64| -> Result<Value, HfError> {
                or(k, Json::from(d))?
                    .as_f64()
                    .map(|f| Value::F32(f as f32))
                    .ok_or_else(|| hp.err(k, "is not a number"))
            };
            put(
                kv,
                format!("{a}.context_length"),
                count("max_position_embeddings", 131072)?,
            );
            put(
                kv,
                format!("{a}.attention.head_count"),
                count("num_attention_heads", 8)?,
            );
            put(
                kv,
                format!("{a}.attention.layer_norm_rms_epsilon"),
                num("rms_norm_eps", 1e-6)?,
            );
            put(
                kv,
                format!("{a}.attention.key_length"),
                count("head_dim", 256)?,
            );
            put(
                kv,
                format!("{a}.attention.value_length"),
                count("head_dim", 256)?,
            );
            put(
                kv,
                format!("{a}.rope.freq_base"),
                Value::F32(theta.unwrap_or(1_000_000.0)),
            );
            if cfg
                .get("attn_logit_softcapping")
                .is_some_and(|v| !v.is_null())
            {
                return Err(hp.err(
                    "attn_logit_softcapping",
                    "is set, which Gemma 3 does not use (llama.cpp's converter refuses it)",
                ));
            }
            if let Some(v) = cfg.get("final_logit_softcapping") {
                // Python truthiness: null and 0 write nothing.
                if v.as_f64().is_some_and(|x| x != 0.0) {
                    put(
                        kv,
                        format!("{a}.final_logit_softcapping"),
                        num("final_logit_softcapping", 0.0)?,
                    );
                } else if !v.is_null() && v.as_f64().is_none() {
                    return Err(hp.err("final_logit_softcapping", "is not a number"));
                }
            }
            if cfg.get("sliding_window_pattern").and_then(Json::as_i64) != Some(1) {
                let w = cfg
                    .get("sliding_window")
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| hp.err("sliding_window", "is missing"))?;
                let w = w
                    .as_u64()
                    .filter(|&n| n < u32::MAX as u64)
                    .ok_or_else(|| hp.err("sliding_window", "is not a count"))?;
                put(kv, format!("{a}.attention.sliding_window"), u(w));
            }
            put(
                kv,
                format!("{a}.attention.head_count_kv"),
                count("num_key_value_heads", 4)?,
            );
        }
    }
    Ok(())
}

/// RoPE scaling as `TextModel.set_gguf_parameters` writes it: linear and YaRN with their
/// factors, LongRoPE's type; `dynamic`, `llama3` (a tensor instead: [`llama3_rope_freqs`])
/// and unknown types write nothing, as there.
fn rope_scaling(hp: &Hp, a: &str, r: &Json, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    let field = "rope_scaling";
    let ty = match r.get("rope_type").or_else(|| r.get("type")) {
        None | Some(Json::Null) => return Ok(()),
        Some(Json::String(t)) => t.as_str(),
        Some(v) => return Err(hp.err(field, format!("rope_type {v} is not a string"))),
    };
    let num = |k: &str| -> Result<Option<f32>, HfError> {
        match r.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| hp.err(field, format!("`{k}`: {v} is not a number"))),
        }
    };
    let factor = num("factor")?;
    let put_type = |kv: &mut Vec<(String, Value)>, t: &str| {
        put(
            kv,
            format!("{a}.rope.scaling.type"),
            Value::String(t.into()),
        )
    };
    match (ty, factor) {
        ("linear", Some(f)) => {
            put_type(kv, "linear");
            put(kv, format!("{a}.rope.scaling.factor"), Value::F32(f));
        }
        ("yarn", Some(f)) => {
            put_type(kv, "yarn");
            put(kv, format!("{a}.rope.scaling.factor"), Value::F32(f));
            let orig = match r.get("original_max_position_embeddings") {
                Some(v) if !v.is_null() => Some(v.clone()),
                _ => hp.map.get("original_max_position_embeddings").cloned(),
            }
            .and_then(|v| v.as_u64())
            .filter(|&n| n < u32::MAX as u64)
            .ok_or_else(|| {
                hp.err(
                    field,
                    "YaRN needs original_max_position_embeddings (a count)",
                )
            })?;
            put(
                kv,
                format!("{a}.rope.scaling.original_context_length"),
                Value::U32(orig as u32),
            );
            let attn = if r.get("attention_factor").is_some() {
                num("attention_factor")?
            } else {
                num("attn_factor")?
            };
            for (k, v) in [
                ("yarn_ext_factor", num("extrapolation_factor")?),
                ("yarn_attn_factor", attn),
                ("yarn_beta_fast", num("beta_fast")?),
                ("yarn_beta_slow", num("beta_slow")?),
            ] {
                if let Some(v) = v {
                    put(kv, format!("{a}.rope.scaling.{k}"), Value::F32(v));
                }
            }
        }
        ("su" | "longrope", _) => put_type(kv, "longrope"),
        // Llama 3's factors are a tensor (`llama3_rope_freqs`); `dynamic` (handled by the few model classes that use it) and unknown types: llama.cpp
        // writes nothing.
        _ => {}
    }
    Ok(())
}

/// Llama 3's RoPE frequency factors (`LlamaModel.generate_extra_tensors`) when `rope_scaling`
/// says `llama3`, computed in f32 step by step as torch computes them there (`x / t` as
/// `t.reciprocal() * x`, scalars rounded to f32), except the powers `base ** (2i / dim)`:
/// torch's are within an ulp of the correctly rounded ones used here and depend on the
/// machine's vector width, so a factor in the smoothing band can differ from llama.cpp's in its
/// last bit (BENCHMARKS.md says how often).
fn llama3_rope_freqs(hp: &Hp) -> Result<Option<Vec<f32>>, HfError> {
    let cfg = &hp.map;
    let Some(r) = hp.rope() else {
        return Ok(None);
    };
    let ty = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Json::as_str);
    if !ty.is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        return Ok(None);
    }
    let field = "rope_scaling";
    let num = |k: &str, d: f64| -> Result<f64, HfError> {
        match r.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| hp.err(field, format!("`{k}`: {v} is not a number"))),
        }
    };
    let base = match r.get("rope_theta") {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| hp.err(field, format!("`rope_theta`: {v} is not a number")))?,
        None => cfg
            .get("rope_theta")
            .and_then(Json::as_f64)
            .unwrap_or(10000.0),
    };
    let dim = match cfg.get("head_dim").filter(|v| !v.is_null()) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| hp.err("head_dim", "is not a count"))?,
        None => hp.need(&["hidden_size"])? / hp.need(&["num_attention_heads"])?.max(1),
    };
    if dim == 0 || dim % 2 != 0 || dim > 1 << 16 {
        return Err(hp.err("head_dim", format!("{dim} cannot carry RoPE")));
    }
    let l3 = Llama3Rope {
        factor: num("factor", 8.0)?,
        low_freq_factor: num("low_freq_factor", 1.0)?,
        high_freq_factor: num("high_freq_factor", 4.0)?,
        original_max_position_embeddings: num("original_max_position_embeddings", 8192.0)?,
    };
    Ok(Some(l3.factors(base, dim)))
}

/// Llama 3's RoPE scaling parameters (`rope_scaling` with `rope_type` "llama3").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

impl Llama3Rope {
    /// The `dim / 2` frequency factors for RoPE base `base` (see [`llama3_rope_freqs`]).
    pub fn factors(&self, base: f64, dim: u64) -> Vec<f32> {
        let (factor, low, high) = (self.factor, self.low_freq_factor, self.high_freq_factor);
        let old = self.original_max_position_embeddings;
        let (low_wl, high_wl) = ((old / low) as f32, (old / high) as f32);
        let recip = |x: f32| 1.0f32 / x;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let b = base as f32;
        (0..dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                let freq = recip((f64::from(b).powf(f64::from(e))) as f32);
                let wavelen = recip(freq) * two_pi;
                if wavelen < high_wl {
                    1.0
                } else if wavelen > low_wl {
                    factor as f32
                } else {
                    let smooth = (recip(wavelen) * old as f32 - low as f32) / (high - low) as f32;
                    recip((1.0 - smooth) / factor as f32 + smooth)
                }
            })
            .collect()
    }

    /// The parameters that give `factors` (a GGUF's `rope_freqs`) within `MAX_ULP` units in
    /// the last place, searched among the values Llama 3 models use, with the largest
    /// difference found (0 for a file llama.cpp's converter wrote; a file whose factors were
    /// computed another way, in f64 say, may differ in the last bits); `None` when none does.
    pub fn infer(factors: &[f32], base: f64, dim: u64) -> Option<(Llama3Rope, u32)> {
        const MAX_ULP: u32 = 4;
        let ulps = |a: f32, b: f32| -> u32 {
            if a.is_sign_negative() != b.is_sign_negative() || !a.is_finite() || !b.is_finite() {
                return u32::MAX;
            }
            a.to_bits().abs_diff(b.to_bits())
        };
        let factor = factors.iter().copied().fold(f32::MIN, f32::max);
        let factor: f64 = format!("{factor}").parse().ok()?;
        for old in [8192, 4096, 2048, 1024, 16384, 32768, 65536, 131072, 512] {
            for low in [1.0, 0.5, 2.0, 4.0] {
                for high in [4.0, 8.0, 2.0, 16.0, 32.0] {
                    if high <= low {
                        continue;
                    }
                    let p = Llama3Rope {
                        factor,
                        low_freq_factor: low,
                        high_freq_factor: high,
                        original_max_position_embeddings: old as f64,
                    };
                    let f = p.factors(base, dim);
                    if f.len() != factors.len() {
                        return None;
                    }
                    let worst = f.iter().zip(factors).map(|(&a, &b)| ulps(a, b)).max();
                    if let Some(w) = worst.filter(|&w| w <= MAX_ULP) {
                        return Some((p, w));
                    }
                }
            }
        }
        None
    }
}

/// `Phi3MiniModel.set_gguf_parameters` (its own keys and order; RoPE scaling refused).
fn phi3_hparams(hp: &Hp, outtype: OutType, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    let a = "phi3";
    let cfg = &hp.map;
    let u = |v: u64| Value::U32(v as u32);
    if let Some(r) = hp.rope() {
        return Err(hp.err(
            "rope_scaling",
            format!("{r} is not converted yet (plain RoPE only)"),
        ));
    }
    let n_embd = hp.need(&["hidden_size", "n_embd"])?;
    let n_head = hp.need(&["num_attention_heads", "n_head"])?;
    let n_kv = hp.need(&["num_key_value_heads", "n_head_kv"])?;
    let eps = hp
        .f32(&["rms_norm_eps"])?
        .ok_or_else(|| hp.err("rms_norm_eps", "is missing"))?;
    let n_ctx = hp.need(&["n_positions", "max_position_embeddings"])?;
    let orig = hp.need(&["original_max_position_embeddings"])?;
    // int(rot_pct * n_embd) // n_head, the product in double precision.
    let rope_dims = match hp
        .find(&["partial_rotary_factor", "rope_pct", "rope_percent"])
        .and_then(|(_, v)| v.as_f64())
    {
        Some(f) => ((f * n_embd as f64) as u64) / n_head.max(1),
        None => n_embd / n_head.max(1),
    };
    let theta = hp
        .f32(&["rope_theta"])?
        .ok_or_else(|| hp.err("rope_theta", "is missing"))?;
    put(kv, format!("{a}.context_length"), u(n_ctx));
    put(
        kv,
        format!("{a}.rope.scaling.original_context_length"),
        u(orig),
    );
    put(kv, format!("{a}.embedding_length"), u(n_embd));
    put(
        kv,
        format!("{a}.feed_forward_length"),
        u(hp.need(&["intermediate_size"])?),
    );
    put(
        kv,
        format!("{a}.block_count"),
        u(hp.need(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?),
    );
    put(kv, format!("{a}.attention.head_count"), u(n_head));
    put(kv, format!("{a}.attention.head_count_kv"), u(n_kv));
    put(
        kv,
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(eps),
    );
    put(kv, format!("{a}.rope.dimension_count"), u(rope_dims));
    put(kv, format!("{a}.rope.freq_base"), Value::F32(theta));
    put(kv, "general.file_type", Value::U32(outtype.file_type()));
    let window = match cfg.get("sliding_window") {
        None | Some(Json::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|&n| n < u32::MAX as u64)
            .ok_or_else(|| hp.err("sliding_window", "is not a count"))?,
    };
    put(kv, format!("{a}.attention.sliding_window"), u(window));
    Ok(())
}

/// sentence-transformers' pooling (`modules.json` → the pooling module's `config.json`), as
/// llama.cpp's `_try_set_pooling_type`: 1 mean, 2 CLS, 3 last token.
fn pooling(folder: &HfFolder) -> Result<Option<u32>, HfError> {
    let Some(modules) = folder.json("modules.json", MAX_SMALL_JSON)? else {
        return Ok(None);
    };
    let path = modules
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m.get("type")
                .and_then(Json::as_str)
                .is_some_and(|t| t.ends_with("Pooling"))
        })
        .and_then(|m| m.get("path").and_then(Json::as_str));
    let Some(path) = path else { return Ok(None) };
    if path.contains("..") || path.starts_with('/') {
        return Err(HfError::Config {
            path: folder.dir().join("modules.json"),
            field: "path".into(),
            reason: format!("`{path}` is outside the folder"),
        });
    }
    let cfg_path = format!("{path}/config.json");
    let p = folder
        .json(&cfg_path, MAX_SMALL_JSON)?
        .ok_or_else(|| HfError::Config {
            path: folder.dir().join(&cfg_path),
            field: "pooling".into(),
            reason: "is missing".into(),
        })?;
    let flag = |k: &str| p.get(k).and_then(Json::as_bool).unwrap_or(false);
    let mode = p.get("pooling_mode").and_then(Json::as_str);
    let t = if flag("pooling_mode_mean_tokens") || mode == Some("mean") {
        1
    } else if flag("pooling_mode_cls_token") || mode == Some("cls") {
        2
    } else if flag("pooling_mode_lasttoken") || mode == Some("lasttoken") {
        3
    } else {
        return Err(HfError::Config {
            path: folder.dir().join(&cfg_path),
            field: "pooling_mode".into(),
            reason: "only mean, CLS and last-token pooling are converted (as in llama.cpp)".into(),
        });
    };
    Ok(Some(t))
}

/// The tokenizer model, pre-tokenizer, tokens, token types and special-vocabulary keys, in the
/// order llama.cpp's `set_vocab` adds them.
fn put_vocab(
    kv: &mut Vec<(String, Value)>,
    model: &str,
    pre: String,
    tokens: Vec<String>,
    scores: Option<Vec<f32>>,
    types: Vec<i32>,
    special: Vec<(String, Value)>,
) {
    put(kv, "tokenizer.ggml.model", Value::String(model.into()));
    put(kv, "tokenizer.ggml.pre", Value::String(pre));
    put(
        kv,
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(tokens)),
    );
    if let Some(s) = scores {
        put(kv, "tokenizer.ggml.scores", Value::Array(Array::F32(s)));
    }
    put(
        kv,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(types)),
    );
    for (k, v) in special {
        put(kv, k, v);
    }
}

/// llama.cpp's vocabulary-size rules of `LlamaModel.set_vocab`, after the vocabulary.
fn llama_vocab_rules(hp: &Hp, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    match hp.u64(&["vocab_size"])? {
        Some(32016) => Err(HfError::Unsupported(
            "CodeLlama's infill tokens are not converted".into(),
        )),
        // llama.cpp's rule for Granite's small models (and SmolLM2, which shares the size).
        Some(49152) => {
            put(kv, "tokenizer.ggml.add_bos_token", Value::Bool(false));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The vocabulary keys (llama.cpp's `set_vocab`) appended to `kv`.
fn vocabulary(hp: &Hp, family: Family, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    let folder = hp.folder;
    let tok_config = folder.json("tokenizer_config.json", MAX_SMALL_JSON)?;
    if family == Family::Llama {
        if let Some(add) = tok_config
            .as_ref()
            .and_then(|c| c.get("add_prefix_space"))
            .and_then(Json::as_bool)
        {
            put(kv, "tokenizer.ggml.add_space_prefix", Value::Bool(add));
        }
    }
    // Phi-3: GPT-2's path when `tokenizer_config.json` names GPT2Tokenizer, else its own
    // SentencePiece reading.
    let phi3_gpt2 = family == Family::Phi3
        && match tok_config.as_ref() {
            None => false,
            Some(c) => match c.get("tokenizer_class") {
                Some(Json::String(s)) => s == "GPT2Tokenizer",
                Some(_) => false,
                None => {
                    return Err(HfError::Tokenizer {
                        path: folder.dir().join("tokenizer_config.json"),
                        reason: "`tokenizer_class` is missing (llama.cpp's Phi-3 reader needs it)"
                            .into(),
                    })
                }
            },
        };
    let sp_path = folder.dir().join("tokenizer.model");
    if family == Family::Phi3 && !phi3_gpt2 && !sp_path.exists() {
        return Err(HfError::Tokenizer {
            path: sp_path,
            reason: "is missing (Phi-3 reads a SentencePiece model unless tokenizer_config.json \
                     names GPT2Tokenizer)"
                .into(),
        });
    }
    // Llama and Qwen try `_set_vocab_sentencepiece` first; Gemma 3 takes it when there is a
    // `tokenizer.model`.
    if family.is_decoder() && !phi3_gpt2 && sp_path.exists() {
        let (n, rules) = if family == Family::Phi3 {
            (hp.u64(&["vocab_size"])?, vocab::SpRules::Phi3)
        } else {
            (
                hp.u64(&["vocab_size_per_layer_input", "vocab_size"])?,
                vocab::SpRules::Generic,
            )
        };
        let v = vocab::sentencepiece_vocab(folder, n.map(|n| n as usize), rules)?;
        let (json, added) = vocab::raw_tokenizer_json(folder)?;
        let special = vocab::special_vocab(
            folder,
            &json,
            &added,
            tok_config.as_ref(),
            false,
            Some(v.tokens.len()),
        )?;
        put_vocab(
            kv,
            "llama",
            "default".into(),
            v.tokens,
            Some(v.scores),
            v.types,
            special,
        );
        match family {
            Family::Gemma3 => put(kv, "tokenizer.ggml.add_space_prefix", Value::Bool(false)),
            Family::Llama => llama_vocab_rules(hp, kv)?,
            _ => {}
        }
        return Ok(());
    }
    if family == Family::Gemma3 {
        return Err(HfError::Tokenizer {
            path: folder.dir().join("tokenizer.model"),
            reason: "is missing (Gemma 3 is converted from its SentencePiece model; \
                     llama.cpp reads a tokenizer.json-only Gemma as GPT-2 BPE, which is not \
                     converted yet)"
                .into(),
        });
    }
    let tok = HfTokenizer::load(folder)?;
    let path = folder.dir().join("tokenizer.json");
    let vocab_size = hp.u64(&["vocab_size"])?.map(|v| v as usize);
    if family == Family::Bert {
        let (tokens, types, pre) = vocab::base_vocab(&tok, vocab_size, &path)?;
        let type_count = hp.u64(&["type_vocab_size"])?.unwrap_or(1);
        put(
            kv,
            "tokenizer.ggml.token_type_count",
            Value::U32(type_count as u32),
        );
        // WordPiece to llama.cpp's phantom-space form.
        let tokens: Vec<String> = tokens
            .into_iter()
            .zip(&types)
            .map(|(t, &ty)| {
                if ty == vocab::CONTROL {
                    t
                } else if let Some(rest) = t.strip_prefix("##") {
                    rest.to_string()
                } else {
                    format!("\u{2581}{t}")
                }
            })
            .collect();
        let n = tokens.len();
        let special = vocab::special_vocab(
            folder,
            &tok.json,
            &tok.added,
            tok.config.as_ref(),
            false,
            Some(n),
        )?;
        put_vocab(kv, "bert", pre, tokens, None, types, special);
        return Ok(());
    }
    if family == Family::Llama {
        // `_set_vocab_llama_hf` takes Llama-2-style byte-fallback BPE before GPT-2's path.
        let m = tok.json.get("model");
        let bpe = m.and_then(|m| m.get("type")).and_then(Json::as_str) == Some("BPE");
        let byte_fallback = m
            .and_then(|m| m.get("byte_fallback"))
            .and_then(Json::as_bool);
        let ignore_merges = m
            .and_then(|m| m.get("ignore_merges"))
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let seq_decoder =
            tok.json.pointer("/decoder/type").and_then(Json::as_str) == Some("Sequence");
        let llama3 = bpe && ignore_merges && !byte_fallback.unwrap_or(true);
        if !llama3 && bpe && byte_fallback.unwrap_or(false) && seq_decoder {
            return Err(HfError::Tokenizer {
                path,
                reason: "Llama-2-style byte-fallback BPE vocabularies are not converted yet".into(),
            });
        }
    }
    // `_set_vocab_gpt2`.
    let (tokens, types, pre) = vocab::base_vocab(&tok, vocab_size, &path)?;
    let special = vocab::special_vocab(
        folder,
        &tok.json,
        &tok.added,
        tok.config.as_ref(),
        true,
        None,
    )?;
    put_vocab(kv, "gpt2", pre, tokens, None, types, special);
    if family == Family::Llama {
        llama_vocab_rules(hp, kv)?;
    }
    Ok(())
}

/// Plans a conversion (see the module's documentation): every check that needs no tensor data.
pub fn plan(dir: &Path, outtype: OutType) -> Result<Plan, HfError> {
    plan_folder(HfFolder::open(dir)?, dir, outtype)
}

/// [`plan`] of a folder already opened (`dir`, as given, names the model).
pub fn plan_folder(folder: HfFolder, dir: &Path, outtype: OutType) -> Result<Plan, HfError> {
    let hf_arch = folder
        .config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .ok_or_else(|| cfg_err(&folder, "architectures", "is missing"))?
        .to_string();
    let family = ARCHS
        .iter()
        .find(|(n, _)| *n == hf_arch)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let known: Vec<&str> = ARCHS.iter().map(|(n, _)| *n).collect();
            cfg_err(
                &folder,
                "architectures",
                format!("`{hf_arch}` is not converted (known: {})", known.join(", ")),
            )
        })?;
    if folder.config.contains_key("text_config") {
        return Err(cfg_err(
            &folder,
            "text_config",
            "multimodal checkpoints are not converted",
        ));
    }
    let hp = Hp::new(&folder, family, &hf_arch);
    let (n_head, n_kv) = match family {
        Family::Llama => {
            let h = hp.need(&["n_heads", "num_attention_heads"])? as usize;
            let kv = hp
                .u64(&["n_kv_heads", "num_key_value_heads"])?
                .map(|v| v as usize);
            (h, kv.unwrap_or(h))
        }
        Family::Bert | Family::Gemma3 | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => (0, 0),
    };
    let mut tensors = Vec::new();
    let mut shapes = Vec::new();
    for (i, t) in folder.tensors.iter().enumerate() {
        let name = t.name();
        let Some(g) = map_name(family, &hf_arch, name)
            .map_err(|r| HfError::Unsupported(format!("{}: {r}", folder.dir().display())))?
        else {
            continue;
        };
        if !matches!(t.info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(frugal_formats::Error::InvalidTensor {
                path: folder.shard_paths()[t.shard].to_path_buf(),
                tensor: name.to_string(),
                reason: format!(
                    "dtype {} is not converted (F32, F16 and BF16 are)",
                    t.info.dtype
                ),
            }
            .into());
        }
        if t.info.shape.is_empty() || t.info.shape.len() > 4 || t.info.shape.contains(&0) {
            return Err(frugal_formats::Error::InvalidTensor {
                path: folder.shard_paths()[t.shard].to_path_buf(),
                tensor: name.to_string(),
                reason: format!("shape {:?} is not converted", t.info.shape),
            }
            .into());
        }
        let dims: Vec<u64> = t.info.shape.iter().rev().copied().collect();
        let permute = match family {
            Family::Llama if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") => {
                Some(n_head)
            }
            Family::Llama if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") => {
                Some(n_kv)
            }
            _ => None,
        };
        if let Some(h) = permute {
            let rows = t.info.shape[0] as usize;
            if h == 0 || !rows.is_multiple_of(2 * h) {
                return Err(hp.err(
                    "num_attention_heads",
                    format!("{h} heads do not divide the {rows} rows of `{name}`"),
                ));
            }
        }
        let ggml_type = tensor_type(&g, dims.len(), dims[0], outtype);
        shapes.push((g.clone(), dims.clone(), name.to_string()));
        tensors.push(PlannedTensor {
            src: Source::Folder(i),
            norm_shift: family == Family::Gemma3 && name.ends_with("norm.weight"),
            name: g,
            dims,
            ggml_type,
            permute,
            rows: None,
        });
    }
    if family == Family::Llama {
        if let Some(v) = llama3_rope_freqs(&hp)? {
            tensors.insert(
                0,
                PlannedTensor {
                    dims: vec![v.len() as u64],
                    src: Source::Values(v),
                    name: "rope_freqs.weight".into(),
                    ggml_type: GgmlType::F32,
                    permute: None,
                    norm_shift: false,
                    rows: None,
                },
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tensors {
        if !seen.insert(&t.name) {
            return Err(HfError::Unsupported(format!(
                "two tensors map to `{}`",
                t.name
            )));
        }
    }
    check_sizes(&hp, family, &shapes)?;
    // The vocabulary first: Gemma's embedding is trimmed to it before parameters are counted.
    let mut vocab_kv: Vec<(String, Value)> = Vec::new();
    vocabulary(&hp, family, &mut vocab_kv)?;
    if family == Family::Gemma3 {
        // Gemma3Model.modify_tensors: the embedding's rows beyond the vocabulary are dropped.
        let n_vocab = vocab_kv
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| match v {
                Value::Array(Array::String(t)) => Some(t.len() as u64),
                _ => None,
            })
            .unwrap_or(0);
        if let Some(t) = tensors.iter_mut().find(|t| t.name == "token_embd.weight") {
            if t.dims.len() == 2 && n_vocab < t.dims[1] {
                t.dims[1] = n_vocab;
                t.rows = Some(n_vocab as usize);
            }
        }
    }
    let total_params: u64 = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();

    let card = match folder.text("README.md", MAX_README)? {
        Some(t) => model_card::front_matter(&t).map_err(|e| HfError::Card(e.to_string()))?,
        None => None,
    };
    let generation = metadata::GenerationConfig::read(&folder)?;
    // The folder's name as given (`Path.name`: "" for "." or "/").
    let folder_name = dir
        .components()
        .next_back()
        .and_then(|c| match c {
            std::path::Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .unwrap_or("");
    let name_or_path = folder.config.get("_name_or_path").and_then(Json::as_str);
    let meta = metadata::load(
        card.as_deref(),
        name_or_path,
        generation.as_ref(),
        folder_name,
        total_params as i64,
    )?;

    let mut kv: Vec<(String, Value)> = Vec::new();
    put(
        &mut kv,
        "general.architecture",
        Value::String(family.gguf_arch().into()),
    );
    put(&mut kv, "general.type", Value::String("model".into()));
    for (k, v) in meta.to_gguf() {
        put(&mut kv, k, v);
    }
    hparams(&hp, family, outtype, &mut kv)?;
    put(&mut kv, "general.quantization_version", Value::U32(2));
    for (k, v) in vocab_kv {
        put(&mut kv, k, v);
    }
    drop(hp);
    Ok(Plan {
        folder,
        family,
        metadata: kv,
        tensors,
        total_params,
    })
}

/// Decodes a tensor's little-endian bytes to F32.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .par_chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .par_chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .par_chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => unreachable!("plan refuses other dtypes"),
    }
}

/// Rows of `data` (`rows` rows) gathered: output row `r` is input row `src(r)`.
fn gather_rows(data: &[f32], rows: usize, src: impl Fn(usize) -> usize + Sync) -> Vec<f32> {
    let cols = data.len() / rows;
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(cols).enumerate().for_each(|(r, dst)| {
        let s = src(r);
        dst.copy_from_slice(&data[s * cols..(s + 1) * cols]);
    });
    out
}

/// llama.cpp's `LlamaModel.permute`: within each of `heads` heads, rows `[x0 | x1]` (halves)
/// become interleaved pairs `(x0[i], x1[i])`.
pub fn permute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    gather_rows(data, rows, |r| {
        let (h, w) = (r / hd, r % hd);
        h * hd + (w % 2) * (hd / 2) + w / 2
    })
}

/// The inverse of [`permute_rows`] (what `frugal export` writes back).
pub fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    gather_rows(data, rows, |r| {
        let (h, w) = (r / hd, r % hd);
        h * hd + (w % (hd / 2)) * 2 + w / (hd / 2)
    })
}

/// Encodes F32 values as `t` (rows of `row_len`).
pub fn encode(t: GgmlType, data: &[f32], row_len: usize) -> Result<Vec<u8>, HfError> {
    if t == GgmlType::BF16 {
        return Ok(data
            .par_iter()
            .flat_map_iter(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect());
    }
    let c = codec(t).ok_or_else(|| HfError::Unsupported(format!("type {t:?} is not written")))?;
    let row_bytes = t
        .bytes_for(row_len as u64)
        .ok_or_else(|| HfError::Unsupported(format!("rows of {row_len} do not fit {t:?}")))?
        as usize;
    let rows = data.len() / row_len;
    let mut out = vec![0u8; rows * row_bytes];
    out.par_chunks_mut(row_bytes)
        .zip(data.par_chunks(row_len))
        .for_each(|(o, r)| (c.row)(r, None, o));
    Ok(out)
}

/// Gemma's `w + 1.0`, as torch computes it in llama.cpp's converter: in F32 for F32 and BF16
/// checkpoints (BF16 is widened first), rounded to F16 for F16 ones.
fn shift_norm(v: &mut [f32], dtype: Dtype) {
    for x in v.iter_mut() {
        *x += 1.0;
        if dtype == Dtype::F16 {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
}

/// Values per slice when a tensor is streamed (16 MiB of F32).
const SLICE_VALUES: usize = 4 << 20;

impl Plan {
    /// Streams tensor `i` of the plan, encoded, to `sink` a slice of whole rows at a time (whole
    /// heads for permuted tensors), so that memory stays near one slice whatever the tensor's
    /// size; each slice's input pages are released once read.
    pub fn stream_tensor(
        &self,
        i: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), HfError>,
    ) -> Result<(), HfError> {
        let p = &self.tensors[i];
        let src: &HfTensor = match &p.src {
            Source::Folder(s) => &self.folder.tensors[*s],
            Source::Values(v) => return sink(&encode(p.ggml_type, v, v.len().max(1))?),
        };
        let bytes = self.folder.tensor_data(src);
        let row_len = p.dims[0] as usize;
        let rows = p.rows.unwrap_or((src.info.n_elements() as usize) / row_len);
        let group = match p.permute {
            Some(h) => rows / h,
            None => 1,
        };
        let per = (SLICE_VALUES / row_len).max(1);
        let step = per.div_ceil(group) * group;
        let esize = src.info.dtype.size() as usize;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + step).min(rows);
            let (b0, b1) = (r0 * row_len * esize, r1 * row_len * esize);
            let mut v = decode_f32(src.info.dtype, &bytes[b0..b1]);
            if p.permute.is_some() {
                v = permute_rows(&v, r1 - r0, (r1 - r0) / group);
            }
            if p.norm_shift {
                shift_norm(&mut v, src.info.dtype);
            }
            sink(&encode(p.ggml_type, &v, row_len)?)?;
            self.folder.release(src, b0 as u64, (b1 - b0) as u64);
            r0 = r1;
        }
        Ok(())
    }

    /// The header the plan writes.
    pub fn specs(&self) -> Vec<TensorSpec<'_>> {
        self.tensors
            .iter()
            .map(|t| TensorSpec {
                name: &t.name,
                ggml_type: t.ggml_type,
                dims: &t.dims,
            })
            .collect()
    }
}

/// Converts the checkpoint folder `dir` to `out` (see the module's documentation).
pub fn convert(dir: &Path, out: &Path, outtype: OutType) -> Result<ConvertReport, HfError> {
    let plan = plan(dir, outtype)?;
    let inputs = plan.folder.input_paths();
    let input_refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let specs = plan.specs();
    let mut w = GgufStreamWriter::create(out, &input_refs, &plan.metadata, &specs)?;
    for i in 0..plan.tensors.len() {
        plan.stream_tensor(i, &mut |b| Ok(w.write_part(b)?))?;
        w.end_tensor()?;
    }
    let bytes = w.finish()?;
    let hf_architecture = plan.folder.config["architectures"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(ConvertReport {
        input: dir.to_path_buf(),
        output: out.to_path_buf(),
        hf_architecture,
        gguf_architecture: plan.family.gguf_arch().into(),
        outtype,
        tensors: plan.tensors.len(),
        parameters: plan.total_params,
        bytes,
    })
}
