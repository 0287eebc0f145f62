//! Frugal against llama.cpp on SmolLM2, through golden files made by `bench/make-golden.sh`
//! (llama-tokenize and llama-perplexity from llama-cpp-python 0.3.36): token ids must be
//! identical, and F32 perplexity must agree within 0.5 % on the same number of tokens.

use frugal_formats::{assets, brown, gguf::GgufFile};
use frugal_models::tokenizer::GgufTokenizer;
use sha2::Digest;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn require(p: PathBuf, what: &str) -> Option<PathBuf> {
    assets::require_or_skip(p, what)
}

fn brown_text() -> Option<String> {
    let dir = require(assets::brown_dir(), "Brown corpus")?;
    let ids = brown::select_ids(&dir, "cj01-cj12").unwrap();
    Some(brown::plain_text(&dir, &ids).unwrap())
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
    let b = &g["brown_cj01_cj12"];
    assert_eq!(ids.len() as u64, b["n_tokens"].as_u64().unwrap());
    let first: Vec<u32> = serde_json::from_value(b["first_64"].clone()).unwrap();
    assert_eq!(&ids[..64], &first[..]);
    let joined = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        format!("{:x}", sha2::Sha256::digest(joined.as_bytes())),
        b["sha256_ids"].as_str().unwrap()
    );
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
    let job = frugal_eval::LmEvalFiles {
        model: f32_path,
        reference: None,
        text: text_path,
        opts_ctx: g["ctx"].as_u64().unwrap() as usize,
        max_chunks: Some(g["chunks"].as_u64().unwrap() as usize),
        load: frugal_models::llama::LoadOptions::GGML,
        split: frugal_eval::RankSplit::Chunks,
    };
    let r = frugal_eval::eval_lm_files(&job, &|_, _| {}).unwrap();
    let want = g["ppl"].as_f64().unwrap();
    assert_eq!(r.result.n_scored, r.result.n_chunks * 255);
    assert_eq!(r.result.n_chunks, 4);
    let rel = (r.result.ppl - want).abs() / want;
    assert!(
        rel < 0.005,
        "Frugal PPL {:.4} vs llama-perplexity {want:.4} ({:.3} %)",
        r.result.ppl,
        rel * 100.0
    );
    let se_rel =
        (r.result.ppl_se - g["ppl_se"].as_f64().unwrap()).abs() / g["ppl_se"].as_f64().unwrap();
    assert!(
        se_rel < 0.02,
        "standard error {:.5} vs {}",
        r.result.ppl_se,
        g["ppl_se"]
    );
}
