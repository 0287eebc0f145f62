//! Fuzzes the report reader of the policy gate: no panics on any JSON; every figure it accepts
//! is finite, and those that cannot be negative are not (a break-even may be infinite: never).
#![no_main]
use frugal_report::metrics::Metrics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(m) = Metrics::from_report(&v) {
        for f in [&m.kld, &m.size_reduction, &m.wh_per_1k_queries, &m.gco2e_per_1k_queries, &m.sci_per_1k_queries]
            .into_iter()
            .flatten()
        {
            assert!(f.value.is_finite() && f.value >= 0.0, "{f:?}");
        }
        for f in [&m.ppl_increase_pct, &m.accuracy_drop_pt].into_iter().flatten() {
            assert!(f.value.is_finite(), "{f:?}");
        }
        if let Some(b) = &m.break_even_queries {
            assert!(b.value >= 0.0, "{b:?}");
        }
    }
});
