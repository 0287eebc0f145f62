//! The byte-level BPE pre-tokenizers Llama 3 and Qwen2 name (`tokenizer.ggml.pre` = `llama-bpe`,
//! `qwen2`) against llama-tokenize: SmolLM2's GGUF with only that key changed, written here by
//! Frugal's writer as `bench/make-golden-pre.sh` writes it for llama.cpp, must give the golden's
//! ids on hand-written strings and on the whole Brown corpus.

mod common;

use common::{brown_text, check_summary, golden, require};
use frugal_formats::assets;
use frugal_formats::gguf::{write_gguf_file, GgufFile, TensorToWrite, Value};
use frugal_models::tokenizer::GgufTokenizer;

#[test]
fn llama_bpe_and_qwen2_pre_tokenizers_match_llama_tokenize() {
    let Some(q41) = require(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let Some(all) = brown_text("ca01-cr09") else {
        return;
    };
    let g = golden("pre_tokens.json");
    let src = GgufFile::open(&q41).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for pre in ["llama-bpe", "qwen2"] {
        let mut meta = src.header.metadata.clone();
        for (k, v) in meta.iter_mut() {
            if k == "tokenizer.ggml.pre" {
                *v = Value::String(pre.into());
            }
        }
        let data: Vec<_> = src
            .header
            .tensors
            .iter()
            .map(|t| src.tensor_data(t))
            .collect();
        let tensors: Vec<TensorToWrite> = src
            .header
            .tensors
            .iter()
            .zip(&data)
            .map(|(t, data)| TensorToWrite {
                name: &t.name,
                ggml_type: t.ggml_type,
                dims: &t.dims,
                data,
            })
            .collect();
        let path = dir.path().join(format!("{pre}.gguf"));
        write_gguf_file(&path, &[&q41], &meta, &tensors).unwrap();
        let tok = GgufTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        for case in g[pre]["strings"].as_array().unwrap() {
            let s = case["text"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(tok.encode(s, false).unwrap(), want, "{pre}: {s:?}");
        }
        check_summary(
            &tok.encode(&all, false).unwrap(),
            &g[pre]["brown_all"],
            &format!("{pre}: ca01-cr09"),
        );
    }
}
