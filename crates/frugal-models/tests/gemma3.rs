//! The Gemma 3 decoder on the real Gemma 3 270M GGUF (Q4_K_M): its configuration, a
//! prediction, the key/value-cache decode and the differentiable pass against the full forward
//! — with the sliding window narrowed so that short sequences cross it. Missing assets skip
//! these tests with a message, unless `FRUGAL_REQUIRE_ASSETS=1` (as in `scripts/test` and CI).

use candle_core::{Device, Tensor};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{argmax_last, Llama, LlamaConfig, LoadOptions, RopeLayout};
use frugal_models::tokenizer::GgufTokenizer;

fn gemma3() -> Option<GgufFile> {
    assets::require_or_skip(assets::gemma3_gguf(), "Gemma 3").map(|p| GgufFile::open(p).unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn config_and_architecture_are_read_from_metadata() {
    let Some(f) = gemma3() else { return };
    let c = LlamaConfig::from_gguf(&f).unwrap();
    assert_eq!(
        (
            c.n_layer,
            c.n_embd,
            c.n_ff,
            c.n_head,
            c.n_head_kv,
            c.n_vocab
        ),
        (18, 640, 2048, 4, 1, 262_144)
    );
    assert_eq!(c.head_dim(), 256);
    assert_eq!((c.rope_base, c.rope_base_swa), (1e6, 1e4));
    assert!((c.attn_scale - 1.0 / 16.0).abs() < 1e-12);
    assert_eq!(c.swa_window, 512);
    // Every sixth layer is global.
    let global: Vec<usize> = (0..18).filter(|&i| !c.swa_layers[i]).collect();
    assert_eq!(global, vec![5, 11, 17]);
    let m = Llama::load(&f, LoadOptions::KERNELS, &Device::Cpu).unwrap();
    assert_eq!(m.arch.rope, RopeLayout::Halves);
    assert!(m
        .blocks
        .iter()
        .all(|b| b.qk_norm.is_some() && b.post_norms.is_some()));
}

#[test]
fn gemma3_completes_a_pattern() {
    let Some(f) = gemma3() else { return };
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let ids = tok
        .encode(
            "The capital of France is Paris. The capital of Germany is",
            true,
        )
        .unwrap();
    assert_eq!(ids[0], 2, "BOS first");
    let m = Llama::load(&f, LoadOptions::EXACT, &Device::Cpu).unwrap();
    let top = argmax_last(&m.forward(&ids).unwrap()).unwrap();
    let next = tok.decode(&top[top.len() - 1..]).unwrap();
    assert_eq!(next.trim(), "Berlin", "predicted {next:?}");
}

#[test]
fn cached_decoding_and_training_pass_match_the_full_forward_across_the_window() {
    let Some(f) = gemma3() else { return };
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let ids = tok
        .encode(
            "It was a bright cold day in April, and the clocks were striking thirteen. \
             Winston Smith slipped quickly through the glass doors.",
            true,
        )
        .unwrap();
    assert!(ids.len() > 20);
    let mut m = Llama::load(&f, LoadOptions::EXACT, &Device::Cpu).unwrap();
    let full512: Tensor = m.forward(&ids).unwrap();
    // A window of 8 positions: the windowed layers now mask most keys, so a wrong window (or
    // the global mask used for them) moves the logits.
    m.config.swa_window = 8;
    let full = m.forward(&ids).unwrap();
    assert!(
        max_abs_diff(&full, &full512) > 0.1,
        "the window changes the logits"
    );
    let mut cache = m.kv_cache(ids.len()).unwrap();
    for (p, &id) in ids.iter().enumerate() {
        let step = m.decode_step(id, &mut cache).unwrap();
        let row = full.get(p).unwrap();
        let d = max_abs_diff(&step, &row);
        assert!(d < 2e-3, "position {p}: max |Δlogit| {d}");
    }
    let train = m.forward_train(&ids).unwrap();
    let d = max_abs_diff(&train, &full);
    assert!(d < 2e-3, "training pass: max |Δlogit| {d}");
}
