//! Any report Frugal writes, read back through its types, and the models it holds as the
//! subjects a policy judges ([`frugal_report::metrics::Subject`]): `frugal check`, a recipe's
//! check step and the embedded `frugal run` all judge through [`subjects`], so the run's
//! verdicts and a later `frugal check` of its `report.json` are the same by construction.
//!
//! Reading is strict: the file must be a JSON report of this schema version that the types
//! read back *and write out again unchanged* (a field of the wrong type, an unknown or missing
//! field, or a report that only looks like one of another command is refused, naming the
//! field). A figure is never guessed from a path in the JSON.

use crate::jobs::{distill, eval, measure as measure_job, prune, quantize, run, tune};
use crate::measure::{BreakEvenRecord, WorkloadReport};
use crate::recipe::{RecipeReport, StepResult};
use crate::schema::{AnyDocument, AnyReport, SCHEMA_VERSION};
use crate::Error;
use frugal_energy::EnergyReport;
use frugal_eval::encoder::EncoderEvalReport;
use frugal_eval::LmEvalReport;
use frugal_report::metrics::{Metrics, ModelKind, Subject};
use serde_json::Value;
use std::path::Path;

/// The largest report read.
const MAX_REPORT_BYTES: u64 = 256 << 20;

/// Reads the report at `path` through the schema's types.
pub fn read(path: &Path) -> Result<AnyReport, Error> {
    let bytes = frugal_formats::guard::read_capped(path, "report", MAX_REPORT_BYTES)?;
    parse(&bytes).map_err(|m| Error::Usage(format!("{}: {m}", path.display())))
}

/// Parses a report's bytes (see [`read`]); the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<AnyReport, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON report: {e}"))?;
    let Value::Object(o) = &value else {
        return Err("not a Frugal report: expected a JSON object".into());
    };
    match o.get("schema_version") {
        Some(v) if v.as_u64() == Some(SCHEMA_VERSION.into()) => {}
        Some(v) => {
            return Err(format!(
                "written with report schema version {v}; this Frugal reads version {SCHEMA_VERSION} (run the command again to write it)"
            ))
        }
        None => {
            return Err(
                "not a Frugal report of schema version 3: no `schema_version` (a report older than version 2, or another program's)".into(),
            )
        }
    }
    let kind = o
        .get("report")
        .and_then(Value::as_str)
        .ok_or("no `report` naming the command that wrote it")?
        .to_string();
    let doc: AnyDocument = serde_json::from_value(value.clone())
        .map_err(|e| format!("not a `{kind}` report as Frugal writes it: {e}"))?;
    let back = serde_json::to_value(&doc).expect("reports serialize");
    if let Some(at) = first_difference(&value, &back, String::new()) {
        return Err(format!(
            "not a `{kind}` report as Frugal writes it: `{at}` differs from what its type holds (a field unknown, missing or of another form)"
        ));
    }
    Ok(doc.report)
}

/// Where two JSON values first differ (`None`: the same), numbers compared as numbers and a
/// `null` the same as an absent key.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    let here = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64() != y.as_f64()).then_some(at),
        (Value::Object(x), Value::Object(y)) => {
            let null = Value::Null;
            x.keys().chain(y.keys()).find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    here(k),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(at);
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]")))
        }
        _ => (a != b).then_some(at),
    }
}

/// The models a report holds, each with its figures. A check report holds verdicts, not
/// figures, and is refused.
pub fn subjects(report: &AnyReport) -> Result<Vec<Subject>, Error> {
    let one = |model: &str, kind: Option<ModelKind>, metrics: Metrics| {
        Ok(vec![Subject {
            model: model.to_string(),
            kind,
            metrics,
        }])
    };
    use ModelKind::{Classifier, Encoder, LanguageModel};
    match report {
        AnyReport::Inspect(s) => one(
            &s.path,
            (s.format == frugal_formats::inspect::ModelFormat::Gguf).then_some(LanguageModel),
            Metrics::default(),
        ),
        AnyReport::Convert(c) => one(
            &c.output.display().to_string(),
            (c.gguf_architecture != "bert").then_some(LanguageModel),
            Metrics::default(),
        ),
        AnyReport::Export(x) => one(
            &x.output.display().to_string(),
            Some(LanguageModel),
            Metrics::default(),
        ),
        AnyReport::Check(_) => Err(Error::Usage(
            "a check report holds verdicts, not figures: check the report it judged".into(),
        )),
        AnyReport::Eval(e) => match e {
            eval::EvalOutcome::LanguageModel(q) => {
                let mut m = Metrics::default();
                lm_quality(&mut m, Some(q), "");
                one(&q.model, Some(LanguageModel), m)
            }
            eval::EvalOutcome::Encoder(q) => {
                let mut m = Metrics::default();
                encoder_quality(&mut m, Some(q), "");
                one(&q.model, Some(Encoder), m)
            }
            eval::EvalOutcome::Classifier(c) => one(&c.model, Some(Classifier), Metrics::default()),
        },
        AnyReport::Quantize(q) => {
            let mut m = metered(&q.energy);
            match &q.report {
                quantize::QuantizeOutcome::LanguageModel(s) => {
                    size(
                        &mut m,
                        s.quantize.input_bytes,
                        s.quantize.output_bytes,
                        "quantize.",
                    );
                    lm_quality(&mut m, s.quality.as_ref(), "quality.");
                    one(&s.quantize.output, Some(LanguageModel), m)
                }
                quantize::QuantizeOutcome::Encoder(s) => {
                    size(
                        &mut m,
                        s.quantize.input_bytes,
                        s.quantize.output_bytes,
                        "quantize.",
                    );
                    encoder_quality(&mut m, s.quality.as_ref(), "quality.");
                    one(&s.quantize.output, Some(Encoder), m)
                }
                quantize::QuantizeOutcome::Classifier { quantize } => {
                    size(
                        &mut m,
                        quantize.input_bytes,
                        quantize.output_bytes,
                        "quantize.",
                    );
                    one(&quantize.output, Some(Classifier), m)
                }
                quantize::QuantizeOutcome::ClassifierPlanned { quantize } => {
                    one(&quantize.output, Some(Classifier), m)
                }
            }
        }
        AnyReport::Prune(p) => {
            let mut m = metered(&p.energy);
            match &p.report {
                prune::PruneOutcome::Unstructured(s) => {
                    size(&mut m, s.input_bytes, s.output_bytes, "");
                    lm_quality(&mut m, s.quality.as_ref(), "quality.");
                    one(&s.prune.output, Some(LanguageModel), m)
                }
                prune::PruneOutcome::Structured(s) => {
                    size(&mut m, s.input_bytes, s.output_bytes, "");
                    lm_quality(&mut m, s.quality.as_ref(), "quality.");
                    one(&s.output, Some(LanguageModel), m)
                }
                prune::PruneOutcome::Classifier(s) => {
                    size(&mut m, s.input_bytes, s.output_bytes, "");
                    m.set(
                        "max_accuracy_drop_pt",
                        s.accuracy_drop_pt,
                        "accuracy_drop_pt",
                    );
                    one(&s.output, Some(Classifier), m)
                }
            }
        }
        AnyReport::Distill(d) => {
            let mut m = metered(&d.energy);
            match &d.report {
                distill::DistillOutcome::LanguageModel(s) => {
                    lm_quality(&mut m, s.quality.as_ref(), "quality.");
                    one(&s.out, Some(LanguageModel), m)
                }
                distill::DistillOutcome::Classifier(s) => {
                    if let Some(t) = &s.teacher_eval {
                        m.set(
                            "max_accuracy_drop_pt",
                            t.accuracy_pct - s.eval.accuracy_pct,
                            "teacher_eval.accuracy_pct - eval.accuracy_pct",
                        );
                    }
                    one(&s.out, Some(Classifier), m)
                }
            }
        }
        AnyReport::Tune(t) => {
            let mut m = metered(&t.energy);
            match &t.report {
                tune::TuneOutcome::LanguageModel(r) => {
                    size(&mut m, r.input_bytes, r.output_bytes, "");
                    let q = &r.quality;
                    m.set("max_kld", q.kld.mean, "quality.kld.mean");
                    // Reports written before the tail was recorded read it as 0 (a serde
                    // default): with a positive mean that is a missing figure, which fails.
                    if q.kld.p99_9 > 0.0 || q.kld.mean == 0.0 {
                        m.set("max_kld_p999", q.kld.p99_9, "quality.kld.p99_9");
                    }
                    ppl_increase(&mut m, q.ppl, q.kld.reference_ppl, "quality.");
                    one(&r.output, Some(LanguageModel), m)
                }
                tune::TuneOutcome::Classifier(r) => {
                    size(&mut m, r.input_bytes, r.output_bytes, "");
                    let q = &r.quality;
                    m.set(
                        "max_accuracy_drop_pt",
                        q.reference_accuracy_pct - q.accuracy_pct,
                        "quality.reference_accuracy_pct - quality.accuracy_pct",
                    );
                    one(&r.output, Some(Classifier), m)
                }
            }
        }
        AnyReport::Measure(measure_job::MeasureOutcome::Model(w)) => {
            let mut m = Metrics::default();
            workload(&mut m, w, "");
            one(&w.model, workload_kind(w), m)
        }
        AnyReport::Measure(measure_job::MeasureOutcome::Command(c)) => {
            let r = &c.report;
            let mut m = metered(&r.energy);
            if let Some(p) = &r.per_1k_queries {
                m.set("max_wh_per_1k_queries", p.wh, "per_1k_queries.wh");
                if let Some(g) = p.gco2e {
                    m.set("max_gco2e_per_1k_queries", g, "per_1k_queries.gco2e");
                }
            }
            m.eu_ai_act_missing = Some(r.eu_ai_act.missing());
            one(&r.command.join(" "), None, m)
        }
        AnyReport::Run(run::RunOutcome::Recipe(w)) => Ok(recipe_subjects(&w.report)),
        AnyReport::Run(run::RunOutcome::Default(w)) => Ok(embedded_subjects(&w.report)),
    }
}

/// The kind of model a workload ran.
fn workload_kind(w: &WorkloadReport) -> Option<ModelKind> {
    match w.kind.as_str() {
        "language-model" => Some(ModelKind::LanguageModel),
        "encoder" => Some(ModelKind::Encoder),
        "classifier" => Some(ModelKind::Classifier),
        _ => None,
    }
}

/// The figures of a command's report that made a model: its energy's provenance.
fn metered(e: &EnergyReport) -> Metrics {
    let mut m = Metrics::default();
    energy(&mut m, e, "energy");
    m
}

fn lm_quality(m: &mut Metrics, q: Option<&LmEvalReport>, at: &str) {
    if let Some((q, k)) = q.and_then(|q| Some((q, q.result.kld.as_ref()?))) {
        m.set("max_kld", k.mean, format!("{at}kld.mean"));
        m.set("max_kld_p999", k.p99_9, format!("{at}kld.p99_9"));
        ppl_increase(m, q.result.ppl, k.reference_ppl, at);
    }
}

fn ppl_increase(m: &mut Metrics, ppl: f64, reference: f64, at: &str) {
    if reference > 0.0 {
        m.set(
            "max_ppl_increase_pct",
            100.0 * (ppl - reference) / reference,
            format!("{at}ppl vs {at}kld.reference_ppl"),
        );
    }
}

fn encoder_quality(m: &mut Metrics, q: Option<&EncoderEvalReport>, at: &str) {
    let Some(q) = q else {
        return;
    };
    let r = &q.result;
    if let Some(c) = r.cosine_mean {
        m.set("min_cosine_similarity", c, format!("{at}cosine_mean"));
    }
    if let Some(reference) = r.reference_knn_accuracy_pct {
        m.set(
            "max_accuracy_drop_pt",
            reference - r.knn_accuracy_pct,
            format!("{at}reference_knn_accuracy_pct - {at}knn_accuracy_pct"),
        );
    }
}

fn size(m: &mut Metrics, input: u64, output: u64, at: &str) {
    if output > 0 {
        m.set(
            "min_size_reduction",
            input as f64 / output as f64,
            format!("{at}input_bytes / {at}output_bytes"),
        );
    }
}

/// Adds an energy record's provenance: every figure measured only if every record's is.
fn energy(m: &mut Metrics, e: &EnergyReport, at: &str) {
    add_measured(
        m,
        !e.sources.is_empty() && e.all_measured(),
        &format!("{at}.sources"),
    );
}

fn add_measured(m: &mut Metrics, measured: bool, at: &str) {
    m.energy_measured = Some(match m.energy_measured.take() {
        None => (measured, at.to_string()),
        Some((all, path)) => (all && measured, format!("{path}, {at}")),
    });
}

fn workload(m: &mut Metrics, w: &WorkloadReport, at: &str) {
    let p = &w.per_1k_queries;
    m.set(
        "max_wh_per_1k_queries",
        p.wh,
        format!("{at}per_1k_queries.wh"),
    );
    if let Some(g) = p.gco2e {
        m.set(
            "max_gco2e_per_1k_queries",
            g,
            format!("{at}per_1k_queries.gco2e"),
        );
    }
    if let Some(s) = p.sci_gco2e {
        m.set("max_sci", s, format!("{at}per_1k_queries.sci_gco2e"));
    }
    if let Some(b) = &w.break_even {
        break_even(m, b, &format!("{at}break_even"));
    }
    energy(m, &w.energy, &format!("{at}energy"));
}

fn break_even(m: &mut Metrics, b: &BreakEvenRecord, at: &str) {
    match b.queries {
        Some(q) => m.set("max_break_even_queries", q, format!("{at}.queries")),
        None => {
            m.absent.insert(
                "max_break_even_queries",
                format!("{at}: {}", b.why_none().unwrap_or_default()),
            );
        }
    }
}

/// A recipe's models: every step that wrote one (prune, structured prune, distill, quantize),
/// with its own quality or that of a later eval step on it, its size against the recipe's
/// model, the energy of making it, and the figures of later measure steps on it.
pub fn recipe_subjects(r: &RecipeReport) -> Vec<Subject> {
    // The recipe's model's size, from the first step that read it and says.
    let original = r.steps.iter().find_map(|s| match &s.result {
        StepResult::Prune(p) if s.input == r.model => Some(p.input_bytes),
        StepResult::StructuredPrune(p) if s.input == r.model => Some(p.input_bytes),
        StepResult::Quantize(q) if s.input == r.model => Some(q.quantize.input_bytes),
        _ => None,
    });
    let mut out = Vec::new();
    for (i, s) in r.steps.iter().enumerate() {
        let (Some(output), Some(bytes)) = (&s.output, output_bytes(&s.result)) else {
            continue;
        };
        let at = format!("steps[{i}].result.");
        let mut m = Metrics::default();
        if let Some(o) = original {
            if bytes > 0 {
                m.set(
                    "min_size_reduction",
                    o as f64 / bytes as f64,
                    format!("the recipe model's bytes / {at}output_bytes"),
                );
            }
        }
        energy(&mut m, &s.energy, &format!("steps[{i}].energy"));
        lm_quality(&mut m, s.result.quality(), &format!("{at}quality."));
        for (j, later) in r.steps.iter().enumerate().skip(i + 1) {
            if later.input != *output {
                continue;
            }
            match &later.result {
                StepResult::Eval(q) if m.get("max_kld").is_none() => {
                    lm_quality(&mut m, Some(q), &format!("steps[{j}].result."))
                }
                StepResult::Measure(w) => workload(&mut m, w, &format!("steps[{j}].result.")),
                _ => {}
            }
        }
        out.push(Subject {
            model: output.clone(),
            kind: Some(ModelKind::LanguageModel),
            metrics: m,
        });
    }
    out
}

/// The bytes a step wrote, for the steps that write a model.
fn output_bytes(r: &StepResult) -> Option<u64> {
    match r {
        StepResult::Prune(p) => Some(p.output_bytes),
        StepResult::StructuredPrune(p) => Some(p.output_bytes),
        StepResult::Distill(d) => Some(d.output_bytes),
        StepResult::Quantize(q) => Some(q.quantize.output_bytes),
        StepResult::Eval(_) | StepResult::Measure(_) | StepResult::Check(_) => None,
    }
}

/// The embedded run's students against the teacher: accuracy drop, size reduction, energy per
/// 1,000 queries with its provenance, and the break-even where the saving is significant.
pub fn embedded_subjects(r: &crate::Report) -> Vec<Subject> {
    let models = &r.classifier.models;
    let Some(teacher) = models.first() else {
        return Vec::new();
    };
    models
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| {
            let mut m = Metrics::default();
            m.set(
                "max_accuracy_drop_pt",
                teacher.eval.accuracy_pct - s.eval.accuracy_pct,
                format!("classifier.models[0].eval.accuracy_pct - classifier.models[{i}].eval.accuracy_pct"),
            );
            if s.file_bytes > 0 {
                m.set(
                    "min_size_reduction",
                    teacher.file_bytes as f64 / s.file_bytes as f64,
                    format!("classifier.models[0].file_bytes / classifier.models[{i}].file_bytes"),
                );
            }
            if let Some(e) = r.measure.iter().position(|e| e.model == s.name) {
                let me = &r.measure[e];
                m.set("max_wh_per_1k_queries", me.wh_per_1k_queries.mean,
                    format!("measure[{e}].wh_per_1k_queries.mean"),);
                add_measured(&mut m, me.measured, &format!("measure[{e}].measured"));
            }
            if let Some(e) = &s.energy {
                energy(&mut m, e, &format!("classifier.models[{i}].energy"));
            }
            if let Some(b) = r.break_even.iter().position(|b| b.model == s.name) {
                break_even(&mut m, &r.break_even[b].record, &format!("break_even[{b}]"));
            }
            Subject {
                model: s.name.clone(),
                kind: Some(ModelKind::Classifier),
                metrics: m,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_field() {
        let a = serde_json::json!({"a": {"b": [1, 2.0]}, "c": null});
        let b = serde_json::json!({"a": {"b": [1.0, 2]}});
        assert_eq!(first_difference(&a, &b, String::new()), None);
        let c = serde_json::json!({"a": {"b": [1.0, 3]}});
        assert_eq!(
            first_difference(&a, &c, String::new()).as_deref(),
            Some("a.b[1]")
        );
        let d = serde_json::json!({"a": {"b": [1, 2]}, "extra": 1});
        assert_eq!(
            first_difference(&a, &d, String::new()).as_deref(),
            Some("extra")
        );
    }

    #[test]
    fn what_is_not_a_report_is_refused_with_the_reason() {
        for (bytes, needle) in [
            (&b"[]"[..], "expected a JSON object"),
            (b"{", "not a JSON report"),
            (b"{\"kld\": {\"mean\": 0.01}}", "no `schema_version`"),
            (
                b"{\"schema_version\": 2, \"report\": \"eval\"}",
                "version 2",
            ),
            (b"{\"schema_version\": 3}", "no `report`"),
            (
                b"{\"schema_version\": 3, \"report\": \"eval\", \"model\": \"m\"}",
                "not a `eval` report",
            ),
            (
                b"{\"schema_version\": 3, \"report\": \"nope\"}",
                "not a `nope` report",
            ),
        ] {
            let e = parse(bytes).unwrap_err();
            assert!(
                e.contains(needle),
                "{}: {e}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
