//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): the vocabulary, the merges and the
//! pre-tokenizer named by `tokenizer.ggml.pre`, assembled with the `tokenizers` crate.

use super::{bad, Built, Engine};
use crate::error::{Error, Result};
use frugal_formats::gguf::{Array, GgufFile, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

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

/// The byte-level BPE tokenizer of `f`.
pub fn build(f: &GgufFile) -> Result<Built> {
    let h = &f.header;
    let tokens = match h.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => t,
        _ => {
            return Err(bad(
                f,
                "tokenizer.ggml.tokens",
                "missing or not an array of strings",
            ))
        }
    };
    let merges = match h.get("tokenizer.ggml.merges") {
        Some(Value::Array(Array::String(m))) => m,
        _ => {
            return Err(bad(
                f,
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
            f,
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
                        f,
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
    Ok(Built {
        inner: Engine::Hf(Box::new(inner)),
        n_vocab: tokens.len(),
        pre,
        add_bos_default: false,
    })
}
