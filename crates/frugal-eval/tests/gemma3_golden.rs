//! Frugal against llama.cpp on the real Gemma 3 270M (Q4_K_M), through golden files made by
//! `bench/make-golden-gemma3.sh` (llama-tokenize and llama-perplexity from llama-cpp-python
//! 0.3.36): the SentencePiece token ids must be identical, and the F32 perplexity must agree
//! within 0.5 % at a context of 1,024 (past the 512-position sliding window).

mod common;

use common::{brown_text, check_summary, golden, require};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::tokenizer::GgufTokenizer;

#[test]
fn token_ids_match_llama_tokenize_on_the_whole_brown_corpus() {
    let Some(model) = require(assets::gemma3_gguf(), "Gemma 3") else {
        return;
    };
    let (Some(all), Some(cj)) = (brown_text("ca01-cr09"), brown_text("cj01-cj12")) else {
        return;
    };
    let tok = GgufTokenizer::from_gguf(&GgufFile::open(model).unwrap()).unwrap();
    assert!(tok.add_bos);
    let g = golden("gemma3_tokens.json");
    for case in g["strings"].as_array().unwrap() {
        let s = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(s, false).unwrap(), want, "{s:?}");
    }
    check_summary(
        &tok.encode(&all, true).unwrap(),
        &g["brown_all_bos"],
        "ca01-cr09",
    );
    check_summary(
        &tok.encode(&cj, true).unwrap(),
        &g["brown_cj01_cj12_bos"],
        "cj01-cj12",
    );
}

#[test]
fn f32_perplexity_matches_llama_perplexity_within_half_a_percent() {
    let Some(model) = require(assets::gemma3_gguf(), "Gemma 3") else {
        return;
    };
    let Some(text) = brown_text("cj01-cj12") else {
        return;
    };
    let g = golden("gemma3_ppl.json");
    let dir = tempfile::tempdir().unwrap();
    let text_path = dir.path().join("cj.txt");
    std::fs::write(&text_path, text).unwrap();
    // The shipped Q4_K_M decoded to f32 in memory with exact f32 arithmetic: the values of
    // llama-quantize's F32 file, without writing its 1.1 GB.
    let r = common::eval_as_golden(
        model,
        None,
        text_path,
        &g,
        frugal_models::llama::LoadOptions::EXACT,
    );
    assert_eq!(r.result.n_chunks, 4);
    common::assert_ppl_near(r.result.ppl, g["ppl"].as_f64().unwrap(), "Gemma 3 F32");
}
