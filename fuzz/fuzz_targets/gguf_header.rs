//! Fuzzes the GGUF parser: any input must give `Ok` or `Err`, never a panic, and an accepted
//! header's tensors must lie inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = frugal_formats::gguf::parse_header(data) {
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.n_bytes;
            assert!(end <= data.len() as u64, "tensor {} ends past the input", t.name);
        }
    }
});
