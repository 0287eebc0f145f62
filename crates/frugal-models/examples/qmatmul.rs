//! Frugal's products of block-quantized weights with 8-bit activations (`frugal_models::qmatmul`)
//! against candle 0.11's quantized matmul (`QMatMul`) and against what evaluation runs for a
//! prompt (the weight decoded to F32 and candle's F32 matmul, decoding not timed), on the shapes
//! of the models the benchmarks use, in one run. Prints G multiply-adds per second (best of
//! `ROUNDS`) and the ratios (above 1: Frugal faster). Where the CPU has AVX-512 VNNI, Frugal's
//! AVX2 kernel is timed beside it too (column `avx2`, and `× avx2`: its time over VNNI's). Run
//! by `bench/qmatmul-kernels.sh`. The IQ4 types have no candle kernel (NaN in its columns):
//! their alternative was the decoded weight's F32 product.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use frugal_models::qmatmul::{self, BlockType};

#[path = "common/timing.rs"]
mod timing;
use timing::best;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let only = args.get(2).cloned().unwrap_or_default();
    let types: Vec<BlockType> = match args.get(3).filter(|t| t.as_str() != "all") {
        Some(t) => t
            .split(',')
            .map(|n| {
                *BlockType::ALL
                    .iter()
                    .find(|b| format!("{b:?}") == n)
                    .unwrap_or_else(|| panic!("unknown type {n}"))
            })
            .collect(),
        None => BlockType::ALL.to_vec(),
    };
    let rows: Vec<usize> = args
        .get(4)
        .map(|s| s.split(',').map(|v| v.parse().expect("rows")).collect())
        .unwrap_or(vec![1, 512]);
    let shapes: &[(&str, usize, usize)] = &[
        ("SmolLM2 gate/up", 1536, 576),
        ("SmolLM2 down", 576, 1536),
        ("1.5B q/o", 1536, 1536),
        ("1.5B gate/up", 8960, 1536),
        ("7B q/o", 4096, 4096),
        ("7B gate/up", 11008, 4096),
        ("7B down", 4096, 11008),
    ];
    let kernel = qmatmul::Kernel::detected();
    let wide = kernel > qmatmul::Kernel::Avx2;
    println!(
        "threads {}, {:?}, kernel {kernel:?}; G multiply-adds/s, best of {rounds}",
        rayon::current_num_threads(),
        frugal_models::gemm::Isa::detected()
    );
    println!(
        "{:18} {:5} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}{}",
        "shape [n × k]",
        "type",
        "m",
        "candle q",
        "f32 gemm",
        "frugal",
        "× candle",
        "× f32",
        if wide {
            format!(" {:>9} {:>9}", "avx2", "× avx2")
        } else {
            String::new()
        }
    );
    let dev = Device::Cpu;
    let mut rng = frugal_formats::rng::SplitMix64(7);
    for &(name, n, k) in shapes.iter().filter(|s| s.0.contains(only.as_str())) {
        let w: Vec<f32> = (0..n * k).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        for &ty in &types {
            if k % ty.block_values() != 0 {
                continue;
            }
            let w = wt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bytes = qmatmul::sample_blocks(ty, &w, k);
            let g = frugal_formats::gguf::GgmlType::from_name(&format!("{ty:?}")).unwrap();
            let mapped = frugal_formats::gguf::MappedBytes::from_bytes(&bytes).unwrap();
            let decoded = frugal_models::linear::MappedWeight::new(g, mapped, n, k)
                .unwrap()
                .decode()
                .unwrap();
            let decoded = Tensor::from_vec(decoded, (n, k), &dev).unwrap();
            // candle's kernel, where candle has the type (not the IQ4 types).
            let mm = ty
                .candle()
                .map(|d| QMatMul::from_qtensor(QTensor::quantize(&wt, d).unwrap()).unwrap());
            for &m in &rows {
                let x: Vec<f32> = (0..m * k).map(|_| rng.next_f64() as f32 - 0.5).collect();
                let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
                let mac = (m * n * k) as f64 / 1e9;
                let c = mm.as_ref().map_or(f64::NAN, |mm| {
                    best(rounds, || {
                        std::hint::black_box(mm.forward(&xt).unwrap());
                    })
                });
                let g = best(rounds, || {
                    std::hint::black_box(xt.matmul(&decoded.t().unwrap()).unwrap());
                });
                let o = best(rounds, || {
                    std::hint::black_box(qmatmul::matmul(ty, &bytes, n, k, &x));
                });
                let narrow = if wide {
                    let a = best(rounds, || {
                        let avx2 = qmatmul::Kernel::Avx2;
                        std::hint::black_box(qmatmul::matmul_with(ty, avx2, &bytes, n, k, &x));
                    });
                    format!(" {:>9.2} {:>8.2}x", mac / a, a / o)
                } else {
                    String::new()
                };
                println!(
                    "{:18} {:5} {:>4} {:>9.2} {:>9.2} {:>9.2} {:>8.2}x {:>8.2}x{narrow}",
                    format!("{name} [{n}×{k}]")
                        .chars()
                        .take(18)
                        .collect::<String>(),
                    format!("{ty:?}"),
                    m,
                    mac / c,
                    mac / g,
                    mac / o,
                    c / o,
                    g / o
                );
            }
        }
    }
}
