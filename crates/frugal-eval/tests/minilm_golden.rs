//! all-MiniLM-L6-v2 against its reference implementation (sentence-transformers 3.3.1 on
//! PyTorch), through `tests/golden/minilm_embeddings.json` made by `bench/make-minilm-golden.sh`:
//! identical token ids, and cosine ≥ 0.9999 for every sentence's embedding. Then the encoder
//! evaluation on Brown corpus sentences.

use frugal_formats::{assets, brown};
use frugal_models::bert::{cosine, Bert};
use std::path::Path;

fn minilm() -> Option<Bert> {
    let dir = assets::require_or_skip(assets::minilm_dir(), "MiniLM")?;
    Some(Bert::load(&dir, &candle_core::Device::Cpu).unwrap())
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(model) = minilm() else { return };
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/minilm_embeddings.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let cases = g["sentences"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // Batched with padding, to check masking as well.
    let emb = model.embed(&texts, 8).unwrap();
    let mut worst = 1.0f64;
    for (c, e) in cases.iter().zip(&emb) {
        let ids: Vec<u32> = serde_json::from_value(c["token_ids"].clone()).unwrap();
        assert_eq!(
            model.tokenize(c["text"].as_str().unwrap()).unwrap(),
            ids,
            "{}",
            c["text"]
        );
        let want: Vec<f32> = serde_json::from_value(c["embedding"].clone()).unwrap();
        let cos = cosine(e, &want);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "cosine {cos} for {}", c["text"]);
    }
    eprintln!("worst cosine to sentence-transformers: {worst:.7}");
    // The hand-written forward (packed sequences, no padding) against the candle path
    // (padded batches through the linear seam) on the same sentences.
    assert!(model.native_weights().unwrap().is_some());
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.tokenize(t).unwrap()).collect();
    let candle = model.embed_ids_candle(&ids, 8).unwrap();
    for (a, b) in emb.iter().zip(&candle) {
        let max_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 2e-5,
            "native vs candle: max difference {max_diff}"
        );
    }
}

#[test]
fn brown_genre_nearest_neighbour_accuracy_is_well_above_chance() {
    let Some(model) = minilm() else { return };
    let Some(dir) = assets::require_or_skip(assets::brown_dir(), "Brown corpus") else {
        return;
    };
    let docs = brown::read_brown_dir(&dir).unwrap();
    let sents = frugal_eval::encoder::brown_sentences(&docs, 20, 8);
    assert_eq!(sents.len(), 300);
    let r = frugal_eval::encoder::eval_encoder(&model, Some(&model), &sents, 32).unwrap();
    assert_eq!(r.n_genres, 15);
    // Chance is 1/15 ≈ 6.7 %; a working encoder groups sentences by genre far better.
    assert!(r.knn_ci95_pct.0 > 15.0, "{r:?}");
    assert!((r.cosine_mean.unwrap() - 1.0).abs() < 1e-9 && r.cosine_min.unwrap() > 0.999999);
    assert_eq!(r.reference_knn_accuracy_pct, Some(r.knn_accuracy_pct));
}
