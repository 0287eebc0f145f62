//! The decoder and tokenizer on the real SmolLM2-135M GGUF. Missing assets skip these tests
//! with a message, unless `FRUGAL_REQUIRE_ASSETS=1` (as in `scripts/test` and CI).

use candle_core::Device;
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{argmax_last, Llama, LoadOptions};
use frugal_models::qmatmul::{self, Kernel};
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

/// The token ids of a short prompt with a clear next token, for the cache tests.
fn capitals(f: &GgufFile) -> Vec<u32> {
    GgufTokenizer::from_gguf(f)
        .unwrap()
        .encode(
            "The capital of France is Paris. The capital of Germany is",
            true,
        )
        .unwrap()
}

#[test]
fn cached_decoding_matches_the_full_forward_at_every_position() {
    let Some(f) = smollm2() else { return };
    let dev = Device::Cpu;
    let ids = capitals(&f);
    for opts in [LoadOptions::EXACT, LoadOptions::KERNELS] {
        let model = Llama::load(&f, opts, &dev).unwrap();
        let full: Vec<Vec<f32>> = model.forward(&ids).unwrap().to_vec2().unwrap();
        let mut cache = model.kv_cache(ids.len()).unwrap();
        // Stored weights: every layer's input is rounded to 8-bit blocks (Q8_1 for the Q4_1
        // blocks, Q8_0 for the Q8_0 output layer), so float noise of the f32 parts can flip
        // an activation's rounding. With kernels whose rows do not depend on the batch, that
        // is a step of 3e-3 to 1.6e-2 in the logits at some positions (2 of 12 on an AMD EPYC
        // with AVX2, 0.0147 and 0.0164; exactly 0 at the others), and as a cache bug is O(1)
        // and at every position after it, most positions must also agree to 2e-3. VNNI's
        // prompt kernels sum in another order than its one-row ones (`batch_is_exact`), so
        // every layer's flips compound: up to 1.0 in a logit and a KL of 7e-3 between the
        // prompt's and the steps' distributions on a Xeon (the size of the 8-bit rounding's
        // own effect: KL to the exact model up to 7e-3). There the steps must give the
        // prompt's top token and a KL under 2e-2 at every position — a cache bug (a wrong
        // position, a stale key) changes the distribution, a KL of order one.
        let exact_batches = opts.dequantize || qmatmul::batch_is_exact(Kernel::detected());
        let mut close = 0;
        for (p, &id) in ids.iter().enumerate() {
            let step: Vec<f32> = model
                .decode_step(id, &mut cache)
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = step
                .iter()
                .zip(&full[p])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if exact_batches {
                let tol = if opts.dequantize { 2e-3 } else { 3e-2 };
                assert!(worst < tol, "{opts:?} position {p}: max |Δlogit| {worst}");
            } else {
                let kl = kl_divergence(&full[p], &step);
                assert!(kl < 2e-2, "{opts:?} position {p}: KL {kl}");
                assert_eq!(top1(&step), top1(&full[p]), "{opts:?} position {p}");
            }
            if worst < 2e-3 {
                close += 1;
            }
        }
        assert!(
            !exact_batches || 2 * close >= ids.len(),
            "{opts:?}: only {close} of {} positions agree to 2e-3",
            ids.len()
        );
        assert_eq!(cache.len(), ids.len());
        // Full: a clear error, not a panic.
        assert!(model.decode_step(ids[0], &mut cache).is_err());
    }
}

#[test]
fn a_prefilled_cache_decodes_as_the_full_forward() {
    let Some(f) = smollm2() else { return };
    let dev = Device::Cpu;
    let ids = capitals(&f);
    let half = ids.len() / 2;
    assert!(half >= 4, "a prompt of several tokens: {}", ids.len());
    for opts in [LoadOptions::EXACT, LoadOptions::KERNELS] {
        let model = Llama::load(&f, opts, &dev).unwrap();
        let full: Vec<Vec<f32>> = model.forward(&ids).unwrap().to_vec2().unwrap();
        let mut cache = model.kv_cache(ids.len()).unwrap();
        // Refused before any work, the cache left empty: no tokens, more than it holds.
        assert!(model.prefill(&[], &mut cache).is_err());
        let long = vec![ids[0]; ids.len() + 1];
        assert!(model.prefill(&long, &mut cache).is_err());
        assert!(cache.is_empty());
        let mut got = vec![model.prefill(&ids[..half], &mut cache).unwrap()];
        assert_eq!(cache.len(), half);
        // A second prefill into a cache that holds positions: refused.
        assert!(model.prefill(&ids[..1], &mut cache).is_err());
        for &id in &ids[half..] {
            got.push(model.decode_step(id, &mut cache).unwrap());
        }
        // As in `cached_decoding_matches_the_full_forward_at_every_position`: exact weights
        // agree to float noise; stored weights to the 8-bit rounding of each layer's input,
        // whose flips a cache bug (a wrong position, a stale or missing key) would dwarf.
        for (p, logits) in (half - 1..).zip(&got) {
            let step: Vec<f32> = logits.to_vec1().unwrap();
            if opts.dequantize {
                let worst = step
                    .iter()
                    .zip(&full[p])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 2e-3, "position {p}: max |Δlogit| {worst}");
            } else {
                let kl = kl_divergence(&full[p], &step);
                assert!(kl < 2e-2, "position {p}: KL {kl}");
            }
            assert_eq!(top1(&step), top1(&full[p]), "{opts:?} position {p}");
        }
        assert_eq!(cache.len(), ids.len());
    }
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

/// The training forward pass (differentiable operations written out) gives the logits of the
/// inference one, and gradients reach the weights of the first block through all 30.
#[test]
fn training_forward_matches_inference_and_has_gradients() {
    let Some(f) = smollm2() else { return };
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let mut model = Llama::load(&f, LoadOptions::EXACT, &Device::Cpu).unwrap();
    let ids = tok
        .encode(
            "The committee said the city's election was conducted well.",
            false,
        )
        .unwrap();
    let want: Vec<f32> = model
        .forward(&ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // The first block's gate weight as a variable.
    let var = candle_core::Var::from_tensor(&model.blocks[0].gate.weight_f32().unwrap()).unwrap();
    model.blocks[0].gate = frugal_models::linear::Linear::dense(
        "blk.0.ffn_gate.weight",
        var.as_tensor().clone(),
        None,
    )
    .unwrap();
    let logits = model.forward_train(&ids).unwrap();
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 2e-3, "logits differ by {worst}");
    let g = logits.sum_all().unwrap().backward().unwrap();
    let grad = g
        .get(var.as_tensor())
        .expect("a gradient for blk.0.ffn_gate");
    let norm: f32 = grad.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert!(norm.is_finite() && norm > 0.0, "{norm}");
}

/// The index of the largest logit.
fn top1(logits: &[f32]) -> usize {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap()
}

/// KL(p ‖ q) of the softmax distributions of two logit rows, in f64.
fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| {
        let m = l.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
        let z = l
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln();
        l.iter()
            .map(|&v| f64::from(v) - m - z)
            .collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}
