//! The importance matrix is measured block by block (at most one decoder block decoded at a
//! time): it must equal, bit for bit, the same statistic taken the straightforward way — the
//! whole model loaded in f32 and each chunk run through every block — on SmolLM2.

use frugal_compress::quant::calibration::{collect_imatrix, Calibration};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{Llama, LoadOptions};

#[test]
fn streamed_imatrix_equals_a_whole_model_pass() {
    let Some(path) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    // Three chunks of different lengths (64, 64, 40 tokens).
    let calib = Calibration {
        chunks: vec![
            (100..164).collect(),
            (2000..2064).collect(),
            (30_000..30_040).collect(),
        ],
        source: "test ids".into(),
    };
    let streamed = collect_imatrix(&f, &calib, &|_, _| {}).unwrap();
    // The whole model, chunk by chunk.
    let model = Llama::load(&f, LoadOptions::EXACT, &candle_core::Device::Cpu).unwrap();
    let n_layer = model.blocks.len();
    let sq = |x: &candle_core::Tensor| -> Vec<f64> {
        let v: Vec<f32> = x.sqr().unwrap().sum(0).unwrap().to_vec1().unwrap();
        v.into_iter().map(f64::from).collect()
    };
    let mut sums: Vec<Vec<f64>> = Vec::new();
    for chunk in &calib.chunks {
        let ctx = model.attn_ctx(chunk.len()).unwrap();
        let mut x = model.embed(chunk).unwrap();
        let mut v = Vec::new();
        for i in 0..n_layer {
            let (out, tr) = model.block_forward(i, &x, &ctx, true).unwrap();
            for input in tr.unwrap().iter() {
                v.push(sq(input));
            }
            x = out;
        }
        v.push(sq(&model.final_norm(&x).unwrap()));
        sums.push(v.concat());
    }
    // Chunks added in the tree's order for three on one process: a + (b + c).
    let total: Vec<f64> = (0..sums[0].len())
        .map(|j| sums[0][j] + (sums[1][j] + sums[2][j]))
        .collect();
    let n = calib.n_tokens() as f64;
    let mut at = 0;
    for i in 0..n_layer {
        let dims = [
            model.blocks[i].q.n_in(),
            model.blocks[i].o.n_in(),
            model.blocks[i].gate.n_in(),
            model.blocks[i].down.n_in(),
        ];
        let names = [
            format!("blk.{i}.attn_q.weight"),
            format!("blk.{i}.attn_output.weight"),
            format!("blk.{i}.ffn_up.weight"),
            format!("blk.{i}.ffn_down.weight"),
        ];
        for (name, w) in names.iter().zip(dims) {
            let want: Vec<f32> = total[at..at + w].iter().map(|s| (s / n) as f32).collect();
            assert_eq!(streamed.entries[name], want, "{name}");
            at += w;
        }
    }
    assert_eq!(at + model.config.n_embd, total.len());
}
