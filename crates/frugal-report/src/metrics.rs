//! The figures a policy can be checked against, read from any of Frugal's JSON reports: the
//! output of `frugal eval|quantize|prune|distill --json`, a recipe's `report.json`, or
//! `frugal measure --json`. Each figure remembers the JSON path it came from.

use serde_json::Value;

/// A figure and where in the report it was found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Figure {
    pub value: f64,
    pub path: String,
}

/// Everything [`crate::policy`] can check.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
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

/// A report that cannot be checked: not an object, or a figure of the wrong type, negative
/// where that is impossible, or not finite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

impl ReportError {
    /// Always the report's fault.
    pub fn is_bad_input(&self) -> bool {
        true
    }
}

/// Whether a figure may be negative.
#[derive(Clone, Copy, PartialEq)]
enum Sign {
    Any,
    NonNegative,
}

/// Words for a JSON value's type.
fn type_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The number at `path` below `v`: `Ok(None)` when a key on the way is absent; an error when
/// something on the way is not an object, or the figure is not a finite number of the right
/// sign. `null_ok` accepts a final `null` as absent.
fn num(
    v: &Value,
    prefix: &str,
    path: &[&str],
    sign: Sign,
    null_ok: bool,
) -> Result<Option<f64>, ReportError> {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        let here = || format!("{prefix}{}", path[..=i].join("."));
        // On the way to a figure, anything but an object (an optional block left out as
        // `null`, the embedded run's list of break-evens) holds no such figure: absent, and a
        // clause that needs it fails. Only the figure itself must be a number.
        let Value::Object(o) = cur else {
            return Ok(None);
        };
        match o.get(*k) {
            None => return Ok(None),
            Some(next) => {
                cur = next;
                if i + 1 == path.len() {
                    return match cur {
                        Value::Null if null_ok => Ok(None),
                        Value::Number(n) => {
                            let x = n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                                ReportError(format!("`{}` is not a finite number", here()))
                            })?;
                            if sign == Sign::NonNegative && x < 0.0 {
                                return Err(ReportError(format!(
                                    "`{}` is {x}, which cannot be negative",
                                    here()
                                )));
                            }
                            Ok(Some(x))
                        }
                        other => Err(ReportError(format!(
                            "`{}` is {}, expected a number",
                            here(),
                            type_of(other)
                        ))),
                    };
                }
            }
        }
    }
    Ok(None)
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
    /// Reads every figure the report has. A report that is not a non-empty object, or holds a
    /// figure of the wrong type, of an impossible sign or not finite, is refused: the gate
    /// must never pass a figure it could not read.
    pub fn from_report(root: &Value) -> Result<Metrics, ReportError> {
        match root {
            Value::Object(o) if !o.is_empty() => {}
            other => {
                return Err(ReportError(format!(
                    "the report is {}, expected an object of Frugal's figures",
                    match other {
                        Value::Object(_) => "an empty object".to_string(),
                        v => type_of(v),
                    }
                )))
            }
        }
        let mut m = Metrics::default();
        let sc = scopes(root);
        // Every scope is validated, not only the first that has the figure: a bad figure
        // anywhere makes the report bad.
        let find =
            |path: &[&str], sign: Sign, null_ok: bool| -> Result<Option<Figure>, ReportError> {
                let mut first = None;
                for (prefix, v) in &sc {
                    if let Some(value) = num(v, prefix, path, sign, null_ok)? {
                        first.get_or_insert(Figure {
                            value,
                            path: format!("{prefix}{}", path.join(".")),
                        });
                    }
                }
                Ok(first)
            };
        use Sign::{Any, NonNegative};
        m.kld = find(&["kld", "mean"], NonNegative, false)?;
        for (prefix, v) in &sc {
            let ppl = num(v, prefix, &["ppl"], NonNegative, false)?;
            let reference = num(v, prefix, &["kld", "reference_ppl"], NonNegative, false)?;
            if let (None, Some(p), Some(r)) = (&m.ppl_increase_pct, ppl, reference) {
                if r > 0.0 {
                    m.ppl_increase_pct = Some(Figure {
                        value: 100.0 * (p - r) / r,
                        path: format!("{prefix}ppl vs {prefix}kld.reference_ppl"),
                    });
                }
            }
        }
        m.accuracy_drop_pt = find(&["accuracy_drop_pt"], Any, false)?;
        for (prefix, v) in &sc {
            for inner in [&[][..], &["quantize"][..]] {
                let path = |k: &'static str| [inner, &[k]].concat();
                let i = num(v, prefix, &path("input_bytes"), NonNegative, false)?;
                let o = num(v, prefix, &path("output_bytes"), NonNegative, false)?;
                if let (None, Some(i), Some(o)) = (&m.size_reduction, i, o) {
                    if o > 0.0 {
                        let at = inner.iter().map(|k| format!("{k}.")).collect::<String>();
                        m.size_reduction = Some(Figure {
                            value: i / o,
                            path: format!("{prefix}{at}input_bytes / output_bytes"),
                        });
                    }
                }
            }
        }
        m.wh_per_1k_queries = find(&["per_1k_queries", "wh"], NonNegative, false)?;
        m.gco2e_per_1k_queries = find(&["per_1k_queries", "gco2e"], NonNegative, true)?;
        m.sci_per_1k_queries = find(&["per_1k_queries", "sci_gco2e"], NonNegative, true)?;
        m.break_even_queries = match find(&["break_even", "queries"], NonNegative, true)? {
            Some(f) => Some(f),
            // `queries: null` says the compression saves nothing per query: it never pays back.
            None => sc.iter().find_map(|(prefix, v)| {
                v.get("break_even")?
                    .get("queries")?
                    .is_null()
                    .then(|| Figure {
                        value: f64::INFINITY,
                        path: format!(
                        "{prefix}break_even.queries (null: no saving per query, never pays back)"
                    ),
                    })
            }),
        };
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
        Ok(m)
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
        let m = Metrics::from_report(&r).unwrap();
        assert_eq!(m.kld.as_ref().unwrap().value, 0.02);
        assert_eq!(m.kld.unwrap().path, "quality.kld.mean");
        assert!((m.ppl_increase_pct.unwrap().value - 10.0).abs() < 1e-12);
        assert_eq!(m.size_reduction.unwrap().value, 4.0);
        assert!(m.wh_per_1k_queries.is_none() && m.energy_measured.is_none());
        let recipe = serde_json::json!({"steps": [
            {"result": {"quality": {"ppl": 30.0, "kld": {"mean": 0.5, "reference_ppl": 20.0}}}},
            {"result": {"quality": {"ppl": 21.0, "kld": {"mean": 0.1, "reference_ppl": 20.0}}}},
        ]});
        let m = Metrics::from_report(&recipe).unwrap();
        assert_eq!(m.kld.unwrap().path, "steps[1].result.quality.kld.mean");
        let measured = serde_json::json!({
            "energy": {"sources": [{"provenance": {"kind": "estimated"}}]},
            "per_1k_queries": {"wh": 2.5},
            "eu_ai_act": {"training_time_hours": 3.0, "energy_mwh": null},
        });
        let m = Metrics::from_report(&measured).unwrap();
        assert!(!m.energy_measured.unwrap().0);
        assert_eq!(m.wh_per_1k_queries.unwrap().value, 2.5);
        assert_eq!(
            m.eu_ai_act_missing.unwrap(),
            vec!["training_compute_flops", "energy_mwh", "energy_method"]
        );
    }

    /// Issue #22: a KLD of "5" or -5 passed `max_kld = 0.1`; `{}` passed as "not in the report".
    #[test]
    fn figures_of_the_wrong_type_or_sign_make_the_report_bad() {
        for (r, needle) in [
            (
                serde_json::json!({"kld": {"mean": "5"}}),
                "the string \"5\"",
            ),
            (
                serde_json::json!({"kld": {"mean": -5.0}}),
                "cannot be negative",
            ),
            (serde_json::json!({"kld": {"mean": null}}), "null"),
            (serde_json::json!({"quality": {"ppl": true}}), "boolean"),
            (
                serde_json::json!({"per_1k_queries": {"wh": -1}}),
                "cannot be negative",
            ),
            (
                serde_json::json!({"steps": [{"result": {"kld": {"mean": [1]}}}]}),
                "steps[0]",
            ),
            (serde_json::json!({}), "empty object"),
            (serde_json::json!([]), "a list"),
            (serde_json::json!(null), "null"),
        ] {
            let e = Metrics::from_report(&r).unwrap_err().to_string();
            assert!(e.contains(needle), "{r}: expected {needle:?} in {e}");
        }
        // A negative accuracy drop is an improvement, a null break-even never pays back, and a
        // block left out as null (or not an object) holds no figure.
        let m = Metrics::from_report(&serde_json::json!({
            "accuracy_drop_pt": -0.5, "break_even": {"queries": null},
            "quality": null, "per_1k_queries": null, "kld": "5"
        }))
        .unwrap();
        assert!(m.kld.is_none() && m.wh_per_1k_queries.is_none());
        assert_eq!(m.accuracy_drop_pt.unwrap().value, -0.5);
        assert!(m.break_even_queries.unwrap().value.is_infinite());
    }
}
