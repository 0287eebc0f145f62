//! Frugal against llama.cpp on SmolLM2, through golden files made by `bench/make-golden.sh`
//! (llama-tokenize and llama-perplexity from llama-cpp-python 0.3.36): token ids must be
//! identical, and F32 perplexity must agree within 0.5 % on the same number of tokens.

mod common;

use common::{check_summary, golden, require};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::tokenizer::GgufTokenizer;

fn brown_text() -> Option<String> {
    common::brown_text("cj01-cj12")
}

#[test]
fn token_ids_match_llama_tokenize() {
    let Some(model) = require(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let Some(text) = brown_text() else { return };
    let tok = GgufTokenizer::from_gguf(&GgufFile::open(model).unwrap()).unwrap();
    let g = golden("smollm2_tokens.json");
    for case in g["strings"].as_array().unwrap() {
        let s = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(s, false).unwrap(), want, "{s:?}");
    }
    let ids = tok.encode(&text, true).unwrap();
    check_summary(&ids, &g["brown_cj01_cj12"], "cj01-cj12");
}

#[test]
fn f32_perplexity_matches_llama_perplexity_within_half_a_percent() {
    let Some(model) = require(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let Some(text) = brown_text() else { return };
    let g = golden("smollm2_ppl.json");
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("smollm2-f32.gguf");
    frugal_models::convert::dequantize_gguf(&model, &f32_path).unwrap();
    let text_path = dir.path().join("cj.txt");
    std::fs::write(&text_path, text).unwrap();
    let r = common::eval_as_golden(
        f32_path,
        None,
        text_path,
        &g,
        frugal_models::llama::LoadOptions::GGML,
    );
    assert_eq!(r.result.n_scored, r.result.n_chunks * 255);
    assert_eq!(r.result.n_chunks, 4);
    common::assert_ppl_near(r.result.ppl, g["ppl"].as_f64().unwrap(), "SmolLM2 F32");
    let se_rel =
        (r.result.ppl_se - g["ppl_se"].as_f64().unwrap()).abs() / g["ppl_se"].as_f64().unwrap();
    assert!(
        se_rel < 0.02,
        "standard error {:.5} vs {}",
        r.result.ppl_se,
        g["ppl_se"]
    );
}
