//! The embedded default of `frugal run`, on the bundled digits data set: the seeded stratified
//! split, then [`crate::classifier::run_classifier_pipeline`] (teacher trained from scratch, a
//! student on labels and one distilled, the distilled one pruned and recovered, then int8, and
//! the teacher in int8, each step metered), every model saved, reloaded and evaluated on the
//! same test images as it is served; then every model's inference energy measured, each model
//! compared with its source and each compression's break-even computed — claimed only where the
//! saving is significant —, every compressed model judged by the built-in default policy (as
//! `frugal check` judges the report), the model to ship named, and the report written as
//! `report.json`, `report.md` and `report.html`.

use crate::{classifier, measure, refuse_foreign_run, schema, stratified_split, Error, RunOptions};
use frugal_formats::digits::embedded_digits;
use frugal_formats::output::write_atomic;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// The `recipe` the embedded default's report names.
pub(crate) const EMBEDDED_DEFAULT: &str = "embedded-default";

/// The measured inference workload: queries per run, metered runs, warm-up queries (long
/// enough that a run of the smallest model lasts milliseconds, not microseconds).
const WORKLOAD: (usize, usize, usize) = (2000, 5, 50);

/// The data step's record in the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DataRecord {
    pub dataset: String,
    pub source: String,
    pub n_images: usize,
    pub image_shape: [usize; 2],
    pub max_pixel: u8,
    pub n_classes: usize,
    pub class_counts: Vec<usize>,
    pub n_train: usize,
    pub n_test: usize,
    pub seed: u64,
    /// Test-set indices (into the data set), so that every later step scores the same images.
    pub test_indices: Vec<usize>,
}

/// The embedded default's `report.json` (written as a [`schema::Document`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Report {
    pub frugal_version: String,
    pub recipe: String,
    pub data: DataRecord,
    pub classifier: classifier::ClassifierRun,
    /// Each model's inference energy (`frugal measure`'s classifier workload), in model order.
    pub measure: Vec<ModelEnergy>,
    /// Each compressed student's cost and pay-back against the teacher.
    pub break_even: Vec<BreakEven>,
    /// The policy the compressed models are judged by (the built-in default).
    pub policy: String,
    /// Every compressed model's verdict, as `frugal check` judges this report
    /// ([`crate::judge::embedded_subjects`]).
    pub check: Vec<frugal_report::policy::Verdict>,
    /// Each model made from another (pruned, int8) against its source: energy per query,
    /// compared with their intervals.
    pub versus_source: Vec<VersusSource>,
    /// The model to ship: of those that pass the policy, the one with the least energy per
    /// query (`None`: none passes).
    pub recommended: Option<Recommendation>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// A model's energy per query against the model it was made from (`a` the source, `b` this
/// model: a positive difference is a saving).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct VersusSource {
    pub model: String,
    pub source: String,
    pub saving_joules_per_query: measure::Comparison,
    /// The comparison in words ("significant saving …" or "no significant saving …").
    pub verdict: String,
}

/// The model a run recommends, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Recommendation {
    pub model: String,
    pub why: String,
}

/// What making a model cost, and after how many queries its lower energy per query pays it back
/// (against the teacher, the model it replaces): only where the saving is significant.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct BreakEven {
    pub model: String,
    /// The cost is the energy of the step that made it and of the steps that made the models
    /// it came from; the saving the teacher's joules per query less this model's.
    #[serde(flatten)]
    pub record: measure::BreakEvenRecord,
}

impl Report {
    /// The report as `frugal run` prints it: the data, every model's size, accuracy and energy,
    /// the break-evens and the policy verdicts.
    pub fn to_text(&self) -> String {
        let d = &self.data;
        let mut t = format!("frugal run: {} (embedded default)\n", self.recipe);
        t += &format!(
            "  data     {} — {} images {}×{}, {} classes\n",
            d.dataset, d.n_images, d.image_shape[0], d.image_shape[1], d.n_classes
        );
        t += &format!(
            "  split    {} train / {} test (stratified, seed {})\n",
            d.n_train, d.n_test, d.seed
        );
        t += &format!(
            "  {:18} {:>9} {:>9} {:>10} {:>18} {:>8} {:>14}\n",
            "model", "KiB", "weights", "nonzero %", "test accuracy %", "s", "mWh/1k queries"
        );
        for (m, e) in self.classifier.models.iter().zip(&self.measure) {
            t += &format!(
                "  {:18} {:>9.1} {:>9} {:>10.1} {:>7.2} [{:.1}, {:.1}] {:>8.2} {:>10.3}{}\n",
                m.name,
                m.file_bytes as f64 / 1024.0,
                m.weights,
                100.0 * m.nonzero_weights as f64 / m.weights.max(1) as f64,
                m.eval.accuracy_pct,
                m.eval.ci95_pct.0,
                m.eval.ci95_pct.1,
                m.seconds,
                1e3 * e.wh_per_1k_queries.mean,
                if e.measured { "" } else { " est." }
            );
        }
        t += &format!(
            "  energy   {}\n",
            self.measure.first().map_or("-", |e| e.method.as_str())
        );
        t += &format!("  total    {:.1} s\n", self.seconds);
        for b in &self.break_even {
            t += &format!(
                "  pays back {:18} {:>9.3} J to make, {}\n",
                b.model,
                b.record.compression_joules,
                b.record.queries.map_or_else(
                    || format!("no break-even: {}", b.record.why_none().unwrap_or_default()),
                    |q| format!("after {q:.3e} queries ({})", b.record.verdict)
                )
            );
        }
        for v in &self.versus_source {
            t += &format!(
                "  vs source {:18} against {}: {}\n",
                v.model, v.source, v.verdict
            );
        }
        for c in &self.check {
            t += &format!("  policy   {:18} {}\n", c.model, c.summary());
        }
        t += &match &self.recommended {
            Some(r) => format!("  verdict  ship {}: {}\n", r.model, r.why),
            None => format!("  verdict  no compressed model passes {}\n", self.policy),
        };
        t
    }
}

/// One model's energy per query in the default run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ModelEnergy {
    pub model: String,
    pub wh_per_1k_queries: measure::Estimate,
    pub joules_per_image: measure::Estimate,
    pub queries_per_second: measure::Estimate,
    /// Every figure from a hardware counter (false: estimated, see `method`).
    pub measured: bool,
    pub method: String,
}

/// Runs the embedded default and writes its models and `report.json` into
/// `opts.out_dir`. `progress(step, done, total, loss)` reports training batches.
pub fn run(
    opts: &RunOptions,
    progress: &dyn Fn(&str, usize, usize, f64),
) -> Result<(Report, PathBuf), Error> {
    let t0 = std::time::Instant::now();
    let digits = embedded_digits();
    let mut class_counts = vec![0usize; digits.n_classes];
    digits
        .labels
        .iter()
        .for_each(|&l| class_counts[l as usize] += 1);
    let test_indices = stratified_split(
        &digits.labels,
        digits.n_classes,
        opts.test_fraction,
        opts.seed,
    );
    let data = DataRecord {
        dataset: "digits".into(),
        source:
            "scikit-learn 1.9.1 sklearn/datasets/data/digits.csv.gz (UCI optical digits, BSD-3)"
                .into(),
        n_images: digits.len(),
        image_shape: [digits.rows, digits.cols],
        max_pixel: digits.max_value,
        n_classes: digits.n_classes,
        class_counts,
        n_train: digits.len() - test_indices.len(),
        n_test: test_indices.len(),
        seed: opts.seed,
        test_indices,
    };
    let _ = refuse_foreign_run(&opts.out_dir, EMBEDDED_DEFAULT, opts.force)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::OutputDir {
        path: opts.out_dir.clone(),
        source,
    })?;
    frugal_formats::guard::remove_stale_partials(&opts.out_dir);
    let plan = classifier::ClassifierPlan::default_for(
        digits.rows,
        digits.cols,
        digits.n_classes,
        opts.seed,
    );
    let meters = frugal_energy::MeterOptions::detect_cpu();
    let classifier = classifier::run_classifier_pipeline(
        &digits,
        &data.test_indices,
        &plan,
        &opts.out_dir,
        &meters,
        progress,
    )?;
    // 6. Measure: every model on the same inference workload (WORKLOAD digits images one at a
    // time, 3 metered runs after 10 warm-up queries).
    let mut energies = Vec::new();
    let mut last_sources = Vec::new();
    for (k, m) in classifier.models.iter().enumerate() {
        progress("measure", k, classifier.models.len(), 0.0);
        let w = measure::measure_model(&measure::MeasureJob {
            model: opts.out_dir.join(&m.file),
            data: Some(crate::data::Dataset::Digits),
            queries: WORKLOAD.0,
            repeats: WORKLOAD.1,
            warmup: WORKLOAD.2,
            tokens: 0,
            weights: measure::Weights::Stored,
            max_memory: None,
            meters: meters.clone(),
        })?;
        last_sources = w
            .energy
            .sources
            .iter()
            .map(|s| {
                let measured = matches!(s.provenance, frugal_energy::Provenance::Measured { .. });
                (s.source.clone(), s.joules, measured)
            })
            .collect();
        let method = w.energy.method();
        energies.push(ModelEnergy {
            model: m.name.clone(),
            wh_per_1k_queries: w.wh_per_1k_queries,
            joules_per_image: w.joules_per_unit,
            queries_per_second: w.queries_per_second,
            measured: w.runs.iter().all(|r| r.measured),
            method,
        });
    }
    // 7. Break-even and the policy check of every student against the teacher.
    let break_even = break_even(&classifier.models, &energies);
    let policy = frugal_report::policy::Policy::default_policy();
    // Bits per weight of every model's tensors (read before anything is written, so a file
    // that cannot be read stops the run before its report).
    let bits: Vec<(String, Vec<(String, f64)>)> = classifier
        .models
        .iter()
        .map(|m| {
            let t = frugal_models::storage::tensor_storage(&opts.out_dir.join(&m.file))
                .map_err(frugal_compress::Error::from)?;
            Ok((
                m.name.clone(),
                t.iter()
                    .map(|t| (t.name.clone(), t.bits_per_weight()))
                    .collect(),
            ))
        })
        .collect::<Result<_, Error>>()?;
    let versus_source = versus_source(&classifier.models, &energies);
    let mut report = Report {
        frugal_version: env!("CARGO_PKG_VERSION").into(),
        recipe: EMBEDDED_DEFAULT.into(),
        data,
        classifier,
        measure: energies,
        versus_source,
        break_even,
        policy: policy.path.clone(),
        check: Vec::new(),
        recommended: None,
        seconds: t0.elapsed().as_secs_f64(),
    };
    // The verdicts `frugal check` gives on this report: the same subjects, the same policy.
    report.check = crate::judge::embedded_subjects(&report)
        .iter()
        .map(|s| frugal_report::policy::check(&policy, s))
        .collect::<Result<_, _>>()?;
    report.recommended = recommend(&report);
    let path = opts.out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&schema::Document::new("run", &report))
        .expect("report serializes");
    write_atomic(&path, &[], |f| f.write_all(&json))?;
    // report.md and report.html from the same figures.
    let verdict = match &report.recommended {
        Some(r) => {
            let m = report.classifier.models.iter().find(|m| m.name == r.model);
            let mut reasons = vec![format!("Why: {}.", r.why)];
            if let Some(b) = report.break_even.iter().find(|b| b.model == r.model) {
                reasons.push(match b.record.queries {
                    Some(q) => format!(
                        "Making it cost {:.3} J; the saving per query pays that back after {q:.0} queries.",
                        b.record.compression_joules
                    ),
                    None => format!("No break-even: {}.", b.record.why_none().unwrap_or_default()),
                });
            }
            // Against its source, unless that is the teacher (the break-even's comparison).
            if let Some(v) = report
                .versus_source
                .iter()
                .find(|v| v.model == r.model && v.source != report.classifier.models[0].name)
            {
                reasons.push(format!("Against {}: {}.", v.source, v.verdict));
            }
            let failing: Vec<String> = report
                .check
                .iter()
                .filter(|c| !c.pass)
                .map(|c| format!("{} ({})", c.model, c.failed().join(", ")))
                .collect();
            if !failing.is_empty() {
                reasons.push(format!(
                    "Not shipped, failing the policy: {}.",
                    failing.join("; ")
                ));
            }
            frugal_report::html::Verdict {
                ship: Some(r.model.clone()),
                headline: format!(
                    "Ship {}{}",
                    r.model,
                    m.map_or(String::new(), |m| format!(" ({})", m.made_by))
                ),
                reasons,
            }
        }
        None => frugal_report::html::Verdict {
            ship: None,
            headline: format!("No compressed model passes {}", report.policy),
            reasons: report
                .check
                .iter()
                .map(|c| format!("{}: {}", c.model, c.summary()))
                .collect(),
        },
    };
    let view = frugal_report::html::View {
        title: format!("Frugal: embedded default on digits (seed {})", opts.seed),
        verdict: Some(verdict),
        quality_label: "test accuracy %".into(),
        higher_is_better: true,
        variants: report
            .classifier
            .models
            .iter()
            .zip(&report.measure)
            .map(|(m, e)| frugal_report::html::Variant {
                name: m.name.clone(),
                bytes: m.file_bytes,
                quality: m.eval.accuracy_pct,
                wh_per_1k: Some((e.wh_per_1k_queries.mean, e.wh_per_1k_queries.ci95, e.measured)),
            })
            .collect(),
        energy_sources: last_sources,
        label_thresholds: policy
            .label_thresholds()
            .unwrap_or(frugal_report::html::DEFAULT_LABEL_WH_PER_1K),
        bits,
        tables: vec![
            (
                "Break-even: compression energy against the saving per query".into(),
                ["model", "made by (J)", "saving per query (J)", "break-even queries"]
                    .map(String::from)
                    .to_vec(),
                report
                    .break_even
                    .iter()
                    .map(|b| {
                        let r = &b.record;
                        let sv = &r.saving_joules_per_query;
                        vec![
                            b.model.clone(),
                            format!("{:.1}", r.compression_joules),
                            format!("{:.3e} [{:.3e}, {:.3e}]", sv.difference, sv.ci95.0, sv.ci95.1),
                            r.queries.map_or_else(
                                || if sv.significant { "never (costs more per query)".into() } else { "none: no significant saving".into() },
                                |q| format!("{q:.3e}"),
                            ),
                        ]
                    })
                    .collect(),
            ),
            (
                format!("Policy check: {}", report.policy),
                ["model", "result", "failed clauses"].map(String::from).to_vec(),
                report
                    .check
                    .iter()
                    .map(|c| {
                        vec![
                            c.model.clone(),
                            if c.pass { "pass" } else { "fail" }.into(),
                            c.clauses
                                .iter()
                                .filter(|o| !o.pass)
                                .map(|o| match o.value {
                                    Some(v) => format!("{} ({v:.3})", o.key),
                                    None => o.key.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(", "),
                        ]
                    })
                    .collect(),
            ),
        ],
        notes: vec![
            format!(
                "Energy: {} ({}).",
                report.measure.first().map_or("-", |e| e.method.as_str()),
                if report.measure.iter().all(|e| e.measured) { "measured" } else { "estimated, not measured" }
            ),
            format!("Workload: {} digits images (of the whole set) classified one at a time on one thread, as each model is served (int8 weights through integer products), {} metered runs after {} warm-up queries; intervals are 95 % Student-t over the runs, a saving's interval the two half-widths in quadrature.", WORKLOAD.0, WORKLOAD.1, WORKLOAD.2),
            format!("Accuracy on {} held-out test images.", report.data.n_test),
        ],
    };
    let md = frugal_report::html::markdown(&view);
    write_atomic(&opts.out_dir.join("report.md"), &[], |f| {
        f.write_all(md.as_bytes())
    })?;
    let page = frugal_report::html::html(&view);
    write_atomic(&opts.out_dir.join("report.html"), &[], |f| {
        f.write_all(page.as_bytes())
    })?;
    Ok((report, path))
}

/// Each student's cost (its step and its ancestors' steps) and break-even against the teacher.
fn break_even(models: &[classifier::ModelRecord], energies: &[ModelEnergy]) -> Vec<BreakEven> {
    let by_name = |n: &str| models.iter().position(|m| m.name == n);
    models
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, m)| {
            // The model's step and the steps of the models it came from, down to (not
            // including) the teacher it is compared with.
            let mut sources = Vec::new();
            let mut at = Some(i);
            while let Some(k) = at.filter(|&k| k > 0) {
                if let Some(e) = &models[k].energy {
                    sources.extend(&e.sources);
                }
                at = models[k].made_from.as_deref().and_then(by_name);
            }
            let cost = measure::Cost::of(sources);
            let measured = cost.measured && energies[0].measured && energies[i].measured;
            BreakEven {
                model: m.name.clone(),
                record: measure::BreakEvenRecord::new(
                    &cost,
                    energies[0].joules_per_image,
                    energies[i].joules_per_image,
                    measured,
                ),
            }
        })
        .collect()
}

/// Each model made from another against its source, energy per query.
fn versus_source(
    models: &[classifier::ModelRecord],
    energies: &[ModelEnergy],
) -> Vec<VersusSource> {
    models
        .iter()
        .zip(energies)
        .filter_map(|(m, e)| {
            let from = m.made_from.as_deref()?;
            let src = energies.iter().find(|s| s.model == from)?;
            let c = src.joules_per_image.minus(&e.joules_per_image);
            let mut verdict = c.describe("saving per query", "J");
            if !(e.measured && src.measured) {
                verdict += " (estimated energy)";
            }
            Some(VersusSource {
                model: m.name.clone(),
                source: from.to_string(),
                saving_joules_per_query: c,
                verdict,
            })
        })
        .collect()
}

/// Of the models that pass, the one with the least energy per query, and why in words.
fn recommend(r: &Report) -> Option<Recommendation> {
    let teacher = r.classifier.models.first()?;
    let teacher_e = r.measure.first()?;
    r.check
        .iter()
        .filter(|v| v.pass)
        .filter_map(|v| {
            let m = r.classifier.models.iter().find(|m| m.name == v.model)?;
            let e = r.measure.iter().find(|e| e.model == v.model)?;
            Some((m, e))
        })
        .min_by(|a, b| a.1.wh_per_1k_queries.mean.total_cmp(&b.1.wh_per_1k_queries.mean))
        .map(|(m, e)| {
            let saving = r
                .break_even
                .iter()
                .find(|b| b.model == m.name)
                .map_or(String::new(), |b| format!("; {}", b.record.verdict));
            Recommendation {
                model: m.name.clone(),
                why: format!(
                    "passes {} — {:.1}× smaller than the teacher, {:+.2} accuracy points, {:.4} mWh per 1,000 queries against the teacher's {:.4}{}{saving}",
                    r.policy,
                    teacher.file_bytes as f64 / m.file_bytes.max(1) as f64,
                    m.eval.accuracy_pct - teacher.eval.accuracy_pct,
                    1e3 * e.wh_per_1k_queries.mean,
                    1e3 * teacher_e.wh_per_1k_queries.mean,
                    if e.measured { "" } else { " (estimated)" },
                ),
            }
        })
}
