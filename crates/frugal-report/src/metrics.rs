//! The figures a policy is checked against, one [`Subject`] (a model) at a time. The pipeline
//! reads them out of its typed reports (`frugal_pipeline::judge`); each figure remembers where
//! in the report it came from, and a figure the report lacks may say why it is absent (an
//! energy saving whose interval includes zero has no break-even).

use std::collections::BTreeMap;

frugal_formats::name_table! {
    "snake_case";
    /// The kinds of model a policy can scope clauses to (`[language_model]`, `[classifier]`,
    /// `[encoder]` tables): one name table for policies, reports and the schema.
    pub enum ModelKind {
        LanguageModel,
        Classifier,
        Encoder,
    }
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [
        ModelKind::LanguageModel,
        ModelKind::Classifier,
        ModelKind::Encoder,
    ];

    /// The name of the policy table that scopes clauses to this kind.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LanguageModel => "language_model",
            ModelKind::Classifier => "classifier",
            ModelKind::Encoder => "encoder",
        }
    }

    pub fn from_name(s: &str) -> Option<ModelKind> {
        <ModelKind as clap::ValueEnum>::from_str(s, false).ok()
    }
}

/// A figure and where in the report it was found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Figure {
    pub value: f64,
    pub path: String,
}

/// Everything [`crate::policy`] can check, for one model: each figure under the key of the
/// clause that checks it (`max_kld`, `min_size_reduction`, …; a row of
/// [`crate::policy::CLAUSES`]), so a new limit clause is its row there and the place a report
/// holds its figure (`frugal_pipeline::judge`), nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub(crate) figures: BTreeMap<&'static str, Figure>,
    /// Whether every energy figure came from a hardware counter (`None`: no energy figures),
    /// and where the sources are (`require_measured_energy`).
    pub energy_measured: Option<(bool, String)>,
    /// EU AI Act Annex XI documentation fields missing from the report's `eu_ai_act` block
    /// (`None`: no such block; `require_eu_ai_act_fields`).
    pub eu_ai_act_missing: Option<Vec<String>>,
    /// Why a figure is absent, where the report says, by clause key (e.g. `max_break_even_queries`:
    /// "no significant saving: …").
    pub absent: BTreeMap<&'static str, String>,
}

impl Metrics {
    /// Records the figure clause `clause` checks, found at `path` in the report.
    pub fn set(&mut self, clause: &'static str, value: f64, path: impl Into<String>) {
        debug_assert!(
            crate::policy::CLAUSES.iter().any(|c| c.key == clause),
            "no clause {clause}"
        );
        self.figures.insert(
            clause,
            Figure {
                value,
                path: path.into(),
            },
        );
    }

    /// [`Metrics::set`], chained.
    pub fn with(mut self, clause: &'static str, value: f64) -> Metrics {
        self.set(clause, value, "test");
        self
    }

    /// The figure clause `clause` checks, when the report has it.
    pub fn get(&self, clause: &str) -> Option<&Figure> {
        self.figures.get(clause)
    }

    /// The same figures without `clause`'s.
    pub fn without(mut self, clause: &str) -> Metrics {
        self.figures.remove(clause);
        self
    }
}

/// One model of a report, with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// The model's name in the report (a file, or the embedded run's model name).
    pub model: String,
    /// `None` when the report does not say (`frugal measure -- COMMAND`).
    pub kind: Option<ModelKind>,
    pub metrics: Metrics,
}

/// The fields an `eu_ai_act` block must fill (Annex XI, section 1, point 2(d)–(e)).
pub const EU_AI_ACT_FIELDS: &[&str] = &[
    "training_compute_flops",
    "training_time_hours",
    "energy_mwh",
    "energy_method",
];
