//! Tokenizers built from GGUF metadata, keyed by `tokenizer.ggml.model`: one module per model
//! ([`bpe`]: byte-level BPE, `gpt2`), each building a `tokenizers::Tokenizer` so that token ids
//! match llama.cpp's for the same text (checked against `llama-tokenize` in the interop tests).
//! A new tokenizer model is a file beside `bpe.rs` and a row in [`MODELS`]. Special tokens in
//! the text are not parsed, as in llama.cpp's perplexity tool.

pub mod bpe;

use crate::error::{Error, Result};
use frugal_formats::gguf::{GgufFile, Value};

/// A tokenizer model's part: the `tokenizers` pipeline, the vocabulary size, and the
/// pre-tokenizer's name.
pub struct Built {
    pub inner: tokenizers::Tokenizer,
    pub n_vocab: usize,
    pub pre: String,
}

/// Builds a model's tokenizer from the file's metadata.
pub type Build = fn(&GgufFile) -> Result<Built>;

/// The tokenizer models Frugal builds, by `tokenizer.ggml.model`.
pub const MODELS: &[(&str, Build)] = &[("gpt2", bpe::build)];

/// A metadata error of `f`'s tokenizer.
pub(crate) fn bad(f: &GgufFile, key: &str, reason: &str) -> Error {
    Error::BadMetadata {
        path: f.path().to_path_buf(),
        key: key.into(),
        reason: reason.into(),
    }
}

/// A tokenizer read from a GGUF file.
pub struct GgufTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (llama.cpp's default for BPE vocabularies is false).
    pub add_bos: bool,
    pub n_vocab: usize,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
}

impl GgufTokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let h = &f.header;
        let build = match h.get("tokenizer.ggml.model").and_then(Value::as_str) {
            Some(m) => MODELS
                .iter()
                .find(|(name, _)| *name == m)
                .map(|r| r.1)
                .ok_or_else(|| {
                    bad(
                        f,
                        "tokenizer.ggml.model",
                        &format!(
                            "`{m}` tokenizers are not supported yet (only {})",
                            MODELS
                                .iter()
                                .map(|r| format!("`{}`", r.0))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
            None => return Err(bad(f, "tokenizer.ggml.model", "missing")),
        };
        let Built {
            inner,
            n_vocab,
            pre,
        } = build(f)?;
        let id = |k: &str| {
            h.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let add_bos = matches!(
            h.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        Ok(GgufTokenizer {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos,
            n_vocab,
            pre,
        })
    }

    /// Token ids of `text`; with `add_special`, a BOS token first when the model asks for one.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
}
