//! The figures a policy can be checked against, read from any of Frugal's JSON reports: the
//! output of `frugal eval|quantize|prune|distill --json`, a recipe's `report.json`, or
//! `frugal measure --json`. Each figure remembers the JSON path it came from.

use serde_json::Value;

/// A figure and where in the report it was found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figure {
    pub value: f64,
    pub path: String,
}

/// Everything [`crate::policy`] can check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Metrics {
    /// Mean KL divergence against the reference, nats per token.
    pub kld: Option<Figure>,
    /// Perplexity increase over the reference's, per cent.
    pub ppl_increase_pct: Option<Figure>,
    /// Test-accuracy drop from the input model, points.
    pub accuracy_drop_pt: Option<Figure>,
    /// Input bytes over output bytes (2 = half the size).
    pub size_reduction: Option<Figure>,
    pub wh_per_1k_queries: Option<Figure>,
    pub gco2e_per_1k_queries: Option<Figure>,
    /// SCI, gCO₂e per 1,000 queries.
    pub sci_per_1k_queries: Option<Figure>,
    /// Queries until the compression's energy is paid back.
    pub break_even_queries: Option<Figure>,
    /// Whether every energy figure came from a hardware counter (`None`: no energy figures).
    pub energy_measured: Option<(bool, String)>,
    /// EU AI Act Annex XI documentation fields missing from the report's `eu_ai_act` block
    /// (`None`: no such block).
    pub eu_ai_act_missing: Option<Vec<String>>,
}

/// The fields an `eu_ai_act` block must fill (Annex XI, section 1, point 2(d)–(e)).
pub const EU_AI_ACT_FIELDS: &[&str] = &[
    "training_compute_flops",
    "training_time_hours",
    "energy_mwh",
    "energy_method",
];

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The objects a figure may sit in, most specific first: the root, its `quality`, and the
/// steps of a recipe report from the last one back.
fn scopes(root: &Value) -> Vec<(String, &Value)> {
    let mut out = vec![(String::new(), root)];
    if let Some(q) = root.get("quality") {
        out.push(("quality.".into(), q));
    }
    if let Some(steps) = root.get("steps").and_then(Value::as_array) {
        for (i, s) in steps.iter().enumerate().rev() {
            if let Some(r) = s.get("result") {
                out.push((format!("steps[{i}].result."), r));
                if let Some(q) = r.get("quality") {
                    out.push((format!("steps[{i}].result.quality."), q));
                }
            }
        }
    }
    out
}

impl Metrics {
    /// Reads every figure the report has.
    pub fn from_report(root: &Value) -> Metrics {
        let mut m = Metrics::default();
        let sc = scopes(root);
        let find = |path: &[&str]| -> Option<Figure> {
            sc.iter().find_map(|(prefix, v)| {
                num(v, path).map(|value| Figure {
                    value,
                    path: format!("{prefix}{}", path.join(".")),
                })
            })
        };
        m.kld = find(&["kld", "mean"]);
        m.ppl_increase_pct = sc.iter().find_map(|(prefix, v)| {
            let (ppl, reference) = (num(v, &["ppl"])?, num(v, &["kld", "reference_ppl"])?);
            (reference > 0.0).then(|| Figure {
                value: 100.0 * (ppl - reference) / reference,
                path: format!("{prefix}ppl vs {prefix}kld.reference_ppl"),
            })
        });
        m.accuracy_drop_pt = find(&["accuracy_drop_pt"]);
        m.size_reduction = sc.iter().find_map(|(prefix, v)| {
            let v: &Value = v;
            [
                ("", v),
                ("quantize.", v.get("quantize").unwrap_or(&Value::Null)),
            ]
            .into_iter()
            .find_map(|(inner, o)| {
                let (i, out) = (num(o, &["input_bytes"])?, num(o, &["output_bytes"])?);
                (out > 0.0).then(|| Figure {
                    value: i / out,
                    path: format!("{prefix}{inner}input_bytes / output_bytes"),
                })
            })
        });
        m.wh_per_1k_queries = find(&["per_1k_queries", "wh"]);
        m.gco2e_per_1k_queries = find(&["per_1k_queries", "gco2e"]);
        m.sci_per_1k_queries = find(&["per_1k_queries", "sci_gco2e"]);
        m.break_even_queries = find(&["break_even", "queries"]).or_else(|| {
            // `queries: null` says the compression saves nothing per query: it never pays back.
            sc.iter().find_map(|(prefix, v)| {
                v.get("break_even")?.get("queries")?.is_null().then(|| Figure {
                    value: f64::INFINITY,
                    path: format!("{prefix}break_even.queries (null: no saving per query, never pays back)"),
                })
            })
        });
        m.energy_measured = sc.iter().find_map(|(prefix, v)| {
            let sources = v.get("energy")?.get("sources")?.as_array()?;
            let all = !sources.is_empty()
                && sources
                    .iter()
                    .all(|s| s["provenance"]["kind"].as_str() == Some("measured"));
            Some((all, format!("{prefix}energy.sources")))
        });
        m.eu_ai_act_missing = root.get("eu_ai_act").map(|b| {
            EU_AI_ACT_FIELDS
                .iter()
                .filter(|f| b.get(**f).is_none_or(Value::is_null))
                .map(|f| f.to_string())
                .collect()
        });
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_steps_quality_and_measure_blocks() {
        let r = serde_json::json!({
            "quantize": {"input_bytes": 400.0, "output_bytes": 100.0},
            "quality": {"ppl": 11.0, "kld": {"mean": 0.02, "reference_ppl": 10.0}},
        });
        let m = Metrics::from_report(&r);
        assert_eq!(m.kld.as_ref().unwrap().value, 0.02);
        assert_eq!(m.kld.unwrap().path, "quality.kld.mean");
        assert!((m.ppl_increase_pct.unwrap().value - 10.0).abs() < 1e-12);
        assert_eq!(m.size_reduction.unwrap().value, 4.0);
        assert!(m.wh_per_1k_queries.is_none() && m.energy_measured.is_none());
        let recipe = serde_json::json!({"steps": [
            {"result": {"quality": {"ppl": 30.0, "kld": {"mean": 0.5, "reference_ppl": 20.0}}}},
            {"result": {"quality": {"ppl": 21.0, "kld": {"mean": 0.1, "reference_ppl": 20.0}}}},
        ]});
        let m = Metrics::from_report(&recipe);
        assert_eq!(m.kld.unwrap().path, "steps[1].result.quality.kld.mean");
        let measured = serde_json::json!({
            "energy": {"sources": [{"provenance": {"kind": "estimated"}}]},
            "per_1k_queries": {"wh": 2.5},
            "eu_ai_act": {"training_time_hours": 3.0, "energy_mwh": null},
        });
        let m = Metrics::from_report(&measured);
        assert!(!m.energy_measured.unwrap().0);
        assert_eq!(m.wh_per_1k_queries.unwrap().value, 2.5);
        assert_eq!(
            m.eu_ai_act_missing.unwrap(),
            vec!["training_compute_flops", "energy_mwh", "energy_method"]
        );
    }
}
