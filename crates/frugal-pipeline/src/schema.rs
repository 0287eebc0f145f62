//! The one schema of every JSON report Frugal writes: each command's `--json` output and each
//! `report.json` (recipes and the embedded `frugal run`) is a [`Document`] — `schema_version`,
//! `report` (which command wrote it) and that command's typed report, flattened. The JSON
//! Schema (draft 2020-12) is generated from these types ([`json_schema`]) and published as
//! `docs/report.schema.json`; a test keeps the file equal to what the types generate, and the
//! CLI tests validate every report they read against it.
//!
//! Version 3 (this one): a check's verdicts are per model (`models`, each with its `clauses`),
//! a policy clause names its `scope`, energy estimates carry their number of runs (`n`), and a
//! break-even is a typed comparison (the saving's interval; `queries` only where it is
//! significant). Version 2 added `report` and moved `schema_version` to the top of every
//! report; version 1 had `schema_version` only in `report.json`; reports before it had none.

use crate::jobs::{check, distill, eval, measure, prune, quantize, run, tune};
use frugal_energy::Metered;
use serde::Serialize;

/// The version of the reports' layout: raised whenever a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 3;

/// A report as written: its version, the command that wrote it, and its figures.
#[derive(Debug, Serialize)]
pub struct Document<'a, T: ?Sized> {
    pub schema_version: u32,
    /// `inspect`, `eval`, `quantize`, `prune`, `distill`, `tune`, `measure`, `check` or `run`.
    pub report: &'static str,
    #[serde(flatten)]
    pub body: &'a T,
}

impl<'a, T: ?Sized> Document<'a, T> {
    /// `body` as the report of command `report`.
    pub fn new(report: &'static str, body: &'a T) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            report,
            body,
        }
    }
}

/// Every report, by its `report` tag: the schema's source, and what `frugal check` reads a
/// report back into ([`crate::judge::read`]).
#[derive(Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "report", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
pub enum AnyReport {
    Inspect(frugal_formats::inspect::ModelSummary),
    Convert(frugal_compress::hf::convert::ConvertReport),
    Export(frugal_compress::hf::export::ExportReport),
    Eval(eval::EvalOutcome),
    Quantize(Metered<quantize::QuantizeOutcome>),
    Prune(Metered<prune::PruneOutcome>),
    Distill(Metered<distill::DistillOutcome>),
    Tune(Metered<tune::TuneOutcome>),
    Measure(measure::MeasureOutcome),
    Check(check::CheckReport),
    Run(run::RunOutcome),
}

impl AnyReport {
    /// The command that wrote it (its `report` tag).
    pub fn kind(&self) -> &'static str {
        use crate::jobs::Job;
        match self {
            AnyReport::Inspect(_) => "inspect",
            AnyReport::Convert(_) => "convert",
            AnyReport::Export(_) => "export",
            AnyReport::Eval(_) => eval::Eval::KIND,
            AnyReport::Quantize(_) => quantize::Quantize::KIND,
            AnyReport::Prune(_) => prune::Prune::KIND,
            AnyReport::Distill(_) => distill::Distill::KIND,
            AnyReport::Tune(_) => tune::Tune::KIND,
            AnyReport::Measure(_) => measure::Measure::KIND,
            AnyReport::Check(_) => check::Check::KIND,
            AnyReport::Run(_) => run::Run::KIND,
        }
    }
}

/// A Frugal report (any command's `--json` output, or a `report.json`).
#[derive(Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[schemars(title = "Frugal report")]
pub struct AnyDocument {
    /// The layout's version (see the README's "Reports").
    #[schemars(range(min = 3, max = 3))]
    pub schema_version: u32,
    #[serde(flatten)]
    pub report: AnyReport,
}

/// The JSON Schema of every report, as published in `docs/report.schema.json`: what Frugal
/// writes (the serialization contract: a field left out when empty is not required).
pub fn json_schema() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<AnyDocument>();
    serde_json::to_string_pretty(&schema).expect("the schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    /// `docs/report.schema.json` is what the types generate (`FRUGAL_BLESS=1` rewrites it).
    #[test]
    fn published_schema_is_the_generated_one() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report.schema.json");
        let schema = super::json_schema();
        if std::env::var_os("FRUGAL_BLESS").is_some() {
            std::fs::write(&path, &schema).unwrap();
        }
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            published == schema,
            "{} is out of date: run FRUGAL_BLESS=1 cargo test -p frugal-pipeline schema",
            path.display()
        );
    }
}
