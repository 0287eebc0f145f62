//! Fuzzes the recipe reader: no panics on any text; an accepted recipe has at least one step,
//! every text source names exactly one of a file or Brown selection, and its I/O plan can be
//! built (the guard then checks it).
#![no_main]
use frugal_pipeline::recipe::{Recipe, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent/fuzz/recipe.toml");
    if let Ok(r) = Recipe::parse(text, path) {
        assert!(!r.steps.is_empty());
        for s in &r.steps {
            if let Step::Distill { text, .. } = s {
                assert!(text.file.is_some() != text.brown.is_some());
            }
        }
        let _ = r.io_plan(path, std::path::Path::new("/nonexistent/fuzz/out"));
    }
});
