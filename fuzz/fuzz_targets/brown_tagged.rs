//! Fuzzes the Brown corpus detagger and the digits CSV parser on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = frugal_formats::brown::parse_tagged(text);
        let _ = frugal_formats::digits::parse_digits_csv(text);
    }
});
