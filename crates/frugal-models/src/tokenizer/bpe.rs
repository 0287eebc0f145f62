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
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// How llama.cpp splits text before byte-level BPE, by `tokenizer.ggml.pre` name (its
/// `llama-vocab.cpp`): the one table of the pre-tokenizers Frugal builds.
struct PreSpec {
    names: &'static [&'static str],
    split: PreSplit,
    /// A word the vocabulary holds whole is one token, merges or not (Llama 3).
    ignore_merges: bool,
    /// llama.cpp's default for adding BOS when the file does not say.
    add_bos: bool,
}

enum PreSplit {
    /// GPT-2's regex on bytes mapped to printable characters.
    Gpt2,
    /// Every digit its own word first (llama.cpp's `\p{N}` pass), then GPT-2's regex.
    DigitsThenGpt2,
    /// This regex (llama.cpp's adaptation, case-insensitive contractions spelled out), then
    /// the bytes mapped to printable characters.
    Regex(&'static str),
}

const PRE: &[PreSpec] = &[
    PreSpec {
        names: &["default", "gpt2", "gpt-2"],
        split: PreSplit::Gpt2,
        ignore_merges: false,
        add_bos: false,
    },
    PreSpec {
        names: &["smollm"],
        split: PreSplit::DigitsThenGpt2,
        ignore_merges: false,
        add_bos: false,
    },
    // Llama 3 (and what llama.cpp runs with its regex): digits in runs of up to three.
    PreSpec {
        names: &["llama3", "llama-v3", "llama-bpe"],
        split: PreSplit::Regex(
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        ignore_merges: true,
        add_bos: true,
    },
    // Qwen2: the same with every digit its own word.
    PreSpec {
        names: &["qwen2", "deepseek-r1-qwen"],
        split: PreSplit::Regex(
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        ignore_merges: false,
        add_bos: false,
    },
];

/// The pre-tokenizers Frugal builds, by their `tokenizer.ggml.pre` names.
pub fn supported_pre() -> Vec<&'static str> {
    PRE.iter().flat_map(|p| p.names.iter().copied()).collect()
}

fn pre_tokenizer(spec: &PreSpec) -> Result<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match spec.split {
        PreSplit::Gpt2 => byte_level.into(),
        PreSplit::DigitsThenGpt2 => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        PreSplit::Regex(re) => {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
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
    let spec = PRE
        .iter()
        .find(|p| p.names.contains(&pre.as_str()))
        .ok_or_else(|| {
            bad(
                f,
                "tokenizer.ggml.pre",
                &format!(
                    "pre-tokenizer `{pre}` is not supported yet (supported: {})",
                    supported_pre().join(", ")
                ),
            )
        })?;
    let pre_tok = pre_tokenizer(spec)?;
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
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("{}: building BPE: {e}", f.path().display())))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tok));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(Built {
        inner: Engine::Hf(Box::new(inner)),
        n_vocab: tokens.len(),
        pre,
        add_bos_default: spec.add_bos,
    })
}
