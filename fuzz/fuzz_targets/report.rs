//! Fuzzes the report reader of the policy gate (`frugal_pipeline::judge`): no panics on any
//! bytes; a report it accepts yields models whose figures are finite, and judging them against
//! the default policy never panics (a policy with nothing for a kind is an error, not a crash).
#![no_main]
use frugal_report::policy::{check, Policy, CLAUSES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = frugal_pipeline::judge::parse(data) else {
        return;
    };
    let Ok(subjects) = frugal_pipeline::judge::subjects(&report) else {
        return;
    };
    let policy = Policy::default_policy();
    for s in &subjects {
        for c in CLAUSES {
            if let Some(f) = s.metrics.get(c.key) {
                assert!(f.value.is_finite(), "{}: {f:?}", c.key);
            }
        }
        let _ = check(&policy, s);
    }
});
