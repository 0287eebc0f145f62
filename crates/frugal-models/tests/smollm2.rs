//! The decoder and tokenizer on the real SmolLM2-135M GGUF. Missing assets skip these tests
//! with a message, unless `FRUGAL_REQUIRE_ASSETS=1` (as in `scripts/test` and CI).

use candle_core::Device;
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{argmax_last, Llama, LoadOptions};
use frugal_models::tokenizer::GgufTokenizer;

fn smollm2() -> Option<GgufFile> {
    assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2").map(|p| GgufFile::open(p).unwrap())
}

#[test]
fn config_is_read_from_metadata() {
    let Some(f) = smollm2() else { return };
    let c = frugal_models::llama::LlamaConfig::from_gguf(&f).unwrap();
    assert_eq!(
        (
            c.n_layer,
            c.n_embd,
            c.n_ff,
            c.n_head,
            c.n_head_kv,
            c.n_vocab
        ),
        (30, 576, 1536, 9, 3, 49152)
    );
    assert_eq!(c.head_dim(), 64);
    assert_eq!(c.rope_base, 100_000.0);
    assert!((c.rms_eps - 1e-5).abs() < 1e-10);
}

#[test]
fn tokenizer_round_trips_text() {
    let Some(f) = smollm2() else { return };
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    assert_eq!(tok.pre, "smollm");
    assert!(!tok.add_bos);
    for text in [
        "Hello world!",
        "  two  spaces\n\nand 12345 digits",
        "naïve café — ünïcödé ✓ 😀",
        "fn main() { println!(\"{}\", 1+2); }",
    ] {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // Digits are split one by one (the `smollm` pre-tokenizer).
    let ids = tok.encode("2026", false).unwrap();
    assert_eq!(ids.len(), 4);
}

#[test]
fn decoder_predicts_text_and_both_weight_paths_agree() {
    let Some(f) = smollm2() else { return };
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let dev = Device::Cpu;
    let exact = Llama::load(&f, LoadOptions::EXACT, &dev).unwrap();
    let kernels = Llama::load(&f, LoadOptions::KERNELS, &dev).unwrap();
    let text =
        "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is";
    let ids = tok.encode(text, true).unwrap();
    let a = exact.forward(&ids).unwrap();
    let b = kernels.forward(&ids).unwrap();
    assert_eq!(a.dims(), &[ids.len(), 49152]);
    let (ta, tb) = (argmax_last(&a).unwrap(), argmax_last(&b).unwrap());
    let same = ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
    assert!(
        same * 10 >= ta.len() * 8,
        "top-1 agreement {same}/{}",
        ta.len()
    );
    // A working model continues the pattern.
    let next = tok.decode(&ta[ta.len() - 1..]).unwrap();
    assert_eq!(next.trim(), "Rome", "predicted {next:?}");
}

#[test]
fn linear_seam_records_every_layer() {
    let Some(f) = smollm2() else { return };
    let dev = Device::Cpu;
    let mut m = Llama::load(&f, LoadOptions::EXACT, &dev).unwrap();
    for l in m.linears_mut() {
        l.start_recording(frugal_models::linear::RecordOptions { gram: false });
    }
    m.forward(&[1, 504, 3050, 314, 253]).unwrap();
    let stats: Vec<_> = m
        .linears_mut()
        .into_iter()
        .map(|l| l.take_stats().unwrap())
        .collect();
    assert_eq!(stats.len(), 30 * 7 + 1);
    assert!(stats
        .iter()
        .all(|s| s.n_rows == 5 && s.sum_sq.iter().any(|&v| v > 0.0)));
}
