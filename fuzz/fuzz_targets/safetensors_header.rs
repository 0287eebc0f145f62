//! Fuzzes the safetensors parser: no panics; accepted tensors cover the data exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = frugal_formats::safetensors::parse_header(data) {
        let covered: u64 = h.tensors.iter().map(|t| t.end - t.begin).sum();
        assert_eq!(h.data_offset + covered, data.len() as u64);
    }
});
