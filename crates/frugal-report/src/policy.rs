//! Sustainability policies: a TOML file of clauses, each a limit on one figure of a report
//! ([`crate::metrics`]), checked by `frugal check --policy P REPORT` (exit 0 when every clause
//! passes, 1 when one fails, 2 on bad input). The table [`CLAUSES`] is the only list of clauses:
//! parsing, `frugal check --list` and the check all read it.
//!
//! A limit is a number in the clause's unit, or a string with a unit (`"0.5 kWh"`, `"2 kg"`)
//! converted to it; a unit of another dimension is an error naming the line and the key.

use crate::metrics::{Figure, Metrics};
use std::collections::BTreeMap;

/// `policies/default.toml`, built in: the policy `frugal run` checks its models against.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");

/// What a clause compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The figure must be at most the limit.
    Max,
    /// The figure must be at least the limit.
    Min,
    /// `true` requires the condition.
    Require,
    /// A setting used by other clauses (region and PUE for the emissions), or a description.
    Setting,
}

/// A unit and the other spellings it accepts, with their factor to it.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    pub name: &'static str,
    pub accepts: &'static [(&'static str, f64)],
}

const NATS: Unit = Unit {
    name: "nats",
    accepts: &[("nats", 1.0), ("nat", 1.0)],
};
const PERCENT: Unit = Unit {
    name: "%",
    accepts: &[("%", 1.0), ("pct", 1.0)],
};
const POINTS: Unit = Unit {
    name: "points",
    accepts: &[("points", 1.0), ("pt", 1.0)],
};
const TIMES: Unit = Unit {
    name: "x",
    accepts: &[("x", 1.0), ("×", 1.0)],
};
const WH: Unit = Unit {
    name: "Wh",
    accepts: &[
        ("Wh", 1.0),
        ("kWh", 1e3),
        ("MWh", 1e6),
        ("mWh", 1e-3),
        ("J", 1.0 / 3600.0),
        ("kJ", 1.0 / 3.6),
    ],
};
const GRAMS: Unit = Unit {
    name: "g",
    accepts: &[("g", 1.0), ("kg", 1e3), ("mg", 1e-3)],
};
const QUERIES: Unit = Unit {
    name: "queries",
    accepts: &[("queries", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9)],
};
const NONE: Unit = Unit {
    name: "",
    accepts: &[],
};

/// One clause of the table.
#[derive(Debug, Clone, Copy)]
pub struct ClauseSpec {
    pub key: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub doc: &'static str,
}

/// Every clause a policy may hold.
pub const CLAUSES: &[ClauseSpec] = &[
    ClauseSpec {
        key: "name",
        kind: Kind::Setting,
        unit: NONE,
        doc: "the policy's name (text)",
    },
    ClauseSpec {
        key: "description",
        kind: Kind::Setting,
        unit: NONE,
        doc: "what the policy is for (text)",
    },
    ClauseSpec {
        key: "max_kld",
        kind: Kind::Max,
        unit: NATS,
        doc: "mean KL divergence from the reference model, nats per token",
    },
    ClauseSpec {
        key: "max_ppl_increase_pct",
        kind: Kind::Max,
        unit: PERCENT,
        doc: "perplexity increase over the reference's, per cent",
    },
    ClauseSpec {
        key: "max_accuracy_drop_pt",
        kind: Kind::Max,
        unit: POINTS,
        doc: "test-accuracy drop from the input model, points",
    },
    ClauseSpec {
        key: "min_size_reduction",
        kind: Kind::Min,
        unit: TIMES,
        doc: "input size over output size (2 = half the bytes)",
    },
    ClauseSpec {
        key: "max_wh_per_1k_queries",
        kind: Kind::Max,
        unit: WH,
        doc: "energy per 1,000 queries, Wh",
    },
    ClauseSpec {
        key: "max_gco2e_per_1k_queries",
        kind: Kind::Max,
        unit: GRAMS,
        doc: "operational emissions per 1,000 queries, gCO2e",
    },
    ClauseSpec {
        key: "max_sci",
        kind: Kind::Max,
        unit: GRAMS,
        doc: "SCI (ISO/IEC 21031) per 1,000 queries, gCO2e (per_1k_queries.sci_gco2e: `frugal measure MODEL --region …` writes it)",
    },
    ClauseSpec {
        key: "max_break_even_queries",
        kind: Kind::Max,
        unit: QUERIES,
        doc: "queries after which the compression's energy is paid back by the energy it saves per query (`frugal measure MODEL --baseline B --cost C` writes break_even.queries)",
    },
    ClauseSpec {
        key: "require_measured_energy",
        kind: Kind::Require,
        unit: NONE,
        doc: "every energy figure read from a hardware counter, none estimated",
    },
    ClauseSpec {
        key: "require_eu_ai_act_fields",
        kind: Kind::Require,
        unit: NONE,
        doc: "the report's eu_ai_act block fills every Annex XI 2(d)-(e) field",
    },
    ClauseSpec {
        key: "label_wh_per_1k_queries",
        kind: Kind::Setting,
        unit: WH,
        doc: "the efficiency label's grades: four increasing bounds in Wh per 1,000 queries (numbers, or text with a unit), the most for A, B, C and D; E beyond",
    },
    ClauseSpec {
        key: "region",
        kind: Kind::Setting,
        unit: NONE,
        doc: "grid region (ISO 3166-1 alpha-3 code or country name): max_gco2e_per_1k_queries is then checked on the report's Wh per 1,000 queries × PUE × this region's intensity",
    },
    ClauseSpec {
        key: "pue",
        kind: Kind::Setting,
        unit: NONE,
        doc: "data-centre power usage effectiveness (at least 1; 1 when only region is given)",
    },
];

/// A bad policy file: the message names the line and the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {key}: {reason}")]
pub struct PolicyError {
    pub path: String,
    pub line: usize,
    pub key: String,
    pub reason: String,
}

/// A policy file that cannot be read, or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] frugal_formats::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl LoadError {
    /// True when the policy file is at fault (every case but an I/O failure of the machine).
    pub fn is_bad_input(&self) -> bool {
        match self {
            LoadError::Read(e) => e.is_bad_input(),
            LoadError::Policy(_) => true,
        }
    }
}

/// The largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// One parsed clause.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Limit {
    Number(f64),
    /// Grade bounds (the label's).
    Grades([f64; 4]),
    Require(bool),
    Text(String),
}

#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Clause {
    pub key: &'static str,
    pub limit: Limit,
    pub line: usize,
}

/// A parsed policy.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Policy {
    pub path: String,
    pub clauses: Vec<Clause>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A value with a unit (`"0.5 kWh"`), converted to `unit`.
fn with_unit(s: &str, unit: &Unit) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(s.len());
    let (n, u) = (s[..split].trim(), s[split..].trim());
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a number with a unit"))?;
    let accepted = || {
        unit.accepts
            .iter()
            .map(|(a, _)| *a)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if unit.accepts.is_empty() {
        return Err(format!("takes a plain number, not `{s}`"));
    }
    let f = unit
        .accepts
        .iter()
        .find(|(a, _)| *a == u)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            format!(
                "wrong unit `{u}`: this clause is in {} (accepts {})",
                unit.name,
                accepted()
            )
        })?;
    Ok(n * f)
}

impl Policy {
    /// Parses a policy file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let err = |line: usize, key: &str, reason: String| PolicyError {
            path: path.to_string(),
            line,
            key: key.to_string(),
            reason,
        };
        type Table = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
        let table: Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            err(line, "(syntax)", e.message().to_string())
        })?;
        let mut clauses = Vec::new();
        for (k, v) in table {
            let line = line_of(text, k.span().start);
            let key = k.get_ref().as_str();
            let spec = CLAUSES.iter().find(|c| c.key == key).ok_or_else(|| {
                err(
                    line,
                    key,
                    format!(
                        "unknown clause; known: {}",
                        CLAUSES.iter().map(|c| c.key).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            let value = v.get_ref();
            let limit = match (spec.kind, value) {
                (Kind::Require, toml::Value::Boolean(b)) => Limit::Require(*b),
                (Kind::Require, other) => {
                    return Err(err(
                        line,
                        key,
                        format!("expects true or false, not {other}"),
                    ))
                }
                (Kind::Max | Kind::Min, toml::Value::Integer(i)) => Limit::Number(*i as f64),
                (Kind::Max | Kind::Min, toml::Value::Float(x)) => Limit::Number(*x),
                (Kind::Max | Kind::Min, toml::Value::String(s)) => {
                    Limit::Number(with_unit(s, &spec.unit).map_err(|r| err(line, key, r))?)
                }
                (Kind::Max | Kind::Min, other) => {
                    return Err(err(
                        line,
                        key,
                        format!("expects a number in {}, not {other}", spec.unit.name),
                    ))
                }
                (Kind::Setting, v) => match (key, v) {
                    ("pue", toml::Value::Float(x)) if *x >= 1.0 => Limit::Number(*x),
                    ("pue", toml::Value::Integer(i)) if *i >= 1 => Limit::Number(*i as f64),
                    ("pue", other) => {
                        return Err(err(
                            line,
                            key,
                            format!("must be a number of at least 1, not {other}"),
                        ))
                    }
                    ("label_wh_per_1k_queries", toml::Value::Array(a)) => {
                        let b = a
                            .iter()
                            .map(|x| match x {
                                toml::Value::Integer(i) => Ok(*i as f64),
                                toml::Value::Float(f) => Ok(*f),
                                toml::Value::String(t) => with_unit(t, &spec.unit),
                                other => Err(format!("`{other}` is not an energy")),
                            })
                            .collect::<Result<Vec<f64>, String>>()
                            .map_err(|r| err(line, key, r))?;
                        let grades: [f64; 4] = b.as_slice().try_into().map_err(|_| {
                            err(line, key, format!("needs 4 bounds (A–D), not {}", b.len()))
                        })?;
                        if !grades.iter().all(|x| x.is_finite() && *x >= 0.0)
                            || grades.windows(2).any(|w| w[0] >= w[1])
                        {
                            return Err(err(
                                line,
                                key,
                                format!("bounds {grades:?} must be non-negative and increasing"),
                            ));
                        }
                        Limit::Grades(grades)
                    }
                    ("label_wh_per_1k_queries", other) => {
                        return Err(err(
                            line,
                            key,
                            format!("expects a list of 4 bounds, not {other}"),
                        ))
                    }
                    ("region", toml::Value::String(s)) => {
                        frugal_energy::carbon::intensity(s)
                            .map_err(|e| err(line, key, e.to_string()))?;
                        Limit::Text(s.clone())
                    }
                    (_, toml::Value::String(s)) => Limit::Text(s.clone()),
                    (_, other) => return Err(err(line, key, format!("expects text, not {other}"))),
                },
            };
            if let Limit::Number(x) = limit {
                if !x.is_finite() || (spec.kind != Kind::Setting && x < 0.0) {
                    return Err(err(
                        line,
                        key,
                        format!("limit {x} must be a finite, non-negative number"),
                    ));
                }
            }
            clauses.push(Clause {
                key: spec.key,
                limit,
                line,
            });
        }
        clauses.sort_by_key(|c| c.line);
        // A policy that checks nothing would pass every report: a gate must fail closed.
        if !clauses.iter().any(|c| {
            CLAUSES
                .iter()
                .any(|s| s.key == c.key && s.kind != Kind::Setting)
        }) {
            return Err(err(
                1,
                "(policy)",
                format!(
                    "checks nothing: a policy needs at least one limit or requirement (one of: {})",
                    CLAUSES
                        .iter()
                        .filter(|c| c.kind != Kind::Setting)
                        .map(|c| c.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(Policy {
            path: path.to_string(),
            clauses,
        })
    }
}

impl Policy {
    /// Reads and parses the policy file at `path` (at most 1 MiB).
    pub fn load(path: &std::path::Path) -> Result<Policy, LoadError> {
        let name = path.display().to_string();
        let text = frugal_formats::guard::read_text_capped(path, "policy", MAX_POLICY_BYTES)?;
        Ok(Policy::parse(&text, &name)?)
    }

    /// The number limit of clause `key`, when the policy has one.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.clauses
            .iter()
            .find_map(|c| match (c.key == key, &c.limit) {
                (true, Limit::Number(x)) => Some(*x),
                _ => None,
            })
    }

    /// The efficiency label's grade bounds, when the policy sets them.
    pub fn label_thresholds(&self) -> Option<[f64; 4]> {
        self.clauses.iter().find_map(|c| match c.limit {
            Limit::Grades(g) => Some(g),
            _ => None,
        })
    }
}

/// One clause's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    pub key: String,
    pub line: usize,
    pub limit: Limit,
    pub unit: String,
    /// The report's figure (`None`: not in the report).
    pub value: Option<f64>,
    pub from: Option<String>,
    pub pass: bool,
    pub note: String,
}

/// The quality clauses: each applies to one kind of model.
const QUALITY: &[&str] = &["max_kld", "max_ppl_increase_pct", "max_accuracy_drop_pt"];

fn has_quality(m: &Metrics) -> bool {
    m.kld.is_some() || m.ppl_increase_pct.is_some() || m.accuracy_drop_pt.is_some()
}

/// Checks every limit clause of `policy` against `m`. A quality clause whose figure the report
/// lacks passes as not applicable when the report has another quality figure (a classifier
/// report has no KL divergence); any other missing figure fails the clause.
pub fn check(policy: &Policy, m: &Metrics) -> Vec<Outcome> {
    let mut out = Vec::new();
    // With a region, emissions come from the report's energy and the policy's grid and PUE
    // (the same figure whatever region the report was measured for).
    let setting = |k: &str| policy.clauses.iter().find(|c| c.key == k).map(|c| &c.limit);
    let policy_g = match (setting("region"), &m.wh_per_1k_queries) {
        (Some(Limit::Text(region)), Some(wh)) => {
            let pue = match setting("pue") {
                Some(Limit::Number(p)) => *p,
                _ => 1.0,
            };
            frugal_energy::carbon::intensity(region)
                .ok()
                .map(|g| Figure {
                    value: wh.value / 1000.0 * pue * g.g_per_kwh,
                    path: format!(
                        "{} × PUE {pue} × {} {} g/kWh ({})",
                        wh.path, g.country, g.g_per_kwh, g.year
                    ),
                })
        }
        _ => None,
    };
    for c in &policy.clauses {
        let spec = CLAUSES
            .iter()
            .find(|s| s.key == c.key)
            .expect("parsed from the table");
        let figure: Option<&Figure> = match c.key {
            "max_kld" => m.kld.as_ref(),
            "max_ppl_increase_pct" => m.ppl_increase_pct.as_ref(),
            "max_accuracy_drop_pt" => m.accuracy_drop_pt.as_ref(),
            "min_size_reduction" => m.size_reduction.as_ref(),
            "max_wh_per_1k_queries" => m.wh_per_1k_queries.as_ref(),
            "max_gco2e_per_1k_queries" => policy_g.as_ref().or(m.gco2e_per_1k_queries.as_ref()),
            "max_sci" => m.sci_per_1k_queries.as_ref(),
            "max_break_even_queries" => m.break_even_queries.as_ref(),
            _ => None,
        };
        let (value, from, pass, note) = match (spec.kind, &c.limit) {
            (Kind::Setting, _) => continue,
            (Kind::Max | Kind::Min, Limit::Number(limit)) => match figure {
                // The quality clauses are alternatives by model kind: a language-model report
                // has no accuracy drop, a classifier's no KL divergence.
                None if QUALITY.contains(&c.key) && has_quality(m) => (
                    None,
                    None,
                    true,
                    "not applicable: the report's quality is judged by another clause".into(),
                ),
                None => (None, None, false, "not in the report".to_string()),
                Some(f) => {
                    let ok = if spec.kind == Kind::Max {
                        f.value <= *limit
                    } else {
                        f.value >= *limit
                    };
                    (Some(f.value), Some(f.path.clone()), ok, String::new())
                }
            },
            (Kind::Require, Limit::Require(false)) => (None, None, true, "not required".into()),
            (Kind::Require, Limit::Require(true)) => match c.key {
                "require_measured_energy" => match &m.energy_measured {
                    None => (None, None, false, "no energy figures in the report".into()),
                    Some((all, path)) => (
                        Some(f64::from(u8::from(*all))),
                        Some(path.clone()),
                        *all,
                        if *all {
                            "every figure measured".into()
                        } else {
                            "some figures are estimates".into()
                        },
                    ),
                },
                _ => match &m.eu_ai_act_missing {
                    None => (None, None, false, "no eu_ai_act block in the report".into()),
                    Some(missing) => (
                        Some(missing.len() as f64),
                        Some("eu_ai_act".into()),
                        missing.is_empty(),
                        if missing.is_empty() {
                            "complete".into()
                        } else {
                            format!("missing {}", missing.join(", "))
                        },
                    ),
                },
            },
            _ => unreachable!("limits are typed by their clause when parsed"),
        };
        out.push(Outcome {
            key: c.key.to_string(),
            line: c.line,
            limit: c.limit.clone(),
            unit: spec.unit.name.to_string(),
            value,
            from,
            pass,
            note,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_and_every_clause_is_documented() {
        let p = Policy::parse(
            "max_wh_per_1k_queries = \"0.5 kWh\"\nmax_sci = \"2 kg\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(p.clauses[0].limit, Limit::Number(500.0));
        assert_eq!(p.clauses[1].limit, Limit::Number(2000.0));
        assert!(CLAUSES.iter().all(|c| !c.doc.is_empty()));
        let e = Policy::parse("\n\nmax_kld = \"0.1 Wh\"\n", "p.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "max_kld"));
        let p = Policy::parse(
            "label_wh_per_1k_queries = [0.001, \"18 J\", 1, \"0.02 kWh\"]\nmax_kld = 1\n",
            "p.toml",
        )
        .unwrap();
        let g = p.label_thresholds().unwrap();
        for (got, want) in g.iter().zip([0.001, 0.005, 1.0, 20.0]) {
            assert!((got - want).abs() < 1e-12, "{g:?}");
        }
        for bad in [
            "label_wh_per_1k_queries = [1, 2, 3]\n",
            "label_wh_per_1k_queries = [1, 3, 2, 4]\n",
            "label_wh_per_1k_queries = [1, 2, 3, \"4 g\"]\n",
            "label_wh_per_1k_queries = 5\n",
        ] {
            let e = Policy::parse(bad, "p.toml").unwrap_err();
            assert_eq!(
                (e.line, e.key.as_str()),
                (1, "label_wh_per_1k_queries"),
                "{bad}"
            );
        }
        // Issue #22: a policy that checks nothing passed every report.
        for empty in ["", "# nothing\n", "region = \"FRA\"\npue = 1.2\n"] {
            let e = Policy::parse(empty, "p.toml").unwrap_err();
            assert!(e.reason.contains("checks nothing"), "{empty:?}: {e}");
        }
    }

    /// The policy's region and PUE turn the report's energy into the emissions it checks:
    /// 2 Wh per 1,000 queries × 1.5 × France's 56.039 g/kWh = 0.168117 g.
    #[test]
    fn emissions_follow_the_policys_region_and_pue() {
        let m = Metrics::from_report(&serde_json::json!({
            "per_1k_queries": {"wh": 2.0, "gco2e": 99.0}
        }))
        .unwrap();
        let text = "region = \"FRA\"\npue = 1.5\nmax_gco2e_per_1k_queries = 0.2\n";
        let o = check(&Policy::parse(text, "p.toml").unwrap(), &m);
        assert_eq!(o.len(), 1);
        assert!((o[0].value.unwrap() - 0.168117).abs() < 1e-9, "{:?}", o[0]);
        assert!(o[0].pass);
        // Without a region, the report's own figure.
        let p = Policy::parse("max_gco2e_per_1k_queries = 0.2\n", "p.toml").unwrap();
        assert_eq!(check(&p, &m)[0].value, Some(99.0));
    }
}
