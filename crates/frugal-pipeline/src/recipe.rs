//! Recipes: `frugal run RECIPE.toml` chains compression steps on a Llama-family GGUF model.
//! Each step reads the previous step's output (the first reads `model`), writes its own file
//! `NN-KIND.gguf` into the output folder, and is recorded in `report.json`, which is rewritten
//! (atomically) after every step. Running the same recipe into the same folder again resumes:
//! leading steps whose recorded settings equal the recipe's and whose output is still there are
//! kept, and the run continues from the first step that differs or is missing.
//!
//! ```toml
//! name = "smollm2-small"
//! model = "~/.cache/frugal/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # or relative to the recipe
//! [eval]                                      # used by `eval` steps
//! text = { brown = "cj01-cj12" }              # or { file = "eval.txt" }
//! chunks = 8
//! [[step]]
//! kind = "prune"
//! method = "wanda"                            # magnitude | wanda | sparsegpt
//! sparsity = 0.2
//! structure = "mlp-neurons"                   # attn-heads, layers; or pattern = "2:4" / …
//! calib = { brown = "ca01-ca10", tokens = 8192 }
//! [[step]]
//! kind = "distill"                            # from the recipe's model, on text
//! text = { brown = "cj13-cj80", tokens = 16384, ctx = 256 }
//! lr = 2e-4
//! [[step]]
//! kind = "quantize"
//! type = "Q4_K_M"
//! method = "awq-gptq"                         # rtn | gptq | awq | awq-gptq
//! calib = { brown = "ca01-ca10" }
//! [[step]]
//! kind = "eval"
//! ```

use crate::quantize::{self, CalibSpec, EvalSpec};
use crate::Error;
use frugal_formats::output::write_atomic;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest recipe file read.
const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// Where a step's text comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSource {
    /// A plain text file (relative to the recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Brown corpus files, e.g. `ca01-ca10` (from the fetched corpus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brown: Option<String>,
    /// At most this many tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Tokens per chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<usize>,
}

/// One step of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    Prune {
        method: String,
        sparsity: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        /// `mlp-neurons`, `attn-heads` or `layers` for structured removal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        structure: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calib: Option<TextSource>,
    },
    Distill {
        text: TextSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epochs: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alpha: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        top_k: Option<usize>,
    },
    Quantize {
        #[serde(rename = "type")]
        ty: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calib: Option<TextSource>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_bpw: Option<f64>,
        /// `REGEX=TYPE` per-tensor types (as `frugal quantize --tensor-type`), first match wins.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tensor_types: Vec<String>,
    },
    Eval {},
    /// The current model's inference energy (`frugal measure`'s LM workload); with
    /// `baseline = true` the recipe's model is measured too and the break-even of the steps so
    /// far computed.
    Measure {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompts: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeats: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pue: Option<f64>,
        #[serde(default)]
        baseline: bool,
    },
    /// The report so far against a policy file; a failed clause fails the run (after the
    /// report is written).
    Check {
        policy: PathBuf,
    },
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Prune { .. } => "prune",
            Step::Distill { .. } => "distill",
            Step::Quantize { .. } => "quantize",
            Step::Eval {} => "eval",
            Step::Measure { .. } => "measure",
            Step::Check { .. } => "check",
        }
    }
}

/// The evaluation settings of `eval` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    pub text: TextSource,
    #[serde(default = "default_chunks")]
    pub chunks: usize,
}

fn default_chunks() -> usize {
    8
}

/// A recipe file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub model: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSettings>,
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

fn bad(path: &Path, m: String) -> Error {
    Error::Recipe {
        path: path.to_path_buf(),
        reason: m,
    }
}

impl Recipe {
    /// Reads and checks a recipe; relative paths are made relative to the recipe's folder.
    pub fn load(path: &Path) -> Result<Recipe, Error> {
        let len = std::fs::metadata(path)
            .map_err(|e| bad(path, e.to_string()))?
            .len();
        if len > MAX_RECIPE_BYTES {
            return Err(bad(path, format!("{len} bytes; a recipe is at most 1 MiB")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        // toml's messages name the line, the column and the key.
        let mut r: Recipe = toml::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `~/…` is the home folder; other relative paths are the recipe's folder's.
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let fix = |p: &mut PathBuf| {
            if let (Ok(rest), Some(h)) = (p.strip_prefix("~"), &home) {
                *p = h.join(rest);
            } else if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut r.model);
        for s in &mut r.steps {
            if let Step::Check { policy } = s {
                fix(policy);
            }
        }
        let mut sources: Vec<&mut TextSource> = Vec::new();
        if let Some(e) = &mut r.eval {
            sources.push(&mut e.text);
        }
        for s in &mut r.steps {
            match s {
                Step::Prune { calib: Some(t), .. } | Step::Quantize { calib: Some(t), .. } => {
                    sources.push(t)
                }
                Step::Distill { text, .. } => sources.push(text),
                _ => {}
            }
        }
        for t in sources {
            if t.file.is_some() == t.brown.is_some() {
                return Err(bad(
                    path,
                    format!("a text names exactly one of `file` or `brown`: {t:?}"),
                ));
            }
            if let Some(f) = &mut t.file {
                fix(f);
            }
        }
        if r.steps.is_empty() {
            return Err(bad(path, "no [[step]]".into()));
        }
        for s in &r.steps {
            match s {
                Step::Check { policy } => {
                    // Read now: a bad policy stops the recipe before any work.
                    load_policy(policy)?;
                }
                Step::Measure {
                    prompts,
                    tokens,
                    repeats,
                    region,
                    pue,
                    ..
                } => {
                    for (k, v) in [
                        ("prompts", prompts),
                        ("tokens", tokens),
                        ("repeats", repeats),
                    ] {
                        if *v == Some(0) {
                            return Err(bad(path, format!("measure: `{k}` must be at least 1")));
                        }
                    }
                    if let Some(g) = region {
                        frugal_energy::carbon::intensity(g)
                            .map_err(|e| bad(path, e.to_string()))?;
                    }
                    match (pue, region) {
                        (Some(_), None) => {
                            return Err(bad(path, "measure: `pue` needs a `region`".into()))
                        }
                        (Some(p), _) if !(p.is_finite() && *p >= 1.0) => {
                            return Err(bad(path, format!("measure: `pue` {p} must be at least 1")))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if r.steps.iter().any(|s| matches!(s, Step::Eval {})) && r.eval.is_none() {
            return Err(bad(path, "an `eval` step needs an [eval] section".into()));
        }
        Ok(r)
    }
}

/// Reads a policy file.
fn load_policy(p: &Path) -> Result<frugal_report::policy::Policy, Error> {
    frugal_report::policy::Policy::load(p).map_err(|e| bad(p, e.to_string()))
}

/// One step's record in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub index: usize,
    pub kind: String,
    /// The step's settings as the recipe gave them (what resuming compares).
    pub settings: Step,
    pub input: String,
    /// The file written (eval steps write none).
    pub output: Option<String>,
    /// The step's own report (as `frugal prune/distill/quantize/eval --json` prints it).
    pub result: serde_json::Value,
    pub seconds: f64,
    /// The step's energy (a [`frugal_energy::EnergyReport`]), with its provenance.
    #[serde(default)]
    pub energy: serde_json::Value,
    /// Kept from an earlier run of the same recipe.
    #[serde(default)]
    pub resumed: bool,
}

/// `report.json` of a recipe run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeReport {
    /// [`crate::REPORT_SCHEMA_VERSION`] (0 in reports written before it was recorded).
    #[serde(default)]
    pub schema_version: u32,
    pub frugal_version: String,
    pub recipe: String,
    pub recipe_file: String,
    pub model: String,
    pub steps: Vec<StepRecord>,
    pub seconds: f64,
}

/// The text of a source as a file: a `file` as it is, Brown files written into `dir`.
fn text_file(t: &TextSource, dir: &Path) -> Result<PathBuf, Error> {
    if let Some(f) = &t.file {
        return Ok(f.clone());
    }
    let sel = t.brown.as_deref().expect("checked at load");
    let brown = frugal_formats::assets::brown_dir();
    let ids = frugal_formats::brown::select_ids(&brown, sel)?;
    let p = dir.join(format!("brown-{sel}.txt"));
    let text = frugal_formats::brown::plain_text(&brown, &ids)?;
    write_atomic(&p, &[], |f| f.write_all(text.as_bytes()))?;
    Ok(p)
}

fn calib_spec(t: &TextSource, dir: &Path, tokens: usize, ctx: usize) -> Result<CalibSpec, Error> {
    Ok(CalibSpec {
        text: text_file(t, dir)?,
        ctx: t.ctx.unwrap_or(ctx),
        max_tokens: t.tokens.unwrap_or(tokens),
    })
}

fn score(method: &str, path: &Path) -> Result<frugal_compress::prune::Score, Error> {
    use frugal_compress::prune::Score;
    Ok(match method {
        "magnitude" => Score::Magnitude,
        "wanda" => Score::Wanda,
        "sparsegpt" => Score::SparseGpt,
        m => {
            return Err(bad(
                path,
                format!("prune method `{m}` (magnitude, wanda, sparsegpt)"),
            ))
        }
    })
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("reports serialize")
}

/// Runs one step from `input`, writing `output`; `done` is the report so far.
#[allow(clippy::too_many_arguments)]
fn run_step(
    recipe: &Recipe,
    path: &Path,
    step: &Step,
    input: &Path,
    output: &Path,
    dir: &Path,
    done: &RecipeReport,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(serde_json::Value, bool), Error> {
    Ok(match step {
        Step::Prune {
            method,
            sparsity,
            pattern,
            structure,
            calib,
        } => {
            let score = score(method, path)?;
            let calib = calib
                .as_ref()
                .map(|t| calib_spec(t, dir, 32768, 512))
                .transpose()?;
            let unit = structure
                .as_deref()
                .map(|s| {
                    serde_json::from_value::<frugal_compress::structured::Unit>(
                        serde_json::Value::String(s.to_string()),
                    )
                    .map_err(|_| {
                        bad(
                            path,
                            format!("structure `{s}` (mlp-neurons, attn-heads, layers)"),
                        )
                    })
                })
                .transpose()?;
            match unit {
                Some(unit) => {
                    if pattern.is_some() {
                        return Err(bad(path, "a structured prune takes no pattern".into()));
                    }
                    let opts = frugal_compress::structured::StructuredOptions {
                        unit,
                        score,
                        fraction: *sparsity,
                        multiple: 32,
                        damp: 0.01,
                    };
                    let s = quantize::structured_prune_step(
                        input,
                        output,
                        &opts,
                        calib.as_ref(),
                        None,
                        progress,
                    )?;
                    (json(&s), true)
                }
                None => {
                    let pattern = pattern
                        .as_deref()
                        .unwrap_or("unstructured")
                        .parse()
                        .map_err(|e: String| bad(path, e))?;
                    let opts = frugal_compress::prune::GgufPruneOptions {
                        score,
                        sparsity: *sparsity,
                        pattern,
                        damp: 0.01,
                    };
                    let s =
                        quantize::prune_step(input, output, &opts, calib.as_ref(), None, progress)?;
                    (json(&s), true)
                }
            }
        }
        Step::Distill {
            text,
            epochs,
            lr,
            alpha,
            top_k,
        } => {
            let d = frugal_compress::lm_distill::LmDistillOptions::default();
            let job = quantize::LmDistillJob {
                student: input.to_path_buf(),
                teacher: recipe.model.clone(),
                text: calib_spec(text, dir, 16384, 256)?,
                out: output.to_path_buf(),
                opts: frugal_compress::lm_distill::LmDistillOptions {
                    epochs: epochs.unwrap_or(d.epochs),
                    lr: lr.unwrap_or(d.lr),
                    alpha: alpha.unwrap_or(d.alpha),
                    top_k: top_k.unwrap_or(d.top_k),
                    ..d
                },
                // A re-run of the recipe continues an interrupted distillation of the same
                // student, and starts afresh when the step before it changed.
                resume: true,
                discard_stale: true,
            };
            (
                json(&quantize::lm_distill_step(&job, None, progress)?),
                true,
            )
        }
        Step::Quantize {
            ty,
            method,
            calib,
            target_bpw,
            tensor_types,
        } => {
            use frugal_compress::quant::{gptq, Method, Target};
            let t = match frugal_compress::quant::target(ty) {
                Some(Target::Gguf(t)) => t,
                _ => {
                    return Err(bad(
                        path,
                        format!("quantize type `{ty}` is not a GGUF type"),
                    ))
                }
            };
            let mut opts = frugal_compress::quant::QuantizeOptions::new(t);
            opts.target_bpw = *target_bpw;
            opts.overrides = tensor_types
                .iter()
                .map(|t| {
                    t.parse()
                        .map_err(|e: String| bad(path, format!("tensor_types: {e}")))
                })
                .collect::<Result<_, _>>()?;
            let g = gptq::GptqOptions {
                damp: 0.01,
                act_order: true,
            };
            let bw = |awq, gptq| Method::Blockwise(gptq::BlockwiseOptions { awq, gptq });
            let method = match method.as_deref().unwrap_or("rtn") {
                "rtn" => Method::Rtn,
                "gptq" => bw(false, Some(g)),
                "awq" => bw(true, None),
                "awq-gptq" => bw(true, Some(g)),
                m => {
                    return Err(bad(
                        path,
                        format!("quantize method `{m}` (rtn, gptq, awq, awq-gptq)"),
                    ))
                }
            };
            let calib = calib
                .as_ref()
                .map(|t| calib_spec(t, dir, 32768, 512))
                .transpose()?;
            let s = quantize::quantize_step(
                input,
                output,
                &opts,
                calib.as_ref(),
                method,
                None,
                progress,
            )?;
            (json(&s), true)
        }
        Step::Eval {} => {
            let e = recipe.eval.as_ref().expect("checked at load");
            let spec = EvalSpec {
                text: text_file(&e.text, dir)?,
                ctx: e.text.ctx.unwrap_or(512),
                chunks: Some(e.chunks),
            };
            (
                json(&quantize::judge(input, &recipe.model, &spec, progress)?),
                false,
            )
        }
        Step::Measure {
            prompts,
            tokens,
            repeats,
            region,
            pue,
            baseline,
        } => {
            let job = |model: &Path| crate::measure::MeasureJob {
                model: model.to_path_buf(),
                data: None,
                queries: prompts.unwrap_or(4),
                repeats: repeats.unwrap_or(3),
                warmup: 1,
                tokens: tokens.unwrap_or(8),
                weights: crate::measure::Weights::Stored,
                meters: frugal_energy::MeterOptions::detect_cpu(),
            };
            progress("measure", 0, 1 + usize::from(*baseline));
            let mut w = crate::measure::measure_model(&job(input))?;
            if let Some(g) = region {
                let c = crate::measure::CarbonOptions {
                    grid: frugal_energy::carbon::intensity(g)
                        .map_err(|e| bad(path, e.to_string()))?,
                    pue: pue.unwrap_or(1.0),
                    embodied_kg: 1000.0,
                    life_years: 4.0,
                };
                crate::measure::add_carbon(&mut w, &c)?;
            }
            if *baseline {
                progress("measure", 1, 2);
                let b = json(&crate::measure::measure_model(&job(&recipe.model))?);
                // The cost: the energy of every compression step so far (not of evaluations,
                // measurements or checks). A resumed distillation's record holds only the
                // energy of the process that finished it.
                let sources: Vec<serde_json::Value> = done
                    .steps
                    .iter()
                    .filter(|s| matches!(s.kind.as_str(), "prune" | "distill" | "quantize"))
                    .flat_map(|s| s.energy["sources"].as_array().cloned().unwrap_or_default())
                    .collect();
                let cost = serde_json::json!({ "energy": { "sources": sources } });
                crate::measure::add_break_even(&mut w, &b, &cost)?;
            }
            (json(&w), false)
        }
        Step::Check { policy } => {
            let p = load_policy(policy)?;
            let m = frugal_report::metrics::Metrics::from_report(&json(done));
            let outcomes = frugal_report::policy::check(&p, &m);
            (
                serde_json::json!({
                    "policy": policy.display().to_string(),
                    "pass": outcomes.iter().all(|o| o.pass),
                    "outcomes": outcomes,
                }),
                false,
            )
        }
    })
}

/// Runs the recipe in `path` into `out_dir`, resuming an earlier run of it there.
pub fn run_recipe(
    path: &Path,
    out_dir: &Path,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(RecipeReport, PathBuf), Error> {
    let t0 = std::time::Instant::now();
    let recipe = Recipe::load(path)?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::OutputDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let report_path = crate::report_path(out_dir);
    // What an earlier run of this recipe left.
    let earlier: Vec<StepRecord> = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<RecipeReport>(&b).ok())
        .filter(|r| r.model == recipe.model.display().to_string())
        .map(|r| r.steps)
        .unwrap_or_default();
    let mut report = RecipeReport {
        schema_version: crate::REPORT_SCHEMA_VERSION,
        frugal_version: env!("CARGO_PKG_VERSION").into(),
        recipe: recipe.name.clone(),
        recipe_file: path.display().to_string(),
        model: recipe.model.display().to_string(),
        steps: Vec::new(),
        seconds: 0.0,
    };
    let mut input = recipe.model.clone();
    let mut reuse = true;
    for (i, step) in recipe.steps.iter().enumerate() {
        let output = out_dir.join(format!("{:02}-{}.gguf", i + 1, step.kind()));
        // A check is always run again: its policy file may have changed in place.
        let is_check = matches!(step, Step::Check { .. });
        let kept = earlier.get(i).filter(|r| {
            !is_check
                && reuse
                && r.settings == *step
                && r.input == input.display().to_string()
                && r.output.as_ref().is_none_or(|o| Path::new(o).is_file())
        });
        let record = match kept {
            Some(r) => StepRecord {
                resumed: true,
                ..r.clone()
            },
            None => {
                reuse &= is_check;
                let t = std::time::Instant::now();
                let meters = frugal_energy::MeterOptions::detect_cpu();
                let session = frugal_energy::Session::start(&meters)
                    .map_err(|e| bad(path, format!("energy meter: {e}")))?;
                let (result, writes) = run_step(
                    &recipe, path, step, &input, &output, out_dir, &report, progress,
                )?;
                let energy = session
                    .stop()
                    .map_err(|e| bad(path, format!("energy meter: {e}")))?;
                StepRecord {
                    index: i + 1,
                    kind: step.kind().into(),
                    settings: step.clone(),
                    input: input.display().to_string(),
                    output: writes.then(|| output.display().to_string()),
                    result,
                    seconds: t.elapsed().as_secs_f64(),
                    energy: json(&energy),
                    resumed: false,
                }
            }
        };
        if let Some(o) = &record.output {
            input = PathBuf::from(o);
        }
        report.steps.push(record);
        report.seconds = t0.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec_pretty(&report).expect("report serializes");
        write_atomic(&report_path, &[], |f| f.write_all(&bytes))?;
    }
    Ok((report, report_path))
}

impl RecipeReport {
    /// The check steps that failed: (step index, policy, failed clauses).
    pub fn failed_checks(&self) -> Vec<(usize, String, Vec<String>)> {
        self.steps
            .iter()
            .filter(|s| s.kind == "check" && s.result["pass"] == false)
            .map(|s| {
                let failed = s.result["outcomes"]
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter(|o| o["pass"] == false)
                            .map(|o| o["key"].as_str().unwrap_or("?").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    s.index,
                    s.result["policy"].as_str().unwrap_or("?").to_string(),
                    failed,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Recipe, Error> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        Recipe::load(&p)
    }

    /// Every recipe shipped in `recipes/` parses and passes the checks.
    #[test]
    fn shipped_recipes_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let r = Recipe::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(
                    !r.model.starts_with("~"),
                    "home not expanded: {}",
                    r.model.display()
                );
                n += 1;
            }
        }
        assert!(n > 0);
    }

    #[test]
    fn recipes_parse_and_bad_ones_name_the_problem() {
        let r = load(
            "name = \"x\"\nmodel = \"m.gguf\"\n[[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.2\nstructure = \"mlp-neurons\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q8_0\"\n",
        )
        .unwrap();
        assert_eq!(r.steps.len(), 2);
        assert!(r.model.is_absolute() || r.model.ends_with("m.gguf"));
        for (text, needle) in [
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"shrink\"\n", "shrink"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"eval\"\nfoo = 1\n", "foo"),
            ("name = \"x\"\nmodel = \"m\"\nstep = []\n", "no [[step]]"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"eval\"\n", "[eval]"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"check\"\npolicy = \"none.toml\"\n", "none.toml"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"measure\"\nregion = \"Atlantis\"\n", "Atlantis"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"measure\"\ntokens = 0\n", "`tokens` must be at least 1"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"measure\"\npue = 1.2\n", "`pue` needs a `region`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"prune\"\nmethod = \"wanda\"\nsparsity = \"half\"\n", "expected f64"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"distill\"\ntext = { file = \"a\", brown = \"ca01\" }\n", "exactly one"),
            ("name = [\n", "line 1"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
    }
}
