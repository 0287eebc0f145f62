//! Frugal's products with stored F32/F16/BF16 weights (`frugal_models::gemm`) against candle's
//! F32 matmul (what a layer ran before: the weight decoded to F32, `x · Wᵀ`), on the shapes of
//! the models the benchmarks use, in one run. Prints GFLOP/s (best of `ROUNDS`) and the ratio.
//! Run by `bench/gemm.sh`.

use candle_core::{Device, Tensor};
use frugal_models::gemm::{matmul_t_with, Isa, Rows};
use half::{bf16, f16};

#[path = "common/timing.rs"]
mod timing;
use timing::best;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let shapes: &[(&str, usize, usize)] = &[
        ("SmolLM2 q/o", 576, 576),
        ("SmolLM2 gate/up", 1536, 576),
        ("SmolLM2 down", 576, 1536),
        ("1.5B q/o", 1536, 1536),
        ("1.5B gate/up", 8960, 1536),
        ("1.5B down", 1536, 8960),
        ("7B q/o", 4096, 4096),
        ("7B gate/up", 11008, 4096),
        ("7B down", 4096, 11008),
    ];
    let only = args.get(2).cloned().unwrap_or_default();
    let isa = Isa::detected();
    println!(
        "threads {}, {isa:?}; GFLOP/s, best of {rounds}",
        rayon::current_num_threads()
    );
    println!(
        "{:16} {:>4} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "shape [n × k]", "m", "candle f32", "own f32", "own f16", "own bf16", "f32 ×", "f16 ×"
    );
    let mut rng = frugal_formats::rng::SplitMix64(7);
    for &(name, n, k) in shapes.iter().filter(|s| s.0.contains(only.as_str())) {
        let w: Vec<f32> = (0..n * k).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        for m in [512usize, 1] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let flop = 2.0 * (m * n * k) as f64 / 1e9;
            let c = best(rounds, || {
                let y = xt.matmul(&wt.t().unwrap()).unwrap();
                std::hint::black_box(y);
            });
            let mut y = vec![0f32; m * n];
            let mut own = |r: Rows| {
                best(rounds, || {
                    matmul_t_with(isa, &x, k, r, &mut y);
                    std::hint::black_box(&y);
                })
            };
            let (o32, o16, ob) = (
                own(Rows::F32(&w)),
                own(Rows::F16(&w16)),
                own(Rows::Bf16(&wb)),
            );
            println!(
                "{:16} {:>4} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7.2}x {:>7.2}x",
                format!("{name} [{n}×{k}]")
                    .chars()
                    .take(16)
                    .collect::<String>(),
                m,
                flop / c,
                flop / o32,
                flop / o16,
                flop / ob,
                c / o32,
                c / o16
            );
        }
    }
}
