//! Fuzzes the policy parser: no panics on any text; an accepted policy checks at least one
//! figure, and every number it holds is finite (limits non-negative).
#![no_main]
use frugal_report::policy::{Limit, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text, "fuzz.toml") {
        assert!(!p.clauses.is_empty());
        for c in &p.clauses {
            match &c.limit {
                Limit::Number(x) => assert!(x.is_finite(), "{}: {x}", c.key),
                Limit::Grades(g) => assert!(g.iter().all(|x| x.is_finite() && *x >= 0.0)),
                Limit::Require(_) | Limit::Text(_) => {}
            }
        }
    }
});
