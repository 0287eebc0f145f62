//! One-row products with the weight streamed from memory, as a decoded token meets it: each
//! product reads a different copy of the weight, the copies spanning `WORKING_MIB` (above the
//! last-level cache), through the kernels a model loaded with stored weights runs
//! ([`frugal_models::linear::matvec_seconds`]: Frugal's, or candle's under
//! `FRUGAL_CANDLE_QMATMUL=1`; `FRUGAL_PREFETCH=0` turns the one-row kernels' prefetching off).
//! Prints one line per shape and type: `shape<TAB>type<TAB>seconds<TAB>bytes` (the median of
//! 5 rounds). Run by `bench/qmatmul-cold.sh`, which compares the settings in one run.
//!
//!   qmatvec_cold [SHAPE-FILTER] [TYPES] [WORKING_MIB]   (default all 7B shapes, Q4_0, 2048)

use frugal_formats::gguf::GgmlType;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = args.get(1).cloned().unwrap_or_default();
    let types = args.get(2).cloned().unwrap_or("Q4_0".into());
    let working: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let shapes: &[(&str, usize, usize)] = &[
        ("1.5B q/o", 1536, 1536),
        ("1.5B gate/up", 8960, 1536),
        ("7B q/o", 4096, 4096),
        ("7B gate/up", 11008, 4096),
        ("7B down", 4096, 11008),
    ];
    for &(name, n, k) in shapes.iter().filter(|s| s.0.contains(only.as_str())) {
        for t in types.split(',') {
            let ty = GgmlType::from_name(t).unwrap_or_else(|| panic!("unknown type {t}"));
            let bytes = ty.bytes_for((n * k) as u64).expect("whole blocks");
            // About 64 MiB of products per round, at least 8 calls.
            let calls = ((64usize << 20) / bytes as usize).max(8);
            match frugal_models::linear::matvec_seconds(ty, n, k, calls, working << 20) {
                Ok(Some(s)) => println!("{name} [{n}×{k}]\t{t}\t{s:.6e}\t{bytes}"),
                Ok(None) => println!("{name} [{n}×{k}]\t{t}\tnan\t{bytes}"),
                Err(e) => panic!("{name} {t}: {e}"),
            }
        }
    }
}
