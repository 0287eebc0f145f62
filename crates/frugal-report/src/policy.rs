//! Sustainability policies: a TOML file of clauses, each a limit on one figure of a report
//! ([`crate::metrics`]), checked by `frugal check --policy P REPORT` (exit 0 when every clause
//! passes, 1 when one fails, 2 on bad input). The table [`CLAUSES`] is the only list of clauses:
//! parsing, `frugal check --list` and the check all read it.
//!
//! Top-level clauses apply to every model; a table named after a kind of model
//! (`[language_model]`, `[classifier]`, `[encoder]`) holds clauses for that kind only, and
//! replaces a top-level clause of the same key for it. The gate fails closed: a clause whose
//! figure the report lacks fails, naming the figure; a policy with no clause for the report's
//! kind of model is refused (exit 2).
//!
//! A limit is a number in the clause's unit, or a string with a unit (`"0.5 kWh"`, `"2 kg"`)
//! converted to it; a unit of another dimension is an error naming the line and the key.

use crate::metrics::{Figure, ModelKind, Subject};
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
/// A plain number with no unit (a cosine similarity).
const NONE_NUMBER: Unit = Unit {
    name: "",
    accepts: &[("", 1.0)],
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
        key: "max_kld_p999",
        kind: Kind::Max,
        unit: NATS,
        doc: "99.9th-percentile per-token KL divergence from the reference model, nats (the tail: the few tokens a compressed model hurts most)",
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
        key: "min_cosine_similarity",
        kind: Kind::Min,
        unit: NONE_NUMBER,
        doc: "mean cosine similarity of an encoder's embeddings to the reference encoder's (`frugal eval ENCODER --reference R`, or a quantized encoder's quality)",
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

/// Every clause a policy may hold, one per line, and the kind tables (`frugal check --list`).
pub fn clause_list() -> String {
    let mut t = String::new();
    for c in CLAUSES {
        t += &format!("{:26} {:>7}  {}\n", c.key, c.unit.name, c.doc);
    }
    t += &format!(
        "\nTables [{}] hold clauses for that kind of model only (replacing a top-level clause of the same key); top-level clauses apply to every model.\n",
        ModelKind::ALL.map(|k| k.name()).join("], [")
    );
    t
}

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

/// A policy none of whose limits applies to a model's kind: a bad policy for that report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{policy} has no clause for {model} ({what}): its clauses cover {covers}")]
pub struct NotCovered {
    pub policy: String,
    pub model: String,
    pub what: String,
    pub covers: String,
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
    /// The kind of model the clause is for (its table), `None` for a top-level clause.
    pub scope: Option<ModelKind>,
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

/// A TOML table with the place of every key and value.
type Spans = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;

/// The kind tables, read a second time with the place of their keys.
#[derive(serde::Deserialize)]
struct Scopes {
    language_model: Option<Spans>,
    classifier: Option<Spans>,
    encoder: Option<Spans>,
}

/// The limit of clause `spec` from its TOML value.
fn limit_of(spec: &ClauseSpec, value: &toml::Value) -> Result<Limit, String> {
    let key = spec.key;
    let limit = match (spec.kind, value) {
        (Kind::Require, toml::Value::Boolean(b)) => Limit::Require(*b),
        (Kind::Require, other) => return Err(format!("expects true or false, not {other}")),
        (Kind::Max | Kind::Min, toml::Value::Integer(i)) => Limit::Number(*i as f64),
        (Kind::Max | Kind::Min, toml::Value::Float(x)) => Limit::Number(*x),
        (Kind::Max | Kind::Min, toml::Value::String(s)) => Limit::Number(with_unit(s, &spec.unit)?),
        (Kind::Max | Kind::Min, other) => {
            return Err(format!(
                "expects a number{}, not {other}",
                if spec.unit.name.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", spec.unit.name)
                }
            ))
        }
        (Kind::Setting, v) => match (key, v) {
            ("pue", toml::Value::Float(x)) if *x >= 1.0 => Limit::Number(*x),
            ("pue", toml::Value::Integer(i)) if *i >= 1 => Limit::Number(*i as f64),
            ("pue", other) => return Err(format!("must be a number of at least 1, not {other}")),
            ("label_wh_per_1k_queries", toml::Value::Array(a)) => {
                let b = a
                    .iter()
                    .map(|x| match x {
                        toml::Value::Integer(i) => Ok(*i as f64),
                        toml::Value::Float(f) => Ok(*f),
                        toml::Value::String(t) => with_unit(t, &spec.unit),
                        other => Err(format!("`{other}` is not an energy")),
                    })
                    .collect::<Result<Vec<f64>, String>>()?;
                let grades: [f64; 4] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("needs 4 bounds (A–D), not {}", b.len()))?;
                if !grades.iter().all(|x| x.is_finite() && *x >= 0.0)
                    || grades.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(format!(
                        "bounds {grades:?} must be non-negative and increasing"
                    ));
                }
                Limit::Grades(grades)
            }
            ("label_wh_per_1k_queries", other) => {
                return Err(format!("expects a list of 4 bounds, not {other}"))
            }
            ("region", toml::Value::String(s)) => {
                frugal_energy::carbon::intensity(s).map_err(|e| e.to_string())?;
                Limit::Text(s.clone())
            }
            (_, toml::Value::String(s)) => Limit::Text(s.clone()),
            (_, other) => return Err(format!("expects text, not {other}")),
        },
    };
    if let Limit::Number(x) = limit {
        if !x.is_finite() || (spec.kind != Kind::Setting && x < 0.0) {
            return Err(format!("limit {x} must be a finite, non-negative number"));
        }
    }
    Ok(limit)
}

fn known_keys() -> String {
    CLAUSES
        .iter()
        .map(|c| c.key)
        .chain(ModelKind::ALL.iter().map(|k| k.name()))
        .collect::<Vec<_>>()
        .join(", ")
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
        let syntax = |e: toml::de::Error| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            err(line, "(syntax)", e.message().to_string())
        };
        let table: Spans = toml::from_str(text).map_err(syntax)?;
        let mut clauses = Vec::new();
        let mut parse_table = |table: &Spans, scope: Option<ModelKind>| {
            for (k, v) in table {
                let line = line_of(text, k.span().start);
                let key = k.get_ref().as_str();
                if let (None, Some(kind)) = (scope, ModelKind::from_name(key)) {
                    if !v.get_ref().is_table() {
                        return Err(err(
                            line,
                            key,
                            format!("is a table of clauses for {} models: write `[{key}]` and its clauses below it", kind.name()),
                        ));
                    }
                    continue; // read with its places from `scopes`
                }
                let spec = CLAUSES.iter().find(|c| c.key == key).ok_or_else(|| {
                    err(
                        line,
                        key,
                        format!("unknown clause; known: {}", known_keys()),
                    )
                })?;
                if let (Some(kind), Kind::Setting) = (scope, spec.kind) {
                    return Err(err(
                        line,
                        key,
                        format!(
                            "is a setting of the whole policy: write it above the first table, not in [{}]",
                            kind.name()
                        ),
                    ));
                }
                let limit = limit_of(spec, v.get_ref()).map_err(|r| err(line, key, r))?;
                clauses.push(Clause {
                    key: spec.key,
                    limit,
                    line,
                    scope,
                });
            }
            Ok(())
        };
        parse_table(&table, None)?;
        let scopes: Scopes = toml::from_str(text).map_err(syntax)?;
        for (kind, t) in [
            (ModelKind::LanguageModel, &scopes.language_model),
            (ModelKind::Classifier, &scopes.classifier),
            (ModelKind::Encoder, &scopes.encoder),
        ] {
            if let Some(t) = t {
                parse_table(t, Some(kind))?;
            }
        }
        clauses.sort_by_key(|c| c.line);
        // A policy that checks nothing would pass every report: a gate must fail closed.
        if !clauses.iter().any(Clause::is_limit) {
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

    /// Reads and parses the policy file at `path` (at most 1 MiB).
    pub fn load(path: &std::path::Path) -> Result<Policy, LoadError> {
        let name = path.display().to_string();
        let text = frugal_formats::guard::read_text_capped(path, "policy", MAX_POLICY_BYTES)?;
        Ok(Policy::parse(&text, &name)?)
    }

    /// The built-in default policy (`policies/default.toml`).
    pub fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY, "policies/default.toml (built in)")
            .expect("the built-in policy parses")
    }

    /// The clauses that apply to a model of `kind`: the top-level ones and the kind's table,
    /// whose clauses replace top-level ones of the same key.
    pub fn clauses_for(&self, kind: Option<ModelKind>) -> Vec<&Clause> {
        let scoped: Vec<&Clause> = self
            .clauses
            .iter()
            .filter(|c| c.scope.is_some() && c.scope == kind)
            .collect();
        self.clauses
            .iter()
            .filter(|c| {
                c.scope.is_none() && !scoped.iter().any(|s| s.key == c.key)
                    || c.scope.is_some() && c.scope == kind
            })
            .collect()
    }

    /// The kinds of model the policy's limits cover, in words.
    pub fn covers(&self) -> String {
        if self
            .clauses
            .iter()
            .any(|c| c.scope.is_none() && c.is_limit())
        {
            return "every kind of model".into();
        }
        let kinds: Vec<&str> = ModelKind::ALL
            .iter()
            .filter(|k| {
                self.clauses
                    .iter()
                    .any(|c| c.scope == Some(**k) && c.is_limit())
            })
            .map(|k| k.name())
            .collect();
        format!("only {}", kinds.join(", "))
    }

    /// The number limit of clause `key` for a model of `kind`, when the policy has one.
    pub fn number_for(&self, kind: Option<ModelKind>, key: &str) -> Option<f64> {
        self.clauses_for(kind)
            .into_iter()
            .find_map(|c| match (c.key == key, &c.limit) {
                (true, Limit::Number(x)) => Some(*x),
                _ => None,
            })
    }

    /// A top-level setting's limit.
    fn setting(&self, key: &str) -> Option<&Limit> {
        self.clauses
            .iter()
            .find(|c| c.key == key && c.scope.is_none())
            .map(|c| &c.limit)
    }

    /// The efficiency label's grade bounds, when the policy sets them.
    pub fn label_thresholds(&self) -> Option<[f64; 4]> {
        self.clauses.iter().find_map(|c| match c.limit {
            Limit::Grades(g) => Some(g),
            _ => None,
        })
    }
}

impl Clause {
    /// A limit or a requirement (not a setting).
    pub fn is_limit(&self) -> bool {
        spec(self.key).kind != Kind::Setting
    }
}

fn spec(key: &str) -> &'static ClauseSpec {
    CLAUSES
        .iter()
        .find(|s| s.key == key)
        .expect("clauses are parsed from the table")
}

/// One clause's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    pub key: String,
    /// The table the clause came from (`None`: top level).
    pub scope: Option<ModelKind>,
    pub line: usize,
    pub limit: Limit,
    pub unit: String,
    /// The report's figure (`None`: missing, and the clause fails).
    pub value: Option<f64>,
    pub from: Option<String>,
    pub pass: bool,
    pub note: String,
}

/// One model's verdict: every clause that applies to its kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    pub model: String,
    /// `None` when the report does not say what kind of model it measured.
    pub kind: Option<ModelKind>,
    pub pass: bool,
    pub clauses: Vec<Outcome>,
}

impl Verdict {
    /// The keys of the clauses that fail.
    pub fn failed(&self) -> Vec<&str> {
        self.clauses
            .iter()
            .filter(|o| !o.pass)
            .map(|o| o.key.as_str())
            .collect()
    }

    /// The verdict in one line: `pass`, or `FAIL (clauses)`.
    pub fn summary(&self) -> String {
        if self.pass {
            "pass".into()
        } else {
            format!("FAIL ({})", self.failed().join(", "))
        }
    }
}

/// Checks every clause of `policy` that applies to the subject's kind. A missing figure fails
/// its clause (the note names it, and why it is absent where the report says); a policy with
/// no limit for the subject's kind is refused.
pub fn check(policy: &Policy, subject: &Subject) -> Result<Verdict, NotCovered> {
    let m = &subject.metrics;
    let clauses: Vec<&Clause> = policy
        .clauses_for(subject.kind)
        .into_iter()
        .filter(|c| c.is_limit())
        .collect();
    if clauses.is_empty() {
        return Err(NotCovered {
            policy: policy.path.clone(),
            model: subject.model.clone(),
            what: subject.kind.map_or(
                "the report does not say what kind of model it measured".into(),
                |k| format!("a {} model", k.name()),
            ),
            covers: policy.covers(),
        });
    }
    // With a region, emissions come from the report's energy and the policy's grid and PUE
    // (the same figure whatever region the report was measured for).
    let policy_g = match (policy.setting("region"), m.get("max_wh_per_1k_queries")) {
        (Some(Limit::Text(region)), Some(wh)) => {
            let pue = match policy.setting("pue") {
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
    let mut out = Vec::new();
    for c in clauses {
        let spec = spec(c.key);
        let figure: Option<&Figure> = match c.key {
            "max_gco2e_per_1k_queries" => policy_g.as_ref().or(m.get(c.key)),
            key => m.get(key),
        };
        let missing = || {
            let why = m
                .absent
                .get(c.key)
                .map_or(String::new(), |w| format!(": {w}"));
            format!("missing figure: {}{why}", spec.doc)
        };
        let (value, from, pass, note) = match (spec.kind, &c.limit) {
            (Kind::Max | Kind::Min, Limit::Number(limit)) => match figure {
                None => (None, None, false, missing()),
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
                    None => (None, None, false, missing()),
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
                    None => (None, None, false, missing()),
                    Some(absent) => (
                        Some(absent.len() as f64),
                        Some("eu_ai_act".into()),
                        absent.is_empty(),
                        if absent.is_empty() {
                            "complete".into()
                        } else {
                            format!("missing {}", absent.join(", "))
                        },
                    ),
                },
            },
            _ => unreachable!("limits are typed by their clause when parsed"),
        };
        out.push(Outcome {
            key: c.key.to_string(),
            scope: c.scope,
            line: c.line,
            limit: c.limit.clone(),
            unit: spec.unit.name.to_string(),
            value,
            from,
            pass,
            note,
        });
    }
    Ok(Verdict {
        model: subject.model.clone(),
        kind: subject.kind,
        pass: out.iter().all(|o| o.pass),
        clauses: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn subject(kind: Option<ModelKind>, metrics: Metrics) -> Subject {
        Subject {
            model: "m".into(),
            kind,
            metrics,
        }
    }

    fn lm() -> Metrics {
        Metrics::default()
            .with("max_kld", 0.05)
            .with("max_ppl_increase_pct", 4.0)
            .with("min_size_reduction", 3.0)
    }

    fn classifier() -> Metrics {
        Metrics {
            energy_measured: Some((false, "measure".into())),
            ..Metrics::default()
                .with("max_accuracy_drop_pt", 0.4)
                .with("min_size_reduction", 3.9)
                .with("max_wh_per_1k_queries", 0.002)
        }
    }

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
        for empty in [
            "",
            "# nothing\n",
            "region = \"FRA\"\npue = 1.2\n",
            "[classifier]\n",
        ] {
            let e = Policy::parse(empty, "p.toml").unwrap_err();
            assert!(e.reason.contains("checks nothing"), "{empty:?}: {e}");
        }
    }

    /// Scoped tables: parsed with their lines; settings stay at the top; a kind's clause
    /// replaces the top-level one of the same key; unknown tables are refused.
    #[test]
    fn kind_tables_scope_their_clauses() {
        let text = "min_size_reduction = 2\nmax_kld = 0.5\n\n[language_model]\nmax_kld = 0.1\n\n[classifier]\nmax_accuracy_drop_pt = \"1 pt\"\n";
        let p = Policy::parse(text, "p.toml").unwrap();
        let keys = |k| {
            p.clauses_for(k)
                .iter()
                .map(|c| (c.key, c.line))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(Some(ModelKind::LanguageModel)),
            [("min_size_reduction", 1), ("max_kld", 5)]
        );
        assert_eq!(
            keys(Some(ModelKind::Classifier)),
            [
                ("min_size_reduction", 1),
                ("max_kld", 2),
                ("max_accuracy_drop_pt", 8)
            ]
        );
        assert_eq!(keys(None), [("min_size_reduction", 1), ("max_kld", 2)]);
        for k in ModelKind::ALL {
            assert_eq!(
                ModelKind::from_name(k.name()),
                Some(k),
                "the table name of {k:?}"
            );
        }
        assert_eq!(
            p.number_for(Some(ModelKind::LanguageModel), "max_kld"),
            Some(0.1)
        );
        assert_eq!(p.number_for(Some(ModelKind::Encoder), "max_kld"), Some(0.5));
        for (bad, line, key, needle) in [
            (
                "max_kld = 1\n[language_model]\nregion = \"FRA\"\n",
                3,
                "region",
                "setting of the whole policy",
            ),
            (
                "max_kld = 1\n[llm]\nmax_kld = 1\n",
                2,
                "llm",
                "unknown clause",
            ),
            (
                "max_kld = 1\nclassifier = 3\n",
                2,
                "classifier",
                "is a table",
            ),
            (
                "[encoder]\nmax_kld = \"0.1 %\"\n",
                2,
                "max_kld",
                "wrong unit",
            ),
            (
                "[encoder]\nmin_cosine_similarity = \"x\"\n",
                2,
                "min_cosine_similarity",
                "not a number",
            ),
            (
                "[classifier]\n[classifier.deep]\nmax_kld = 1\n",
                2,
                "deep",
                "unknown clause",
            ),
        ] {
            let e = Policy::parse(bad, "p.toml").unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{bad}: {e}");
            assert!(e.reason.contains(needle), "{bad}: {e}");
        }
    }

    /// The gate, case by case: a policy and a model's figures, the verdict expected (pass,
    /// or the clauses that fail), or the refusal of a policy with nothing for the kind.
    #[test]
    fn the_gate_fails_closed_case_by_case() {
        use ModelKind::{Classifier, Encoder, LanguageModel};
        let scoped = "min_size_reduction = 2\n[language_model]\nmax_kld = 0.1\nmax_ppl_increase_pct = 10\n[classifier]\nmax_accuracy_drop_pt = 1\n[encoder]\nmin_cosine_similarity = 0.99\n";
        let encoder = Metrics::default()
            .with("min_cosine_similarity", 0.995)
            .with("min_size_reduction", 3.5);
        let no_saving = Metrics {
            absent: [(
                "max_break_even_queries",
                "no significant saving: 1 ± 2 J".to_string(),
            )]
            .into(),
            ..classifier()
        };
        // (policy, kind, figures, the clauses that fail or the refusal's words)
        type Case<'a> = (
            &'a str,
            Option<ModelKind>,
            Metrics,
            Result<Vec<&'a str>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            // 1–4: the scoped policy serves every kind.
            (scoped, Some(LanguageModel), lm(), Ok(vec![])),
            (scoped, Some(Classifier), classifier(), Ok(vec![])),
            (scoped, Some(Encoder), encoder.clone(), Ok(vec![])),
            (
                scoped,
                Some(Encoder),
                encoder.clone().with("min_cosine_similarity", 0.97),
                Ok(vec!["min_cosine_similarity"]),
            ),
            // The tail clause: met, exceeded, and failing closed when the report lacks it.
            (
                "max_kld_p999 = 0.5\n",
                Some(LanguageModel),
                lm().with("max_kld_p999", 0.4),
                Ok(vec![]),
            ),
            (
                "max_kld_p999 = 0.5\n",
                Some(LanguageModel),
                lm().with("max_kld_p999", 0.6),
                Ok(vec!["max_kld_p999"]),
            ),
            (
                "max_kld_p999 = 0.5\n",
                Some(LanguageModel),
                lm(),
                Ok(vec!["max_kld_p999"]),
            ),
            // 5–8: a missing figure fails, top level or scoped.
            (
                scoped,
                Some(LanguageModel),
                lm().without("max_kld"),
                Ok(vec!["max_kld"]),
            ),
            (
                scoped,
                Some(Classifier),
                classifier().without("min_size_reduction"),
                Ok(vec!["min_size_reduction"]),
            ),
            (
                "max_accuracy_drop_pt = 1\n",
                Some(LanguageModel),
                lm(),
                Ok(vec!["max_accuracy_drop_pt"]),
            ),
            (
                "max_kld = 0.1\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_kld"]),
            ),
            // 9–12: limits on either side.
            ("max_kld = 0.05\n", Some(LanguageModel), lm(), Ok(vec![])),
            (
                "max_kld = 0.049\n",
                Some(LanguageModel),
                lm(),
                Ok(vec!["max_kld"]),
            ),
            (
                "min_size_reduction = 3\n",
                Some(LanguageModel),
                lm(),
                Ok(vec![]),
            ),
            (
                "min_size_reduction = 3.01\n",
                Some(LanguageModel),
                lm(),
                Ok(vec!["min_size_reduction"]),
            ),
            // 13–16: a policy for other kinds is refused; top-level clauses serve unknown kinds.
            (
                "[classifier]\nmax_accuracy_drop_pt = 1\n",
                Some(LanguageModel),
                lm(),
                Err("only classifier"),
            ),
            (
                "[language_model]\nmax_kld = 1\n[encoder]\nmin_cosine_similarity = 0.9\n",
                Some(Classifier),
                classifier(),
                Err("only language_model, encoder"),
            ),
            (
                "[classifier]\nmax_accuracy_drop_pt = 1\n",
                None,
                classifier(),
                Err("does not say what kind"),
            ),
            (
                "max_wh_per_1k_queries = \"3 mWh\"\n",
                None,
                classifier(),
                Ok(vec![]),
            ),
            // 17–20: units.
            (
                "max_wh_per_1k_queries = \"1 mWh\"\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_wh_per_1k_queries"]),
            ),
            (
                "max_wh_per_1k_queries = \"7.2 J\"\n",
                Some(Classifier),
                classifier(),
                Ok(vec![]),
            ),
            (
                "max_wh_per_1k_queries = \"7.1 J\"\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_wh_per_1k_queries"]),
            ),
            (
                "[classifier]\nmax_accuracy_drop_pt = \"0.3 pt\"\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_accuracy_drop_pt"]),
            ),
            // 21–24: requirements.
            (
                "require_measured_energy = true\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["require_measured_energy"]),
            ),
            (
                "require_measured_energy = false\n",
                Some(Classifier),
                classifier(),
                Ok(vec![]),
            ),
            (
                "require_measured_energy = true\n",
                Some(LanguageModel),
                lm(),
                Ok(vec!["require_measured_energy"]),
            ),
            (
                "require_eu_ai_act_fields = true\n",
                None,
                Metrics {
                    eu_ai_act_missing: Some(vec![]),
                    ..Metrics::default()
                },
                Ok(vec![]),
            ),
            // 25–28: the EU block, emissions, SCI and a break-even that is not there.
            (
                "require_eu_ai_act_fields = true\n",
                None,
                Metrics {
                    eu_ai_act_missing: Some(vec!["training_compute_flops".into()]),
                    ..Metrics::default()
                },
                Ok(vec!["require_eu_ai_act_fields"]),
            ),
            (
                "max_gco2e_per_1k_queries = \"1 mg\"\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_gco2e_per_1k_queries"]),
            ),
            (
                "max_sci = 1\n",
                Some(Classifier),
                classifier(),
                Ok(vec!["max_sci"]),
            ),
            (
                "max_break_even_queries = \"1 G\"\n",
                Some(Classifier),
                no_saving.clone(),
                Ok(vec!["max_break_even_queries"]),
            ),
            // 29–31: a break-even under and over its limit; a scoped clause replaces the top.
            (
                "max_break_even_queries = \"1 M\"\n",
                Some(Classifier),
                classifier().with("max_break_even_queries", 2e5),
                Ok(vec![]),
            ),
            (
                "max_break_even_queries = \"1 k\"\n",
                Some(Classifier),
                classifier().with("max_break_even_queries", 2e5),
                Ok(vec!["max_break_even_queries"]),
            ),
            (
                "max_accuracy_drop_pt = 0.1\n[classifier]\nmax_accuracy_drop_pt = 1\n",
                Some(Classifier),
                classifier(),
                Ok(vec![]),
            ),
            // 32: an improvement (negative drop) passes.
            (
                "max_accuracy_drop_pt = 0\n",
                Some(Classifier),
                classifier().with("max_accuracy_drop_pt", -0.5),
                Ok(vec![]),
            ),
        ];
        for (i, (text, kind, metrics, want)) in cases.into_iter().enumerate() {
            let p = Policy::parse(text, "p.toml").unwrap_or_else(|e| panic!("case {}: {e}", i + 1));
            let got = check(&p, &subject(kind, metrics));
            match (got, want) {
                (Ok(v), Ok(failed)) => {
                    assert_eq!(v.failed(), failed, "case {}: {v:?}", i + 1);
                    assert_eq!(v.pass, failed.is_empty());
                    for o in v
                        .clauses
                        .iter()
                        .filter(|o| o.value.is_none() && o.note != "not required")
                    {
                        assert!(
                            !o.pass && o.note.starts_with("missing figure: "),
                            "case {}: {o:?}",
                            i + 1
                        );
                    }
                }
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "case {}: {e}", i + 1)
                }
                (got, want) => panic!("case {}: got {got:?}, want {want:?}", i + 1),
            }
        }
        // The missing figure's note names it, and says why it is absent when the report does.
        let p = Policy::parse("max_break_even_queries = 1000\n", "p.toml").unwrap();
        let v = check(&p, &subject(Some(Classifier), no_saving)).unwrap();
        assert!(
            v.clauses[0].note.contains("queries after which")
                && v.clauses[0]
                    .note
                    .ends_with("no significant saving: 1 ± 2 J"),
            "{:?}",
            v.clauses[0]
        );
    }

    /// The policy's region and PUE turn the report's energy into the emissions it checks:
    /// 2 Wh per 1,000 queries × 1.5 × France's 56.039 g/kWh = 0.168117 g.
    #[test]
    fn emissions_follow_the_policys_region_and_pue() {
        let m = Metrics::default()
            .with("max_wh_per_1k_queries", 2.0)
            .with("max_gco2e_per_1k_queries", 99.0);
        let text = "region = \"FRA\"\npue = 1.5\nmax_gco2e_per_1k_queries = 0.2\n";
        let v = check(
            &Policy::parse(text, "p.toml").unwrap(),
            &subject(None, m.clone()),
        )
        .unwrap();
        let o = &v.clauses;
        assert_eq!(o.len(), 1);
        assert!((o[0].value.unwrap() - 0.168117).abs() < 1e-9, "{:?}", o[0]);
        assert!(o[0].pass);
        // Without a region, the report's own figure.
        let p = Policy::parse("max_gco2e_per_1k_queries = 0.2\n", "p.toml").unwrap();
        assert_eq!(
            check(&p, &subject(None, m)).unwrap().clauses[0].value,
            Some(99.0)
        );
    }

    /// The shipped policies parse, and the default one serves every kind of model.
    #[test]
    fn shipped_policies_parse_and_the_default_serves_every_kind() {
        let p = Policy::default_policy();
        for k in ModelKind::ALL {
            assert!(p.clauses_for(Some(k)).iter().any(|c| c.is_limit()), "{k:?}");
        }
        for f in ["default", "strict", "eu-ai-act"] {
            let path = format!("{}/../../policies/{f}.toml", env!("CARGO_MANIFEST_DIR"));
            Policy::load(std::path::Path::new(&path)).unwrap();
        }
    }
}
