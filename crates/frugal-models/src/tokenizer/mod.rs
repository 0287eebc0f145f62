//! Tokenizers built from GGUF metadata, keyed by `tokenizer.ggml.model`: one module per model
//! ([`bpe`]: byte-level BPE, `gpt2`, on the `tokenizers` crate; [`spm`]: score-merged
//! SentencePiece vocabularies, `llama`, Frugal's own port of llama.cpp's), so that token ids
//! match llama.cpp's for the same text (checked against `llama-tokenize` in the interop tests).
//! A new tokenizer model is a file beside `bpe.rs` and a row in [`MODELS`]. Special tokens in
//! the text are not parsed, as in llama.cpp's perplexity tool.

pub mod bpe;
pub mod spm;

use crate::error::{Error, Result};
use frugal_formats::gguf::{GgufFile, Value};

/// What turns text into ids and back.
pub enum Engine {
    /// A `tokenizers` pipeline (byte-level BPE).
    Hf(Box<tokenizers::Tokenizer>),
    /// A score-merged SentencePiece vocabulary.
    Spm(Box<spm::Spm>),
}

impl Engine {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Engine::Hf(t) => t
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(e.to_string())),
            Engine::Spm(s) => s.encode(text),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Engine::Hf(t) => t
                .decode(ids, false)
                .map_err(|e| Error::Tokenizer(e.to_string())),
            Engine::Spm(s) => s.decode(ids),
        }
    }
}

/// A tokenizer model's part: the engine, the vocabulary size, the pre-tokenizer's name, and
/// whether a BOS token is added when the file does not say (llama.cpp's default per model).
pub struct Built {
    pub inner: Engine,
    pub n_vocab: usize,
    pub pre: String,
    pub add_bos_default: bool,
}

/// Builds a model's tokenizer from the file's metadata.
pub type Build = fn(&GgufFile) -> Result<Built>;

/// The tokenizer models Frugal builds, by `tokenizer.ggml.model`.
pub const MODELS: &[(&str, Build)] = &[("gpt2", bpe::build), ("llama", spm::build)];

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
    inner: Engine,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`, else the model's default (llama.cpp's: false for BPE
    /// vocabularies, true for SentencePiece ones).
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
            add_bos_default,
        } = build(f)?;
        let id = |k: &str| {
            h.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let add_bos = match h.get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            _ => add_bos_default,
        };
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
        let enc = self.inner.encode(text)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(&enc);
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids)
    }
}
