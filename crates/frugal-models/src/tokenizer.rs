//! Byte-level BPE tokenizers built from GGUF metadata (`tokenizer.ggml.model = "gpt2"`): the
//! vocabulary, the merges and the pre-tokenizer named by `tokenizer.ggml.pre`, assembled with
//! the `tokenizers` crate so that token ids match llama.cpp's for the same text (checked against
//! `llama-tokenize` in the interop tests). Special tokens in the text are not parsed, as in
//! llama.cpp's perplexity tool.

use crate::error::{Error, Result};
use frugal_formats::gguf::{Array, GgufFile, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

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

/// The pre-tokenizers we can build, by their `tokenizer.ggml.pre` name.
pub const SUPPORTED_PRE: &[&str] = &["default", "gpt2", "gpt-2", "smollm"];

fn pre_tokenizer(pre: &str) -> Option<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, true, true);
    Some(match pre {
        // GPT-2's regex on bytes mapped to printable characters.
        "default" | "gpt2" | "gpt-2" => byte_level.into(),
        // SmolLM: every digit is its own word first (llama.cpp's `\p{N}` pass), then GPT-2's regex.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        _ => return None,
    })
}

impl GgufTokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let h = &f.header;
        let bad = |key: &str, reason: &str| Error::BadMetadata {
            path: f.path().to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        };
        match h.get("tokenizer.ggml.model").and_then(Value::as_str) {
            Some("gpt2") => {}
            Some(m) => {
                return Err(bad(
                    "tokenizer.ggml.model",
                    &format!(
                        "`{m}` tokenizers are not supported yet (only byte-level BPE, `gpt2`)"
                    ),
                ))
            }
            None => return Err(bad("tokenizer.ggml.model", "missing")),
        }
        let tokens = match h.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::String(t))) => t,
            _ => {
                return Err(bad(
                    "tokenizer.ggml.tokens",
                    "missing or not an array of strings",
                ))
            }
        };
        let merges = match h.get("tokenizer.ggml.merges") {
            Some(Value::Array(Array::String(m))) => m,
            _ => {
                return Err(bad(
                    "tokenizer.ggml.merges",
                    "missing or not an array of strings",
                ))
            }
        };
        let pre = h
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let pre_tok = pre_tokenizer(&pre).ok_or_else(|| {
            bad(
                "tokenizer.ggml.pre",
                &format!(
                    "pre-tokenizer `{pre}` is not supported yet (supported: {})",
                    SUPPORTED_PRE.join(", ")
                ),
            )
        })?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        bad(
                            "tokenizer.ggml.merges",
                            &format!("merge {i} ({m:?}) is not two tokens separated by a space"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("{}: building BPE: {e}", f.path().display())))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
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
            n_vocab: tokens.len(),
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
