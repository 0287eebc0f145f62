//! The importance matrix is measured block by block (at most one decoder block decoded at a
//! time): it must equal, bit for bit, the same statistic taken the straightforward way — the
//! whole model loaded in f32 and each chunk run through every block — on SmolLM2. Beside it,
//! the error of rounding each input as llama.cpp's kernels round it is measured per column.

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
    // Block 0's ffn_down input (1536 wide), every token of every chunk.
    let mut down0: Vec<f32> = Vec::new();
    for chunk in &calib.chunks {
        let ctx = model.attn_ctx(chunk.len()).unwrap();
        let mut x = model.embed(chunk).unwrap();
        let mut v = Vec::new();
        for i in 0..n_layer {
            let (out, tr) = model.block_forward(i, &x, &ctx, true).unwrap();
            let tr = tr.unwrap();
            for input in tr.iter() {
                v.push(sq(input));
            }
            if i == 0 {
                let x: Vec<f32> = tr
                    .iter()
                    .last()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                down0.extend(x);
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
    // The rounding errors: ffn_down's input as Q8_0, Q8_K and f16 round it, per column.
    use frugal_models::linear::ActRounding;
    let n_in = 1536;
    let r = &streamed.rounding["blk.0.ffn_down.weight"];
    for (fmt, got) in [
        (ActRounding::Q8_0, &r.q8_0),
        (ActRounding::Q8K, &r.q8k),
        (ActRounding::F16, &r.f16),
    ] {
        let mut e = vec![0f64; n_in];
        for row in down0.chunks_exact(n_in) {
            let mut q = row.to_vec();
            fmt.round_row(&mut q);
            for ((e, a), b) in e.iter_mut().zip(row).zip(&q) {
                *e += f64::from(a - b).powi(2);
            }
        }
        assert_eq!(got.len(), n_in, "{fmt:?}");
        for (j, (g, e)) in got.iter().zip(&e).enumerate() {
            let want = (e / n) as f32;
            assert!(
                (g - want).abs() <= 1e-5 * want.abs() + 1e-30,
                "{fmt:?} column {j}: {g} vs {want}"
            );
        }
    }
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    // f16 rounds far finer than 8-bit blocks; Q8_K's blocks of 256 coarser than Q8_0's of 32.
    assert!(
        mean(&r.f16) < 1e-3 * mean(&r.q8_0),
        "{} vs {}",
        mean(&r.f16),
        mean(&r.q8_0)
    );
    assert!(mean(&r.q8k) > mean(&r.q8_0));
    // 576-wide inputs: no 256-wide blocks; measured for every weight the matrix covers.
    let q = &streamed.rounding["blk.3.attn_q.weight"];
    assert!(q.q8k.is_empty() && q.q8_0.len() == 576 && q.f16.len() == 576);
    assert_eq!(streamed.rounding.len(), streamed.entries.len());
}
