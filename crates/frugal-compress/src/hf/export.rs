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
//! `smollm` or `gpt-2`; anything else is refused naming the key.

use super::convert::{encode, split_suffix, unpermute_rows, LLAMA_NAMES};
use super::{HfError, OutType};
use frugal_formats::gguf::{GgmlType, GgufFile, Value};
use frugal_formats::output::{write_atomic, AtomicDir};
use frugal_formats::safetensors::{Dtype, SafetensorsStreamWriter, StTensorSpec};
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
    pub bytes: u64,
}

impl ExportReport {
    pub fn to_text(&self) -> String {
        format!(
            "{} -> {} ({}, {}): {} tensors ({} dequantized), model.safetensors {} bytes\n",
            self.input.display(),
            self.output.display(),
            self.architecture,
            serde_json::to_string(&self.dtype)
                .unwrap_or_default()
                .trim_matches('"'),
            self.tensors,
            self.dequantized,
            self.bytes
        )
    }
}

/// `config.json` of an exported Llama model.
#[derive(Serialize)]
struct LlamaConfigJson {
    architectures: [&'static str; 1],
    model_type: &'static str,
    hidden_act: &'static str,
    hidden_size: u64,
    intermediate_size: u64,
    num_attention_heads: u64,
    num_key_value_heads: u64,
    num_hidden_layers: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<u64>,
    vocab_size: u64,
    max_position_embeddings: u64,
    rms_norm_eps: f64,
    rope_theta: f64,
    attention_bias: bool,
    mlp_bias: bool,
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

/// HF name of a GGUF tensor of the `llama` architecture, and the heads to un-permute by.
fn hf_name(name: &str, n_head: usize, n_kv: usize) -> Result<(String, Option<usize>), HfError> {
    let hf = LLAMA_NAMES
        .to_hf(name)
        .ok_or_else(|| bad(name, "tensor is not exported (llama rows only)"))?;
    let (stem, _) = split_suffix(name);
    let heads = if stem.ends_with(".attn_q") {
        Some(n_head)
    } else if stem.ends_with(".attn_k") {
        Some(n_kv)
    } else {
        None
    };
    Ok((hf, heads))
}

/// Exports `input` to the folder `out` (which must not exist).
pub fn export(input: &Path, out: &Path, dtype: OutType) -> Result<ExportReport, HfError> {
    let f = GgufFile::open(input)?;
    let arch = f.header.architecture().unwrap_or("").to_string();
    if arch != "llama" {
        return Err(bad(
            "general.architecture",
            format!("`{arch}` is not exported yet (llama is)"),
        ));
    }
    if dtype == OutType::Q8_0 {
        return Err(HfError::Unsupported(
            "--dtype q8_0: a Hugging Face checkpoint holds f32, f16 or bf16".into(),
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let n_head = need_u64(&f, &key("attention.head_count"))?;
    let n_kv = get(&f, &key("attention.head_count_kv"))
        .and_then(Value::as_u64)
        .unwrap_or(n_head);
    let hidden = need_u64(&f, &key("embedding_length"))?;
    let rope_dim = get(&f, &key("rope.dimension_count")).and_then(Value::as_u64);
    let head_dim = rope_dim.filter(|&d| d != hidden / n_head.max(1));
    for k in ["rope.scaling.type", "rope.freq_scale"] {
        if get(&f, &key(k)).is_some() {
            return Err(bad(&key(k), "RoPE scaling is not exported yet"));
        }
    }
    if f.tensor("rope_freqs.weight").is_some() {
        return Err(bad(
            "rope_freqs.weight",
            "Llama 3 RoPE factors are not exported yet",
        ));
    }

    // Tokenizer.
    if get(&f, "tokenizer.ggml.model").and_then(Value::as_str) != Some("gpt2") {
        return Err(bad(
            "tokenizer.ggml.model",
            "only GPT-2-style BPE vocabularies are exported",
        ));
    }
    let pre = get(&f, "tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre_tok = pre_tokenizer(pre)?;
    let tokens = strings(&f, "tokenizer.ggml.tokens")?;
    let merges = strings(&f, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match get(&f, "tokenizer.ggml.token_type") {
        Some(Value::Array(frugal_formats::gguf::Array::I32(v))) if v.len() == tokens.len() => {
            v.clone()
        }
        _ => {
            return Err(bad(
                "tokenizer.ggml.token_type",
                "is missing or of the wrong length",
            ))
        }
    };
    let id = |k: &str| {
        get(&f, &format!("tokenizer.ggml.{k}_token_id"))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
    };
    let (bos, eos, unk, pad) = (id("bos"), id("eos"), id("unknown"), id("padding"));
    for (k, v) in [
        ("bos", bos),
        ("eos", eos),
        ("unknown", unk),
        ("padding", pad),
    ] {
        if v.is_some_and(|v| v as usize >= tokens.len()) {
            return Err(bad(
                &format!("tokenizer.ggml.{k}_token_id"),
                "is outside the vocabulary",
            ));
        }
    }
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
        .map(|(i, (t, &ty))| super::vocab::AddedToken {
            id: i as u32,
            content: t.clone(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: ty == super::vocab::CONTROL,
        })
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
    let content = |i: Option<u32>| i.map(|i| tokens[i as usize].clone());
    let mut tok_cfg = serde_json::Map::new();
    if let Some(b) = get(&f, "tokenizer.ggml.add_space_prefix").and_then(|v| match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }) {
        tok_cfg.insert("add_prefix_space".into(), Json::Bool(b));
    }
    for (k, v) in [
        ("bos_token", bos),
        ("eos_token", eos),
        ("unk_token", unk),
        ("pad_token", pad),
    ] {
        if let Some(c) = content(v) {
            tok_cfg.insert(k.into(), Json::String(c));
        }
    }
    if let Some(t) = get(&f, "tokenizer.chat_template").and_then(Value::as_str) {
        tok_cfg.insert("chat_template".into(), Json::String(t.into()));
    }
    tok_cfg.insert("clean_up_tokenization_spaces".into(), Json::Bool(false));
    if let Some(n) = get(&f, &key("context_length")).and_then(Value::as_u64) {
        tok_cfg.insert("model_max_length".into(), Json::from(n));
    }
    tok_cfg.insert(
        "tokenizer_class".into(),
        Json::String("GPT2Tokenizer".into()),
    );

    // Tensors, in the file's order, with their HF names.
    let mut plan: Vec<(usize, String, Vec<u64>, Option<usize>)> = Vec::new();
    for (i, t) in f.header.tensors.iter().enumerate() {
        let (name, heads) = hf_name(&t.name, n_head as usize, n_kv as usize)?;
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        if let Some(h) = heads {
            if h == 0 || !(shape[0] as usize).is_multiple_of(2 * h) {
                return Err(bad(
                    &t.name,
                    format!("{} rows do not split into {h} heads", shape[0]),
                ));
            }
        }
        plan.push((i, name, shape, heads));
    }
    let n_layer = need_u64(&f, &key("block_count"))?;
    let vocab_size = get(&f, &key("vocab_size"))
        .and_then(Value::as_u64)
        .unwrap_or(tokens.len() as u64);
    let config = LlamaConfigJson {
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        hidden_act: "silu",
        hidden_size: hidden,
        intermediate_size: need_u64(&f, &key("feed_forward_length"))?,
        num_attention_heads: n_head,
        num_key_value_heads: n_kv,
        num_hidden_layers: n_layer,
        head_dim,
        vocab_size,
        max_position_embeddings: need_u64(&f, &key("context_length"))?,
        rms_norm_eps: short(
            get(&f, &key("attention.layer_norm_rms_epsilon"))
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(&key("attention.layer_norm_rms_epsilon"), "is missing"))?
                as f32,
        ),
        rope_theta: short(
            get(&f, &key("rope.freq_base"))
                .and_then(Value::as_f64)
                .unwrap_or(10000.0) as f32,
        ),
        attention_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        tie_word_embeddings: f.tensor("output.weight").is_none(),
        bos_token_id: bos,
        eos_token_id: eos,
        pad_token_id: pad,
        torch_dtype: match dtype {
            OutType::F16 => "float16",
            OutType::Bf16 => "bfloat16",
            _ => "float32",
        },
        use_cache: true,
    };
    let card = model_card(&f, input);

    let dir = AtomicDir::create(out)?;
    let tmp = dir.tmp_path().to_path_buf();
    let json_file = |name: &str, v: &dyn erased::Ser| -> Result<(), HfError> {
        write_atomic(&tmp.join(name), &[input], |w| {
            w.write_all(v.to_pretty().as_bytes())?;
            w.write_all(b"\n")
        })?;
        Ok(())
    };
    json_file("config.json", &config)?;
    json_file("tokenizer.json", &tokenizer)?;
    json_file("tokenizer_config.json", &Json::Object(tok_cfg))?;
    write_atomic(&tmp.join("README.md"), &[input], |w| {
        w.write_all(card.as_bytes())
    })?;

    let st_dtype = match dtype {
        OutType::F16 => Dtype::F16,
        OutType::Bf16 => Dtype::BF16,
        _ => Dtype::F32,
    };
    let specs: Vec<StTensorSpec> = plan
        .iter()
        .map(|(_, n, s, _)| StTensorSpec {
            name: n,
            dtype: st_dtype,
            shape: s,
        })
        .collect();
    let st_path = tmp.join("model.safetensors");
    let mut w = SafetensorsStreamWriter::create(
        &st_path,
        &[input],
        &BTreeMap::from([("format".to_string(), "pt".to_string())]),
        &specs,
    )?;
    let dev = candle_core::Device::Cpu;
    let mut dequantized = 0;
    for (i, _, shape, heads) in &plan {
        let info = &f.header.tensors[*i];
        dequantized += usize::from(!matches!(
            info.ggml_type,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
        ));
        let t = frugal_models::gguf_load::load_f32(&f, &info.name, &dev)?;
        let mut v: Vec<f32> = t
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(frugal_models::Error::from)?;
        drop(t);
        f.release(info);
        if let Some(h) = heads {
            v = unpermute_rows(&v, shape[0] as usize, *h);
        }
        // The same rounding as conversion's (F16, BF16 nearest even; F32 as it is).
        let row_len = *shape.last().unwrap_or(&1) as usize;
        w.write_tensor(&encode(dtype.ggml(), &v, row_len)?)?;
    }
    let bytes = w.finish()?;
    dir.commit()?;
    Ok(ExportReport {
        input: input.to_path_buf(),
        output: out.to_path_buf(),
        architecture: arch,
        dtype,
        tensors: plan.len(),
        dequantized,
        bytes,
    })
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
