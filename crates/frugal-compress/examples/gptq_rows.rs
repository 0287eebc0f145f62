//! Activation-order GPTQ's pass over the rows (`gptq::act_order_rows_in_tiles`) one row at a
//! time against several rows at a time, at the shapes of SmolLM2, the 1.5B and the 7B models'
//! widest inputs, in one run: the factor U (cols × cols, f32) is read once per tile, so once it
//! outgrows the caches the pass is bound by memory and tiles divide the traffic. U is synthetic
//! (unit diagonal, small upper entries: only the shape matters for the time), the weight
//! seeded. Prints milliseconds (best of ROUNDS), the speed-up, and checks the bytes are equal.
//! Run by `bench/gptq-rows.sh`.

use frugal_compress::quant::codec::codec;
use frugal_compress::quant::gptq::act_order_rows_in_tiles;
use frugal_formats::gguf::GgmlType;
use frugal_formats::rng::SplitMix64;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let rows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let shapes: &[(&str, usize)] = &[
        ("SmolLM2 down (1,536 in)", 1536),
        ("1.5B down (8,960 in)", 8960),
        ("7B down (11,008 in)", 11008),
    ];
    let c = codec(GgmlType::Q4_K).expect("Q4_K");
    println!(
        "{:<26} {:>6} {:>12} {:>12} {:>12} {:>9}",
        "shape", "rows", "tile 1 ms", "tile 8 ms", "tile 16 ms", "1 / 8"
    );
    for &(name, cols) in shapes {
        let mut r = SplitMix64(7);
        let mut u = vec![0f32; cols * cols];
        for k in 0..cols {
            u[k * cols + k] = 1.0;
            for v in &mut u[k * cols + k + 1..(k + 1) * cols] {
                *v = (r.next_f64() as f32 - 0.5) * 1e-3;
            }
        }
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| (r.next_f64() as f32 - 0.5) * 0.1)
            .collect();
        let qw = vec![1f32; cols];
        let perm: Vec<usize> = (0..cols).rev().collect();
        let mut times = Vec::new();
        let mut outs = Vec::new();
        for tile in [1, 8, 16] {
            let mut best = f64::INFINITY;
            let mut out = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                out = act_order_rows_in_tiles(&w, cols, &perm, &u, &qw, c, tile);
                best = best.min(t.elapsed().as_secs_f64());
            }
            times.push(best * 1e3);
            outs.push(out);
        }
        assert!(
            outs.iter().all(|o| *o == outs[0]),
            "{name}: tiles changed the bytes"
        );
        println!(
            "{:<26} {:>6} {:>12.1} {:>12.1} {:>12.1} {:>8.2}x",
            name,
            rows,
            times[0],
            times[1],
            times[2],
            times[0] / times[1]
        );
    }
}
