//! The figures a policy is checked against, one [`Subject`] (a model) at a time. The pipeline
//! reads them out of its typed reports (`frugal_pipeline::judge`); each figure remembers where
//! in the report it came from, and a figure the report lacks may say why it is absent (an
//! energy saving whose interval includes zero has no break-even).

use std::collections::BTreeMap;

/// The kinds of model a policy can scope clauses to (`[language_model]`, `[classifier]`,
/// `[encoder]` tables).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    LanguageModel,
    Classifier,
    Encoder,
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
        ModelKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A figure and where in the report it was found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Figure {
    pub value: f64,
    pub path: String,
}

impl Figure {
    pub fn new(value: f64, path: impl Into<String>) -> Option<Figure> {
        Some(Figure {
            value,
            path: path.into(),
        })
    }
}

/// Everything [`crate::policy`] can check, for one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Mean KL divergence against the reference, nats per token.
    pub kld: Option<Figure>,
    /// Perplexity increase over the reference's, per cent.
    pub ppl_increase_pct: Option<Figure>,
    /// Accuracy drop from the reference model, points (test accuracy of a classifier, k-NN
    /// genre accuracy of an encoder).
    pub accuracy_drop_pt: Option<Figure>,
    /// Mean cosine similarity of the embeddings to the reference encoder's.
    pub cosine_mean: Option<Figure>,
    /// Reference bytes over output bytes (2 = half the size).
    pub size_reduction: Option<Figure>,
    pub wh_per_1k_queries: Option<Figure>,
    pub gco2e_per_1k_queries: Option<Figure>,
    /// SCI, gCO₂e per 1,000 queries.
    pub sci_per_1k_queries: Option<Figure>,
    /// Queries until the compression's energy is paid back (only where the saving per query
    /// is significant).
    pub break_even_queries: Option<Figure>,
    /// Whether every energy figure came from a hardware counter (`None`: no energy figures),
    /// and where the sources are.
    pub energy_measured: Option<(bool, String)>,
    /// EU AI Act Annex XI documentation fields missing from the report's `eu_ai_act` block
    /// (`None`: no such block).
    pub eu_ai_act_missing: Option<Vec<String>>,
    /// Why a figure is absent, where the report says, by clause key (e.g. `max_break_even_queries`:
    /// "no significant saving: …").
    pub absent: BTreeMap<&'static str, String>,
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
