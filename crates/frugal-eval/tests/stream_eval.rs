//! Evaluation streamed block by block from the file gives the same figures, bit for bit, as the
//! whole model in memory — on SmolLM2 (Q4_1) against its F32 decoding, with the chunks run
//! through the blocks all together and in groups of two, and with the reference's logits
//! taken from a cache.

use frugal_eval::{eval_lm, LmEvalOptions, LmSource, ReferenceCache};
use frugal_formats::{assets, brown, gguf::GgufFile};
use frugal_models::llama::{Llama, LoadOptions};
use frugal_models::tokenizer::GgufTokenizer;

#[test]
fn streamed_evaluation_equals_the_loaded_model() {
    let Some(model) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let Some(dir) = assets::require_or_skip(assets::brown_dir(), "Brown corpus") else {
        return;
    };
    let text = brown::plain_text(&dir, &brown::select_ids(&dir, "cj01-cj04").unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f32_path = tmp.path().join("smollm2-f32.gguf");
    frugal_models::convert::dequantize_gguf(&model, &f32_path).unwrap();
    let (f, rf) = (
        GgufFile::open(&model).unwrap(),
        GgufFile::open(&f32_path).unwrap(),
    );
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let tokens = tok.encode(&text, true).unwrap();
    let load = LoadOptions::GGML;
    let dev = candle_core::Device::Cpu;
    let (m, r) = (
        Llama::load(&f, load, &dev).unwrap(),
        Llama::load(&rf, load, &dev).unwrap(),
    );
    let opts = |group: Option<usize>| LmEvalOptions {
        ctx: 128,
        max_chunks: Some(3),
        bos: tok.bos.filter(|_| tok.add_bos),
        group_chunks: group,
        split: frugal_eval::RankSplit::Chunks,
    };
    let steps = std::sync::Mutex::new(Vec::new());
    let record = |d: usize, t: usize| steps.lock().unwrap().push((d, t));
    let loaded = eval_lm(
        LmSource::Loaded(&m),
        Some(LmSource::Loaded(&r)),
        None,
        &tokens,
        &opts(None),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(loaded.n_chunks, 3);
    let kld = loaded.kld.as_ref().unwrap();
    assert!(kld.mean > 0.0 && kld.same_top1_pct > 50.0, "{kld:?}");
    for group in [None, Some(2)] {
        steps.lock().unwrap().clear();
        let streamed = eval_lm(
            LmSource::File(&f, load),
            Some(LmSource::File(&rf, load)),
            None,
            &tokens,
            &opts(group),
            &record,
        )
        .unwrap();
        assert_eq!(streamed, loaded, "groups of {group:?} chunks");
        // Progress: each group's passes through both models' 30 blocks, and each chunk.
        let groups = 3usize.div_ceil(group.unwrap_or(3));
        let s = steps.lock().unwrap();
        assert_eq!(s.len(), 3 + groups * 2 * 30);
        assert!(s.iter().all(|&(_, t)| t == s.len()));
    }
    // The reference's logits kept in a cache: a second pass does not run the reference.
    let cache = ReferenceCache::new(None, usize::MAX);
    let first = eval_lm(
        LmSource::File(&f, load),
        Some(LmSource::File(&rf, load)),
        Some(&cache),
        &tokens,
        &opts(Some(2)),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(first, loaded);
    let again = eval_lm(
        LmSource::File(&f, load),
        None,
        Some(&cache),
        &tokens,
        &opts(Some(2)),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(again, loaded);
    assert_eq!(cache.hits(), 3);
    // A bare shell embeds from the file's rows what the whole table gives (and nothing else).
    let bare = Llama::load_bare_shell(&f, &dev).unwrap();
    assert!(bare.embed(&tokens[..4]).is_err());
    let rows = bare.embed_from(&f, &tokens[..64]).unwrap();
    let whole = m.embed(&tokens[..64]).unwrap();
    assert_eq!(
        rows.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        whole.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    assert!(bare.embed_from(&f, &[m.config.n_vocab as u32]).is_err());
}
