//! AWQ's scales must leave the model's function unchanged before rounding: folding random
//! scales into each of a real SmolLM2 block's four input groups (RMSNorm gains, value rows tied
//! per key/value head, up rows) gives the same block output — with Qwen2-style biases on the
//! projections (scaled with the value and up rows they belong to).

use frugal_compress::quant::awq::fold_scales;
use frugal_compress::quant::awq::tie_gqa;
use frugal_formats::{assets, gguf::GgufFile, rng::SplitMix64};
use frugal_models::llama::{Llama, LoadOptions};

#[test]
fn folded_scales_keep_every_block_output() {
    let Some(p) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let f = GgufFile::open(&p).unwrap();
    let mut model = Llama::load(&f, LoadOptions::EXACT, &candle_core::Device::Cpu).unwrap();
    let c = model.config.clone();
    let tokens: Vec<u32> = (0..48).map(|k| 100 + 37 * k).collect();
    let ctx = model.attn_ctx(tokens.len()).unwrap();
    let x = model.embed(&tokens).unwrap();
    let i = 5;
    let mut r = SplitMix64(5);
    let b = &mut model.blocks[i];
    for lin in [&mut b.q, &mut b.k, &mut b.v, &mut b.up] {
        let w = lin.weight_f32().unwrap();
        let bias: Vec<f32> = (0..lin.n_out())
            .map(|_| (r.next_f64() - 0.5) as f32)
            .collect();
        let bias =
            candle_core::Tensor::from_vec(bias, lin.n_out(), &candle_core::Device::Cpu).unwrap();
        *lin = frugal_models::linear::Linear::dense(lin.name.clone(), w, Some(bias)).unwrap();
    }
    let before: Vec<f32> = model
        .block_forward(i, &x, &ctx, false)
        .unwrap()
        .0
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let norm_before: Vec<f32> = model.blocks[i].attn_norm.to_vec1().unwrap();
    let mut r = SplitMix64(11);
    let mut scales = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (0.25 + 3.75 * r.next_f64()) as f32)
            .collect()
    };
    let dims = [c.n_embd, c.n_embd, c.n_embd, c.n_ff];
    for (g, &n) in dims.iter().enumerate() {
        let s = if g == 1 {
            let per_row = scales(c.n_head_kv * c.head_dim());
            tie_gqa(c.n_head, c.n_head_kv, c.head_dim())
                .iter()
                .map(|&t| per_row[t])
                .collect()
        } else {
            scales(n)
        };
        fold_scales(&mut model, i, g, &s).unwrap();
    }
    let after: Vec<f32> = model
        .block_forward(i, &x, &ctx, false)
        .unwrap()
        .0
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = before.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "largest change {worst} (values up to {scale})"
    );
    // The weights did change.
    let norm_after: Vec<f32> = model.blocks[i].attn_norm.to_vec1().unwrap();
    assert!(norm_before
        .iter()
        .zip(&norm_after)
        .any(|(a, b)| (a - b).abs() > 1e-3 * a.abs()));
}
