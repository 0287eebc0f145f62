//! Fuzzes the policy parser: no panics on any text; an accepted policy checks at least one
//! figure (in some kind's table or at the top), and every number it holds is finite (limits
//! non-negative).
#![no_main]
use frugal_report::policy::{Limit, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text, "fuzz.toml") {
        assert!(p.clauses.iter().any(|c| c.is_limit()));
        let kinds = frugal_report::metrics::ModelKind::ALL;
        assert!(kinds.iter().any(|k| !p.clauses_for(Some(*k)).is_empty()) || !p.clauses_for(None).is_empty());
        for c in &p.clauses {
            match &c.limit {
                Limit::Number(x) => assert!(x.is_finite(), "{}: {x}", c.key),
                Limit::Grades(g) => assert!(g.iter().all(|x| x.is_finite() && *x >= 0.0)),
                Limit::Require(_) | Limit::Text(_) => {}
            }
        }
    }
});
