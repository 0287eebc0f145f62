//! Timing shared by the kernel benchmarks (`examples/gemm.rs`, `examples/qmatmul.rs`).

use std::time::Instant;

/// The shortest of `rounds` timed runs of `f`, in seconds, after one untimed run.
pub fn best(rounds: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
