//! `frugal tune` for image classifiers: the smallest per-tensor mix of integer schemes (int8
//! per channel, int4 in groups of 32/64/128, or F32 kept) whose test accuracy stays within
//! `D` points of the input's.
//!
//! 1. The data set's test images are split (stratified, seeded) into a search half and a
//!    held-out half; the input's logits and accuracy are taken on both.
//! 2. Sensitivity, once: every weight alone in every scheme that fits it is written, reloaded
//!    and judged on the search half (mean KL divergence of its predictions from the input's).
//! 3. Knapsack-style assignment: for a price λ every weight takes the scheme minimising
//!    bytes + λ·KLD; sweeping λ gives the plans on the lower convex hull of size against
//!    summed sensitivity, from the smallest to all F32.
//! 4. The plans are judged in increasing size on the search half (accuracy drop, KLD); the
//!    first that meets the limit is verified on the held-out half, and if it misses there the
//!    next larger plan that meets the search limit is tried.
//!
//! Every candidate is a real file (written by the code `frugal quantize` uses, reloaded by the
//! loader every command uses). Writes OUT, `OUT.plan.toml` (`frugal quantize IN OUT --type
//! int8 --plan OUT.plan.toml` rebuilds the same bytes) and `OUT.report.html`.

use crate::Error;
use frugal_compress::quant::int::{int_bytes, IntType, INT_TYPES};
use frugal_formats::idx::ImageSet;
use frugal_formats::output::{write_atomic, AtomicDir};
use frugal_formats::safetensors::{Dtype, SafetensorsFile};
use frugal_models::cnn::Cnn;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to tune.
#[derive(Debug, Clone)]
pub struct ClassifierTuneJob {
    pub input: PathBuf,
    pub output: PathBuf,
    /// `digits` or `fashion-mnist`.
    pub data: crate::data::Dataset,
    /// Largest test-accuracy drop allowed, in points.
    pub max_drop_pt: f64,
    /// Seed of the search / held-out split (and of the digits test split).
    pub seed: u64,
    /// At most this many plans judged (sensitivity runs not counted).
    pub max_evals: usize,
}

/// The chosen plan on the held-out images (the figures a policy reads).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HeldoutAccuracy {
    pub accuracy_pct: f64,
    pub reference_accuracy_pct: f64,
    /// The mean KL divergence of the outputs from the input model's.
    pub kld: MeanKld,
    pub images: usize,
}

/// A mean KL divergence.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct MeanKld {
    pub mean: f64,
}

/// One weight in one scheme, alone.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Sensitivity {
    pub tensor: String,
    pub scheme: String,
    pub bytes: u64,
    /// Mean KL divergence of the predictions from the input's (search half), nats.
    pub kld: f64,
    pub accuracy_drop_pt: f64,
}

/// Accuracy and divergence of a model on one half.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Judged {
    pub accuracy_pct: f64,
    pub accuracy_drop_pt: f64,
    pub kld: f64,
}

/// One plan judged.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PlanCandidate {
    /// Every linear weight's scheme (`f32` when kept).
    pub plan: BTreeMap<String, String>,
    /// Bytes of the weights the plan decides (F32 ones at 4 bytes a value).
    pub weight_bytes: u64,
    /// The whole file.
    pub file_bytes: u64,
    pub search: Judged,
    pub heldout: Option<Judged>,
    pub meets_search: bool,
}

/// `frugal tune`'s record for a classifier.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClassifierTuneReport {
    pub input: String,
    pub output: String,
    pub plan_file: String,
    pub data: String,
    pub max_accuracy_drop_pt: f64,
    pub n_search: usize,
    pub n_heldout: usize,
    pub reference_search_pct: f64,
    pub reference_heldout_pct: f64,
    pub sensitivity: Vec<Sensitivity>,
    pub candidates: Vec<PlanCandidate>,
    pub chosen: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    /// The figures a policy reads: the held-out evaluation of the chosen model.
    pub quality: HeldoutAccuracy,
    /// `accuracy_drop_pt` for `frugal check` (held-out half).
    pub accuracy_drop_pt: f64,
}

fn bad(m: String) -> Error {
    Error::Compress(frugal_compress::Error::BadOptions(m))
}

/// Softmax of each row, in f64.
fn probs(logits: &[f32], k: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(k) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|&x| f64::from(x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / z));
    }
    out
}

fn accuracy(logits: &[f32], k: usize, set: &ImageSet, idx: &[usize]) -> f64 {
    let right = logits
        .chunks(k)
        .zip(idx)
        .filter(|(row, &i)| frugal_models::cnn::argmax(row) == usize::from(set.labels[i]))
        .count();
    100.0 * right as f64 / idx.len().max(1) as f64
}

/// Mean KL(p_ref ‖ p) per image.
fn mean_kld(p_ref: &[f64], logits: &[f32], k: usize) -> f64 {
    let p = probs(logits, k);
    let n = p.len() / k.max(1);
    let s: f64 = p_ref
        .iter()
        .zip(&p)
        .map(|(&a, &b)| {
            if a > 0.0 {
                a * (a / b.max(1e-300)).ln()
            } else {
                0.0
            }
        })
        .sum();
    s / n.max(1) as f64
}

/// One half of the test images with the input's outputs on it.
struct Half {
    idx: Vec<usize>,
    p_ref: Vec<f64>,
    acc_ref: f64,
}

impl Half {
    fn judge(&self, model: &Cnn, set: &ImageSet) -> Result<Judged, Error> {
        let k = model.config.n_classes;
        let l = frugal_models::cnn::served_logits(model, set, &self.idx, 256)
            .map_err(frugal_compress::Error::from)?;
        let acc = accuracy(&l, k, set, &self.idx);
        Ok(Judged {
            accuracy_pct: acc,
            accuracy_drop_pt: self.acc_ref - acc,
            kld: mean_kld(&self.p_ref, &l, k),
        })
    }
}

/// The plans on the lower convex hull of bytes against summed sensitivity, smallest first,
/// ending with every weight in F32: for each price λ every weight takes the option with the
/// least bytes + λ·kld (option 0 of each weight is F32 at kld 0).
fn hull_plans(options: &[Vec<(u64, f64)>]) -> Vec<Vec<usize>> {
    let pick = |lambda: f64| -> Vec<usize> {
        options
            .iter()
            .map(|opts| {
                (0..opts.len())
                    .min_by(|&a, &b| {
                        let cost = |o: usize| opts[o].0 as f64 + lambda * opts[o].1;
                        cost(a).total_cmp(&cost(b)).then(opts[a].0.cmp(&opts[b].0))
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    // Every breakpoint of every weight's choice: λ where two options cost the same.
    let mut lambdas = vec![0.0];
    for opts in options {
        for a in opts {
            for b in opts {
                if a.1 > b.1 && a.0 < b.0 {
                    lambdas.push((b.0 - a.0) as f64 / (a.1 - b.1));
                }
            }
        }
    }
    lambdas.sort_by(f64::total_cmp);
    let mut probes: Vec<f64> = Vec::new();
    for w in lambdas.windows(2) {
        probes.push(0.5 * (w[0] + w[1]));
    }
    probes.push(lambdas.last().copied().unwrap_or(0.0) * 2.0 + 1.0);
    probes.insert(0, 0.0);
    let mut plans: Vec<Vec<usize>> = Vec::new();
    for l in probes {
        let p = pick(l);
        if !plans.contains(&p) {
            plans.push(p);
        }
    }
    let all_f32 = vec![0; options.len()];
    if !plans.contains(&all_f32) {
        plans.push(all_f32);
    }
    let bytes = |p: &Vec<usize>| -> u64 { p.iter().zip(options).map(|(&o, opts)| opts[o].0).sum() };
    plans.sort_by_key(bytes);
    plans
}

/// The plan file `frugal quantize … --plan` reads: `[tensors]` NAME = "int8" | "int4-g32" |
/// "int4-g64" | "int4-g128" | "f32" (`None`: kept F32).
pub fn read_plan(path: &Path) -> Result<BTreeMap<String, Option<&'static IntType>>, Error> {
    let len = std::fs::metadata(path)
        .map_err(|e| frugal_formats::Error::io(path, "reading the plan", e))?
        .len();
    if len > 1 << 20 {
        return Err(bad(format!(
            "{}: {len} bytes; a plan is at most 1 MiB",
            path.display()
        )));
    }
    let text = frugal_formats::guard::read_text_capped(path, "plan", 1 << 20)?;
    let v: toml::Table =
        toml::from_str(&text).map_err(|e| bad(format!("{}: {}", path.display(), e.message())))?;
    let t = v
        .get("tensors")
        .and_then(|t| t.as_table())
        .ok_or_else(|| bad(format!("{}: no [tensors] table", path.display())))?;
    let mut out = BTreeMap::new();
    for (name, s) in t {
        let s = s.as_str().ok_or_else(|| {
            bad(format!(
                "{}: tensors.{name} must be a string",
                path.display()
            ))
        })?;
        if s.eq_ignore_ascii_case("f32") {
            out.insert(name.clone(), None);
            continue;
        }
        let scheme = frugal_compress::quant::int::int_type(s).ok_or_else(|| {
            bad(format!(
                "{}: tensors.{name} = `{s}` (f32, {})",
                path.display(),
                INT_TYPES
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        out.insert(name.clone(), Some(scheme));
    }
    Ok(out)
}

/// The scheme of every F32 weight matrix of `f`: the plan's where it lists the weight (a
/// listed `f32` keeps it), `default` otherwise. A plan naming a tensor the file does not have
/// as a weight matrix is refused (it was made for another model).
pub fn plan_for(
    f: &SafetensorsFile,
    plan_path: &Path,
    listed: &BTreeMap<String, Option<&'static IntType>>,
    default: &'static IntType,
) -> Result<BTreeMap<String, &'static IntType>, Error> {
    let weights = weight_matrices(f);
    if let Some(n) = listed.keys().find(|n| !weights.iter().any(|w| &w.0 == *n)) {
        return Err(bad(format!(
            "{}: `{n}` is not an F32 weight matrix of {}",
            plan_path.display(),
            f.path().display()
        )));
    }
    Ok(weights
        .into_iter()
        .filter_map(|(w, ..)| match listed.get(&w) {
            Some(s) => s.map(|s| (w, s)),
            None => Some((w, default)),
        })
        .collect())
}

/// The weights a plan decides: the F32 weight matrices (name, rows, columns).
fn weight_matrices(f: &SafetensorsFile) -> Vec<(String, u64, u64)> {
    f.header
        .tensors
        .iter()
        .filter(|t| {
            t.dtype == Dtype::F32
                && frugal_compress::quant::int::is_linear_weight(&t.name, &t.shape)
        })
        .map(|t| (t.name.clone(), t.shape[0], t.shape[1]))
        .collect()
}

fn write_plan(
    path: &Path,
    job: &ClassifierTuneJob,
    plan: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let mut text = format!(
        "# Written by `frugal tune` (test-accuracy drop ≤ {} points on {}, verified on held-out images).\n\
         # `frugal quantize {} OUT --type int8 --plan THIS` rebuilds the same file.\n[tensors]\n",
        job.max_drop_pt,
        job.data,
        job.input.display()
    );
    for (k, v) in plan {
        text.push_str(&format!(
            "{} = {}\n",
            toml::Value::String(k.clone()),
            toml::Value::String(v.clone())
        ));
    }
    write_atomic(path, &[&job.input], |f| f.write_all(text.as_bytes()))?;
    Ok(())
}

/// Runs the search; writes `OUT.plan.toml`, `OUT.report.html`, then OUT; returns the report.
/// `progress(stage, done, total)`.
pub fn tune_classifier(
    job: &ClassifierTuneJob,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<ClassifierTuneReport, Error> {
    let t0 = std::time::Instant::now();
    if !(job.max_drop_pt.is_finite() && job.max_drop_pt >= 0.0) {
        return Err(bad(format!(
            "limit {} must be a non-negative number of points",
            job.max_drop_pt
        )));
    }
    if job.max_evals < 1 {
        return Err(bad("--max-evals must be at least 1".into()));
    }
    if frugal_formats::output::same_file(&job.input, &job.output) || job.output.is_dir() {
        return Err(bad(format!(
            "{}: the output must not be the input or a folder",
            job.output.display()
        )));
    }
    let ce = frugal_compress::Error::from;
    let dev = candle_core::Device::Cpu;
    let model = Cnn::load(&job.input, &dev).map_err(ce)?;
    let crate::data::Split {
        test_set: set,
        test,
        ..
    } = job.data.load(job.seed)?;
    crate::classifier::check_fits(&job.input, &model, &set, job.data.name())?;
    // The test images halved, stratified by class.
    let labels: Vec<u8> = test.iter().map(|&i| set.labels[i]).collect();
    let held_pos = crate::stratified_split(&labels, set.n_classes, 0.5, job.seed ^ 0x7475_6e65);
    let mut is_held = vec![false; test.len()];
    held_pos.iter().for_each(|&p| is_held[p] = true);
    let k = model.config.n_classes;
    let half = |want: bool| -> Result<Half, Error> {
        let idx: Vec<usize> = test
            .iter()
            .zip(&is_held)
            .filter(|(_, &h)| h == want)
            .map(|(&i, _)| i)
            .collect();
        let l = frugal_models::cnn::served_logits(&model, &set, &idx, 256).map_err(ce)?;
        Ok(Half {
            acc_ref: accuracy(&l, k, &set, &idx),
            p_ref: probs(&l, k),
            idx,
        })
    };
    let (search, heldout) = (half(false)?, half(true)?);
    // The weights a plan decides: F32 linear weights, with the schemes that fit each.
    let f = SafetensorsFile::open(&job.input)?;
    if !frugal_models::int_weights::sparse_meta(&f)
        .map_err(ce)?
        .tensors
        .is_empty()
    {
        return Err(bad(format!(
            "{}: pruned weights stored sparse; tune the dense model (prune after, or store it with --storage dense)",
            job.input.display()
        )));
    }
    let weights = weight_matrices(&f);
    if weights.is_empty() {
        return Err(bad(format!(
            "{}: no F32 weight matrix to quantize (already quantized or pruned-sparse?)",
            job.input.display()
        )));
    }
    let scratch = AtomicDir::create(&beside(&job.output, ".tune"))?;
    let mut n_files = 0usize;
    let mut write_and_judge = |plan: &BTreeMap<String, &'static IntType>,
                               half: &Half|
     -> Result<(PathBuf, u64, Judged, Cnn), Error> {
        let path = scratch
            .tmp_path()
            .join(format!("candidate-{n_files}.safetensors"));
        n_files += 1;
        let bytes = frugal_compress::quant::int::quantize_safetensors_planned(
            &job.input,
            &path,
            plan,
            &|_, _| {},
        )?;
        let m = Cnn::load(&path, &dev).map_err(ce)?;
        let j = half.judge(&m, &set)?;
        Ok((path, bytes, j, m))
    };
    // 2. Sensitivity of every weight to every scheme, alone.
    let mut options: Vec<Vec<(u64, f64)>> = Vec::new();
    let mut schemes: Vec<Vec<Option<&'static IntType>>> = Vec::new();
    let mut sensitivity = Vec::new();
    let total_runs: usize = weights
        .iter()
        .map(|(_, r, c)| {
            INT_TYPES
                .iter()
                .filter(|s| int_bytes(*r, *c, Some(s)).is_some())
                .count()
        })
        .sum();
    for (name, rows, cols) in &weights {
        let mut o = vec![(int_bytes(*rows, *cols, None).expect("f32 fits"), 0.0)];
        let mut s = vec![None];
        for scheme in INT_TYPES {
            let Some(b) = int_bytes(*rows, *cols, Some(scheme)) else {
                continue;
            };
            let plan = BTreeMap::from([(name.clone(), scheme)]);
            let (path, _, j, _) = write_and_judge(&plan, &search)?;
            let _ = std::fs::remove_file(path);
            progress("sensitivity", sensitivity.len() + 1, total_runs);
            sensitivity.push(Sensitivity {
                tensor: name.clone(),
                scheme: scheme.name.into(),
                bytes: b,
                kld: j.kld,
                accuracy_drop_pt: j.accuracy_drop_pt,
            });
            o.push((b, j.kld));
            s.push(Some(scheme));
        }
        options.push(o);
        schemes.push(s);
    }
    // 3-4. Plans on the hull, smallest first, judged until one holds on both halves.
    let plans = hull_plans(&options);
    let mut candidates: Vec<PlanCandidate> = Vec::new();
    let mut chosen: Option<(usize, PathBuf)> = None;
    for (n, p) in plans.iter().enumerate() {
        if candidates.len() >= job.max_evals {
            break;
        }
        progress("search", n + 1, plans.len().min(job.max_evals));
        let plan: BTreeMap<String, &'static IntType> = weights
            .iter()
            .zip(p)
            .zip(&schemes)
            .filter_map(|(((name, ..), &o), s)| s[o].map(|s| (name.clone(), s)))
            .collect();
        let (path, file_bytes, s, m) = write_and_judge(&plan, &search)?;
        let meets_search = s.accuracy_drop_pt <= job.max_drop_pt;
        let heldout_j = if meets_search {
            Some(heldout.judge(&m, &set)?)
        } else {
            None
        };
        candidates.push(PlanCandidate {
            plan: weights
                .iter()
                .zip(p)
                .zip(&schemes)
                .map(|(((name, ..), &o), s)| {
                    (name.clone(), s[o].map_or("f32", |s| s.name).to_string())
                })
                .collect(),
            weight_bytes: p.iter().zip(&options).map(|(&o, opts)| opts[o].0).sum(),
            file_bytes,
            search: s,
            heldout: heldout_j,
            meets_search,
        });
        if heldout_j.is_some_and(|h| h.accuracy_drop_pt <= job.max_drop_pt) {
            chosen = Some((candidates.len() - 1, path));
            break;
        }
        let _ = std::fs::remove_file(path);
    }
    let Some((best, path)) = chosen else {
        return Err(Error::LimitNotMet(format!(
            "no plan among the {} judged keeps the accuracy drop within {} points on both halves of the test images; nothing written",
            candidates.len(),
            job.max_drop_pt
        )));
    };
    let c = &candidates[best];
    let h = c.heldout.expect("verified");
    let plan_file = plan_path(&job.output);
    write_plan(&plan_file, job, &c.plan)?;
    let report = ClassifierTuneReport {
        input: job.input.display().to_string(),
        output: job.output.display().to_string(),
        plan_file: plan_file.display().to_string(),
        data: job.data.name().to_string(),
        max_accuracy_drop_pt: job.max_drop_pt,
        n_search: search.idx.len(),
        n_heldout: heldout.idx.len(),
        reference_search_pct: search.acc_ref,
        reference_heldout_pct: heldout.acc_ref,
        sensitivity,
        chosen: best,
        input_bytes: f.file_len(),
        output_bytes: c.file_bytes,
        seconds: t0.elapsed().as_secs_f64(),
        quality: HeldoutAccuracy {
            accuracy_pct: h.accuracy_pct,
            reference_accuracy_pct: heldout.acc_ref,
            kld: MeanKld { mean: h.kld },
            images: heldout.idx.len(),
        },
        accuracy_drop_pt: h.accuracy_drop_pt,
        candidates,
    };
    let page = frugal_report::html::html(&view(&report));
    write_atomic(&beside(&job.output, ".report.html"), &[&job.input], |f| {
        f.write_all(page.as_bytes())
    })?;
    std::fs::rename(&path, &job.output).map_err(|e| {
        frugal_formats::Error::io(&job.output, "renaming the tuned model into place", e)
    })?;
    drop(scratch);
    Ok(report)
}

/// `OUT.plan.toml`: the plan that rebuilds the tuned classifier.
pub fn plan_path(output: &Path) -> PathBuf {
    beside(output, ".plan.toml")
}

fn beside(output: &Path, suffix: &str) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The report's view: every plan judged, file size against the accuracy drop (search half).
pub fn view(r: &ClassifierTuneReport) -> frugal_report::html::View {
    let mut variants: Vec<frugal_report::html::Variant> = r
        .candidates
        .iter()
        .enumerate()
        .map(|(k, c)| frugal_report::html::Variant {
            name: format!("{}plan {k}", if k == r.chosen { "chosen " } else { "" }),
            bytes: c.file_bytes,
            quality: c.search.accuracy_drop_pt,
            wh_per_1k: None,
        })
        .collect();
    variants.sort_by_key(|v| v.bytes);
    let c = &r.candidates[r.chosen];
    frugal_report::html::View {
        title: format!("frugal tune: {} → {}", r.input, r.output),
        verdict: Some(frugal_report::html::Verdict {
            ship: Some(format!("chosen plan {}", r.chosen)),
            headline: format!(
                "Ship {}: {:.1}× smaller, {:+.2} accuracy points on the held-out half (limit {} points)",
                r.output,
                r.input_bytes as f64 / r.output_bytes.max(1) as f64,
                -r.accuracy_drop_pt,
                r.max_accuracy_drop_pt
            ),
            reasons: vec![format!(
                "held-out accuracy {:.2} % against the input's {:.2} % on {} images",
                r.quality.accuracy_pct, r.quality.reference_accuracy_pct, r.quality.images
            )],
        }),
        quality_label: "accuracy drop, points (search half)".into(),
        higher_is_better: false,
        variants,
        energy_sources: Vec::new(),
        label_thresholds: frugal_report::html::DEFAULT_LABEL_WH_PER_1K,
        bits: Vec::new(),
        tables: vec![
            (
                "The chosen plan".into(),
                ["tensor", "scheme"].map(String::from).to_vec(),
                c.plan.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect(),
            ),
            (
                "Sensitivity: each weight alone (search half)".into(),
                ["tensor", "scheme", "bytes", "mean KLD", "accuracy drop (pt)"]
                    .map(String::from)
                    .to_vec(),
                r.sensitivity
                    .iter()
                    .map(|s| {
                        vec![
                            s.tensor.clone(),
                            s.scheme.to_string(),
                            s.bytes.to_string(),
                            format!("{:.6}", s.kld),
                            format!("{:.2}", s.accuracy_drop_pt),
                        ]
                    })
                    .collect(),
            ),
        ],
        notes: vec![format!(
            "Limit: accuracy drop ≤ {} points; chosen plan: {:.2} points on the search half ({} images), {:.2} on the held-out half ({} images); {} of {} bytes.",
            r.max_accuracy_drop_pt,
            c.search.accuracy_drop_pt,
            r.n_search,
            r.accuracy_drop_pt,
            r.n_heldout,
            r.output_bytes,
            r.input_bytes
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_plans_go_from_smallest_to_all_f32_along_the_hull() {
        // Two weights: F32, int8, int4 (bytes, kld).
        let options = vec![
            vec![(400, 0.0), (110, 0.001), (60, 0.05)],
            vec![(800, 0.0), (210, 0.0001), (110, 0.002)],
        ];
        let plans = hull_plans(&options);
        assert_eq!(plans.first().unwrap(), &vec![2, 2], "the smallest first");
        assert_eq!(plans.last().unwrap(), &vec![0, 0], "all F32 last");
        let bytes: Vec<u64> = plans
            .iter()
            .map(|p| p.iter().zip(&options).map(|(&o, opts)| opts[o].0).sum())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "{bytes:?}");
        // The most sensitivity saved per byte first: weight 0 leaves int4 (0.049 for 50 bytes)
        // before weight 1 (0.0019 for 100).
        assert_eq!(plans[1], vec![1, 2], "{plans:?}");
    }

    #[test]
    fn plan_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.toml");
        std::fs::write(
            &p,
            "[tensors]\n\"fc1.weight\" = \"int4-g32\"\n\"fc2.weight\" = \"f32\"\n",
        )
        .unwrap();
        let plan = read_plan(&p).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan["fc1.weight"].unwrap().name, "int4-g32");
        assert!(plan["fc2.weight"].is_none());
        std::fs::write(&p, "[tensors]\n\"fc1.weight\" = \"int3\"\n").unwrap();
        assert!(read_plan(&p).unwrap_err().to_string().contains("int3"));
        std::fs::write(&p, "tensors = 3\n").unwrap();
        assert!(read_plan(&p).is_err());
    }
}
