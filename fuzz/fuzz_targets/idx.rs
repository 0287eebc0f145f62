//! Fuzzes the IDX decoder: no panics; an accepted array holds exactly its announced elements.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = frugal_formats::idx::parse_idx(data) {
        assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
    }
});
