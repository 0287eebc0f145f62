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

use crate::steps::{self, CalibSpec, EvalSpec};
use crate::{checks, Error};
use frugal_formats::output::write_atomic;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest recipe file read.
const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// Where a step's text comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
        /// An importance matrix in llama.cpp's format (as `frugal quantize --imatrix`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        imatrix: Option<PathBuf>,
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
    /// Whether the step writes a model file.
    fn writes(&self) -> bool {
        matches!(
            self,
            Step::Prune { .. } | Step::Distill { .. } | Step::Quantize { .. }
        )
    }

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
        let text = frugal_formats::guard::read_text_capped(path, "recipe", MAX_RECIPE_BYTES)
            .map_err(|e| bad(path, e.to_string()))?;
        Recipe::parse(&text, path)
    }

    /// Parses and checks a recipe's text (as read from `path`): every step's values, with the
    /// step's line; the policies it names are read.
    pub fn parse(text: &str, path: &Path) -> Result<Recipe, Error> {
        // toml's messages name the line, the column and the key.
        let mut r: Recipe = toml::from_str(text).map_err(|e| bad(path, e.to_string()))?;
        // The line each `[[step]]` starts on, for messages about its values.
        #[derive(Deserialize)]
        struct Lines {
            #[serde(default)]
            step: Vec<toml::Spanned<toml::Value>>,
        }
        let lines: Vec<usize> = toml::from_str::<Lines>(text)
            .map(|l| {
                l.step
                    .iter()
                    .map(|s| text[..s.span().start.min(text.len())].matches('\n').count() + 1)
                    .collect()
            })
            .unwrap_or_default();
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
            match s {
                Step::Check { policy } => fix(policy),
                Step::Quantize {
                    imatrix: Some(m), ..
                } => fix(m),
                _ => {}
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
        // Every step's values are checked now, with the step's line: a bad value in step 3
        // must not be found after steps 1 and 2 have run.
        for (i, s) in r.steps.iter().enumerate() {
            let at = match lines.get(i) {
                Some(l) => format!("step {} (`{}`, line {l})", i + 1, s.kind()),
                None => format!("step {} (`{}`)", i + 1, s.kind()),
            };
            plan_step(s).map_err(|e| bad(path, format!("{at}: {e}")))?;
            if let Step::Check { policy } = s {
                // Read now: a bad policy stops the recipe before any work, and so does a
                // check with no model to judge or a policy with nothing for language models.
                let p = load_policy(policy).map_err(|e| bad(path, format!("{at}: {e}")))?;
                if !r.steps[..i].iter().any(Step::writes) {
                    return Err(bad(
                        path,
                        format!("{at}: a check step judges the model a step before it wrote: put it after a prune, distill or quantize step"),
                    ));
                }
                let kind = Some(frugal_report::metrics::ModelKind::LanguageModel);
                if !p.clauses_for(kind).iter().any(|c| c.is_limit()) {
                    return Err(bad(
                        path,
                        format!(
                            "{at}: {} has no clause for language models (it covers {})",
                            policy.display(),
                            p.covers()
                        ),
                    ));
                }
            }
        }
        if let Some(e) = &r.eval {
            check_text("`text`", &e.text).map_err(|m| bad(path, format!("[eval] {m}")))?;
            checks::count(e.chunks).map_err(|e| bad(path, format!("[eval] `chunks`: {e}")))?;
            if let Some(c) = e.text.ctx {
                checks::eval_ctx(c).map_err(|e| bad(path, format!("[eval] `ctx`: {e}")))?;
            }
        }
        if r.steps.iter().any(|s| matches!(s, Step::Eval {})) && r.eval.is_none() {
            return Err(bad(path, "an `eval` step needs an [eval] section".into()));
        }
        Ok(r)
    }

    /// Every path a run of this recipe into `out_dir` reads and writes, for the guard: the
    /// recipe, its model (the distillation teacher and the evaluation reference), its text
    /// files and policies; each step's output, the Brown texts written into the folder, and
    /// the report.
    pub fn io_plan(&self, path: &Path, out_dir: &Path) -> frugal_formats::guard::IoPlan {
        let mut plan = frugal_formats::guard::IoPlan::new();
        plan.input("recipe", path).add_input(
            "the recipe's model",
            &self.model,
            frugal_formats::guard::Expect::FileOrDir,
        );
        let mut brown = Vec::new();
        let mut text = |plan: &mut frugal_formats::guard::IoPlan, what: &str, t: &TextSource| match (
            &t.file, &t.brown,
        ) {
            (Some(f), _) => {
                plan.input(what, f);
            }
            (None, Some(sel)) if !brown.contains(sel) => brown.push(sel.clone()),
            _ => {}
        };
        if let Some(e) = &self.eval {
            text(&mut plan, "[eval] text", &e.text);
        }
        for (i, s) in self.steps.iter().enumerate() {
            let what = format!("step {} (`{}`)", i + 1, s.kind());
            match s {
                Step::Prune { calib: Some(t), .. } | Step::Quantize { calib: Some(t), .. } => {
                    text(&mut plan, &format!("{what} calib"), t)
                }
                Step::Distill { text: t, .. } => text(&mut plan, &format!("{what} text"), t),
                Step::Check { policy } => {
                    plan.input(format!("{what} policy"), policy);
                }
                _ => {}
            }
            if let Step::Quantize {
                imatrix: Some(m), ..
            } = s
            {
                plan.input(format!("{what} imatrix"), m);
            }
            if s.writes() {
                let out = step_output(out_dir, i, s);
                if matches!(s, Step::Distill { .. }) {
                    plan.output(format!("{what} checkpoint"), steps::checkpoint_path(&out));
                }
                plan.output(format!("{what} output"), out);
            }
        }
        for sel in brown {
            plan.output("Brown text", out_dir.join(format!("brown-{sel}.txt")));
        }
        plan.output("report", crate::report_path(out_dir));
        plan
    }
}

/// The file step `i` writes.
fn step_output(out_dir: &Path, i: usize, step: &Step) -> PathBuf {
    out_dir.join(format!("{:02}-{}.gguf", i + 1, step.kind()))
}

/// A step's values turned into the library's types and checked (methods, types, patterns,
/// numeric ranges): what [`Recipe::load`] checks for every step before any runs, and what
/// the step then runs with.
enum Planned {
    Prune {
        score: frugal_compress::prune::Score,
        unit: Option<frugal_compress::structured::Unit>,
        pattern: frugal_compress::prune::Pattern,
    },
    Quantize {
        opts: Box<frugal_compress::quant::QuantizeOptions>,
        method: frugal_compress::quant::Method,
    },
    Other,
}

fn check_text(what: &str, t: &TextSource) -> Result<(), String> {
    if let Some(n) = t.tokens {
        checks::count(n).map_err(|e| format!("{what} `tokens`: {e}"))?;
    }
    if let Some(c) = t.ctx {
        checks::seq_ctx(c).map_err(|e| format!("{what} `ctx`: {e}"))?;
    }
    if let Some(sel) = &t.brown {
        frugal_formats::brown::select_ids(&frugal_formats::assets::brown_dir(), sel)
            .map_err(|e| format!("{what} `brown`: {e}"))?;
    }
    Ok(())
}

fn plan_step(step: &Step) -> Result<Planned, String> {
    Ok(match step {
        Step::Prune {
            method,
            sparsity,
            pattern,
            structure,
            calib,
        } => {
            checks::sparsity(*sparsity).map_err(|e| format!("`sparsity`: {e}"))?;
            if let Some(t) = calib {
                check_text("`calib`", t)?;
            }
            let score = score(method)?;
            let unit = structure
                .as_deref()
                .map(|s| {
                    named::<frugal_compress::structured::Structure>(s, "`structure`")?
                        .unit()
                        .ok_or_else(|| {
                            "`structure = \"channels\"` is for CNN classifiers".to_string()
                        })
                })
                .transpose()?;
            if unit.is_some() && pattern.is_some() {
                return Err("a structured prune takes no `pattern`".into());
            }
            if unit == Some(frugal_compress::structured::Unit::Layers) && calib.is_none() {
                return Err("`structure = \"layers\"` needs a `calib` text".into());
            }
            if score != frugal_compress::prune::Score::Magnitude && calib.is_none() {
                return Err(format!("method `{method}` needs a `calib` text"));
            }
            let pattern = pattern
                .as_deref()
                .unwrap_or("unstructured")
                .parse()
                .map_err(|e: String| format!("`pattern`: {e}"))?;
            Planned::Prune {
                score,
                unit,
                pattern,
            }
        }
        Step::Distill {
            text,
            epochs,
            lr,
            alpha,
            top_k,
        } => {
            check_text("`text`", text)?;
            for (k, v) in [("epochs", epochs), ("top_k", top_k)] {
                if let Some(v) = v {
                    checks::count(*v).map_err(|e| format!("`{k}`: {e}"))?;
                }
            }
            if let Some(v) = lr {
                checks::lr(*v).map_err(|e| format!("`lr`: {e}"))?;
            }
            if let Some(v) = alpha {
                checks::alpha(*v).map_err(|e| format!("`alpha`: {e}"))?;
            }
            Planned::Other
        }
        Step::Quantize {
            ty,
            method,
            calib,
            target_bpw,
            tensor_types,
            ..
        } => {
            use frugal_compress::quant::{gptq, Method, Target};
            if let Some(t) = calib {
                check_text("`calib`", t)?;
            }
            let t = match frugal_compress::quant::target(ty) {
                Some(Target::Gguf(t)) => t,
                Some(_) => return Err(format!("`type`: `{ty}` is not a GGUF type")),
                None => {
                    return Err(format!(
                        "`type`: unknown type `{ty}` (one of: {})",
                        frugal_compress::quant::target_names().join(", ")
                    ))
                }
            };
            let mut opts = frugal_compress::quant::QuantizeOptions::new(t);
            if let Some(b) = target_bpw {
                checks::bpw(*b).map_err(|e| format!("`target_bpw`: {e}"))?;
            }
            opts.target_bpw = *target_bpw;
            opts.overrides = tensor_types
                .iter()
                .map(|t| {
                    t.parse()
                        .map_err(|e: String| format!("`tensor_types`: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let method = named::<frugal_compress::quant::MethodName>(
                method.as_deref().unwrap_or("rtn"),
                "`method`",
            )?
            .with(gptq::GptqOptions::default());
            if !matches!(method, Method::Rtn) && calib.is_none() {
                return Err("a `method` other than rtn needs a `calib` text".into());
            }
            Planned::Quantize {
                opts: Box::new(opts),
                method,
            }
        }
        Step::Eval {} | Step::Check { .. } => Planned::Other,
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
                if let Some(v) = v {
                    checks::count(*v).map_err(|e| format!("`{k}`: {e}"))?;
                }
            }
            if let Some(g) = region {
                frugal_energy::carbon::intensity(g).map_err(|e| format!("`region`: {e}"))?;
            }
            match (pue, region) {
                (Some(_), None) => return Err("`pue` needs a `region`".into()),
                (Some(p), _) if !(p.is_finite() && *p >= 1.0) => {
                    return Err(format!("`pue` {p} must be at least 1"))
                }
                _ => {}
            }
            Planned::Other
        }
    })
}

/// Reads a policy file.
fn load_policy(p: &Path) -> Result<frugal_report::policy::Policy, Error> {
    frugal_report::policy::Policy::load(p).map_err(|e| bad(p, e.to_string()))
}

/// One step's record in the report.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepRecord {
    pub index: usize,
    pub kind: String,
    /// The step's settings as the recipe gave them (what resuming compares).
    pub settings: Step,
    pub input: String,
    /// The file written (eval steps write none).
    pub output: Option<String>,
    /// Its size and hash when written (what a resumed run checks before reusing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_id: Option<OutputId>,
    /// The step's own report (as `frugal prune/distill/quantize/eval/measure --json` prints
    /// it), tagged by `step`.
    pub result: StepResult,
    pub seconds: f64,
    /// The step's energy, with its provenance.
    pub energy: frugal_energy::EnergyReport,
    /// Kept from an earlier run of the same recipe.
    #[serde(default)]
    pub resumed: bool,
}

/// What a step did: its command's report, tagged (`step`) by what ran.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum StepResult {
    Prune(steps::PruneStep),
    StructuredPrune(steps::StructuredPruneStep),
    Distill(steps::LmDistillStep),
    Quantize(steps::QuantizeStep),
    Eval(frugal_eval::LmEvalReport),
    Measure(crate::measure::WorkloadReport),
    Check(CheckStep),
}

impl StepResult {
    /// The evaluation of the step's output, if it ran one.
    pub fn quality(&self) -> Option<&frugal_eval::LmEvalReport> {
        match self {
            StepResult::Prune(s) => s.quality.as_ref(),
            StepResult::StructuredPrune(s) => s.quality.as_ref(),
            StepResult::Distill(s) => s.quality.as_ref(),
            StepResult::Quantize(s) => s.quality.as_ref(),
            StepResult::Eval(e) => Some(e),
            StepResult::Measure(_) | StepResult::Check(_) => None,
        }
    }
}

/// A check step's verdict on the model it follows: every clause of the policy that applies.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckStep {
    pub policy: String,
    pub pass: bool,
    pub verdict: frugal_report::policy::Verdict,
}

/// `report.json` of a recipe run.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecipeReport {
    pub frugal_version: String,
    pub recipe: String,
    pub recipe_file: String,
    /// The SHA-256 of the recipe file this run read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_sha256: Option<String>,
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
    let p = dir.join(format!("brown-{sel}.txt"));
    let (_, text) = frugal_formats::brown::selection_text(&brown, sel)?;
    write_atomic(&p, &[], |f| f.write_all(text.as_bytes()))?;
    Ok(p)
}

fn calib_spec(t: &TextSource, dir: &Path, tokens: usize, ctx: usize) -> Result<CalibSpec, Error> {
    Ok(CalibSpec {
        text: text_file(t, dir)?,
        ctx: t.ctx.unwrap_or(ctx),
        max_tokens: t.tokens.unwrap_or(tokens),
        label: None,
    })
}

fn score(method: &str) -> Result<frugal_compress::prune::Score, String> {
    named(method, "`method`")
}

/// A recipe key's value looked up in its option's name table.
fn named<E: clap::ValueEnum>(s: &str, key: &str) -> Result<E, String> {
    E::from_str(s, false).map_err(|_| format!("{key}: `{s}` ({})", checks::names::list::<E>()))
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
) -> Result<(StepResult, bool), Error> {
    Ok(match step {
        Step::Prune {
            sparsity, calib, ..
        } => {
            let Planned::Prune {
                score,
                unit,
                pattern,
            } = plan_step(step).map_err(|e| bad(path, e))?
            else {
                unreachable!("a prune step plans as a prune")
            };
            let calib = calib
                .as_ref()
                .map(|t| calib_spec(t, dir, 32768, 512))
                .transpose()?;
            match unit {
                Some(unit) => {
                    let opts = frugal_compress::structured::StructuredOptions {
                        unit,
                        score,
                        fraction: *sparsity,
                        multiple: 32,
                        damp: 0.01,
                    };
                    let s = steps::structured_prune_step(
                        input,
                        output,
                        &opts,
                        calib.as_ref(),
                        None,
                        progress,
                    )?;
                    (StepResult::StructuredPrune(s), true)
                }
                None => {
                    let opts = frugal_compress::prune::GgufPruneOptions {
                        score,
                        sparsity: *sparsity,
                        pattern,
                        damp: 0.01,
                    };
                    let s =
                        steps::prune_step(input, output, &opts, calib.as_ref(), None, progress)?;
                    (StepResult::Prune(s), true)
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
            let job = steps::LmDistillJob {
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
                max_memory: None,
            };
            (
                StepResult::Distill(steps::lm_distill_step(&job, None, progress)?),
                true,
            )
        }
        Step::Quantize { calib, imatrix, .. } => {
            let Planned::Quantize { mut opts, method } =
                plan_step(step).map_err(|e| bad(path, e))?
            else {
                unreachable!("a quantize step plans as a quantize")
            };
            if let Some(m) = imatrix {
                opts.imatrix = Some(frugal_compress::quant::imatrix_file::read_imatrix(m)?);
            }
            let calib = calib
                .as_ref()
                .map(|t| calib_spec(t, dir, 32768, 512))
                .transpose()?;
            let s =
                steps::quantize_step(input, output, &opts, calib.as_ref(), method, None, progress)?;
            (StepResult::Quantize(s), true)
        }
        Step::Eval {} => {
            let e = recipe.eval.as_ref().expect("checked at load");
            let spec = EvalSpec {
                text: text_file(&e.text, dir)?,
                ctx: e.text.ctx.unwrap_or(512),
                chunks: Some(e.chunks),
            };
            (
                StepResult::Eval(steps::judge(input, &recipe.model, &spec, progress)?),
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
                max_memory: None,
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
                let b = crate::measure::measure_model(&job(&recipe.model))?;
                // The cost: the energy of every compression step so far (not of evaluations,
                // measurements or checks). A resumed distillation's record holds only the
                // energy of the process that finished it.
                let sources: Vec<&frugal_energy::SourceReading> = done
                    .steps
                    .iter()
                    .filter(|s| matches!(s.kind.as_str(), "prune" | "distill" | "quantize"))
                    .flat_map(|s| &s.energy.sources)
                    .collect();
                crate::measure::add_break_even(&mut w, &b, &crate::measure::Cost::of(sources))?;
            }
            (StepResult::Measure(w), false)
        }
        Step::Check { policy } => {
            // The model this step follows (the latest written), judged on the report so far
            // exactly as `frugal check --model` judges it in report.json.
            let p = load_policy(policy)?;
            let model = input.display().to_string();
            let subject = crate::judge::recipe_subjects(done)
                .into_iter()
                .find(|s| s.model == model)
                .ok_or_else(|| {
                    bad(
                        path,
                        "a check step judges the model the steps before it wrote: put it after a prune, distill or quantize step".into(),
                    )
                })?;
            let verdict = frugal_report::policy::check(&p, &subject)?;
            (
                StepResult::Check(CheckStep {
                    policy: policy.display().to_string(),
                    pass: verdict.pass,
                    verdict,
                }),
                false,
            )
        }
    })
}

/// How a recipe run treats its output folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecipeRunOptions {
    /// Run into a folder that holds another run (another recipe's, or the embedded default's):
    /// its report is replaced and nothing of it is reused.
    pub force: bool,
}

/// The SHA-256 of a file, streamed, in hex.
fn sha256_file(p: &Path) -> Result<String, Error> {
    use sha2::Digest;
    let mut f = frugal_formats::guard::open_input(p, "step output")?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| frugal_formats::Error::io(p, "hashing", e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// A step output recorded when written: its size and hash, checked before it is reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutputId {
    pub bytes: u64,
    pub sha256: String,
}

impl OutputId {
    fn of(p: &Path) -> Result<OutputId, Error> {
        let bytes = std::fs::metadata(p)
            .map_err(|e| frugal_formats::Error::io(p, "reading metadata of", e))?
            .len();
        Ok(OutputId {
            bytes,
            sha256: sha256_file(p)?,
        })
    }

    /// Whether the file at `p` is still the one recorded (size first: cheap).
    fn matches(&self, p: &Path) -> bool {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == self.bytes)
            && sha256_file(p).is_ok_and(|h| h == self.sha256)
    }
}

/// What `out_dir` holds from an earlier run: the steps of this recipe's run to resume from, or
/// a refusal when it is another run's (unless forced: then nothing is reused).
fn earlier_run(recipe: &Recipe, out_dir: &Path, force: bool) -> Result<Vec<StepRecord>, Error> {
    let Some(bytes) = crate::refuse_foreign_run(out_dir, &recipe.name, force)? else {
        return Ok(Vec::new());
    };
    let foreign = |whose: String| Error::ForeignRun {
        dir: out_dir.to_path_buf(),
        whose,
    };
    let earlier = serde_json::from_slice::<RecipeReport>(&bytes).map_err(|e| {
        foreign(format!(
            "a report.json that does not read as a recipe run's ({e})"
        ))
    })?;
    let same_model = earlier.model == recipe.model.display().to_string()
        || frugal_formats::output::same_file(Path::new(&earlier.model), &recipe.model);
    if !same_model {
        return Err(foreign(format!(
            "the run of recipe `{}` on another model ({})",
            earlier.recipe, earlier.model
        )));
    }
    Ok(earlier.steps)
}

/// Runs the recipe in `path` into `out_dir`, resuming an earlier run of it there.
///
/// Before any step runs: the recipe is read and every step's values checked; every path the
/// run reads and writes goes through the guard (no output may be an input, a device or a
/// FIFO); a folder holding another run is refused unless `opts.force`; temporary files that
/// a killed run left are removed. A kept step's output is reused only if its size and
/// SHA-256 are those recorded when it was written.
pub fn run_recipe(
    path: &Path,
    out_dir: &Path,
    opts: &RecipeRunOptions,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(RecipeReport, PathBuf), Error> {
    let t0 = std::time::Instant::now();
    let recipe = Recipe::load(path)?;
    let created = std::fs::symlink_metadata(out_dir).is_err();
    std::fs::create_dir_all(out_dir).map_err(|source| Error::OutputDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let prepared = recipe
        .io_plan(path, out_dir)
        .check()
        .map_err(Error::from)
        .and_then(|()| earlier_run(&recipe, out_dir, opts.force));
    let earlier = match prepared {
        Ok(e) => e,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(out_dir);
            }
            return Err(e);
        }
    };
    frugal_formats::guard::remove_stale_partials(out_dir);
    // The evaluation text is long enough for its chunks in the model's tokens, and its ctx
    // within the model's: found now, not after the compression steps.
    if let (Some(e), true) = (
        &recipe.eval,
        recipe.steps.iter().any(|s| matches!(s, Step::Eval {})),
    ) {
        let spec = EvalSpec {
            text: text_file(&e.text, out_dir)?,
            ctx: e.text.ctx.unwrap_or(512),
            chunks: Some(e.chunks),
        };
        steps::check_eval(&recipe.model, Some(&spec))?;
    }
    let report_path = crate::report_path(out_dir);
    if opts.force {
        // The replaced run's Markdown and HTML reports would disagree with the new report.json.
        for f in ["report.md", "report.html"] {
            let _ = std::fs::remove_file(out_dir.join(f));
        }
    }
    let mut report = RecipeReport {
        frugal_version: env!("CARGO_PKG_VERSION").into(),
        recipe: recipe.name.clone(),
        recipe_file: path.display().to_string(),
        recipe_sha256: Some(sha256_file(path)?),
        model: recipe.model.display().to_string(),
        steps: Vec::new(),
        seconds: 0.0,
    };
    let mut input = recipe.model.clone();
    let mut reuse = true;
    for (i, step) in recipe.steps.iter().enumerate() {
        let output = step_output(out_dir, i, step);
        // A check is always run again: its policy file may have changed in place.
        let is_check = matches!(step, Step::Check { .. });
        let kept = earlier.get(i).filter(|r| {
            !is_check
                && reuse
                && r.settings == *step
                && (r.input == input.display().to_string()
                    || frugal_formats::output::same_file(Path::new(&r.input), &input))
                && match (&r.output, &r.output_id) {
                    (None, _) => true,
                    (Some(o), Some(id)) => id.matches(Path::new(o)),
                    // Written before outputs were recorded: not trusted.
                    (Some(_), None) => false,
                }
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
                    output_id: writes.then(|| OutputId::of(&output)).transpose()?,
                    result,
                    seconds: t.elapsed().as_secs_f64(),
                    energy,
                    resumed: false,
                }
            }
        };
        if let Some(o) = &record.output {
            input = PathBuf::from(o);
        }
        report.steps.push(record);
        report.seconds = t0.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec_pretty(&crate::schema::Document::new("run", &report))
            .expect("report serializes");
        write_atomic(&report_path, &[], |f| f.write_all(&bytes))?;
    }
    Ok((report, report_path))
}

impl RecipeReport {
    /// The report as `frugal run` prints it: each step's time, output and quality.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "frugal run: {} ({})\n  model    {}\n",
            self.recipe, self.recipe_file, self.model
        );
        for s in &self.steps {
            let q = s.result.quality();
            let kld = q.and_then(|q| q.result.kld.as_ref()).map(|k| k.mean);
            let ppl = q.map(|q| q.result.ppl);
            t += &format!(
                "  {:>2} {:9} {:>8.1} s{}  {}{}{}\n",
                s.index,
                s.kind,
                s.seconds,
                if s.resumed {
                    " (kept from the last run)"
                } else {
                    ""
                },
                s.output.as_deref().unwrap_or("-"),
                kld.map_or(String::new(), |k| format!("  KLD {k:.5}")),
                ppl.map_or(String::new(), |p| format!("  PPL {p:.3}")),
            );
        }
        t += &format!("  total    {:.1} s\n", self.seconds);
        t
    }

    /// The check steps that failed: (step index, policy, failed clauses).
    pub fn failed_checks(&self) -> Vec<(usize, String, Vec<String>)> {
        self.steps
            .iter()
            .filter_map(|s| match &s.result {
                StepResult::Check(c) if !c.pass => Some((
                    s.index,
                    c.policy.clone(),
                    c.verdict.failed().iter().map(|k| k.to_string()).collect(),
                )),
                _ => None,
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
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"measure\"\ntokens = 0\n", "`tokens`: 0 is not at least 1"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"measure\"\npue = 1.2\n", "`pue` needs a `region`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"prune\"\nmethod = \"wanda\"\nsparsity = \"half\"\n", "expected f64"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"distill\"\ntext = { file = \"a\", brown = \"ca01\" }\n", "exactly one"),
            ("name = [\n", "line 1"),
            // Issue #22: step 2's bad value was found only after step 1 had run, with no line.
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"eval\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q9_X\"\n[eval]\ntext = { file = \"t\" }\n", "step 2 (`quantize`, line 5): `type`: unknown type `Q9_X`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q8_0\"\nmethod = \"gptq\"\n", "needs a `calib` text"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q4_K\"\nmethod = \"fast\"\n", "`method`: `fast`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q4_K\"\ntensor_types = [\"(=Q8_0\"]\n", "`tensor_types`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q4_K\"\ntarget_bpw = 1.0\n", "`target_bpw`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 1.5\n", "`sparsity`: 1.5"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.5\npattern = \"5:4\"\n", "`pattern`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.5\nstructure = \"rows\"\n", "`structure`: `rows`"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"distill\"\ntext = { file = \"a\", ctx = 1 }\n", "`ctx`: 1"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"distill\"\ntext = { file = \"a\" }\nalpha = 2.0\n", "`alpha`: 2"),
            ("name = \"x\"\nmodel = \"m\"\n[[step]]\nkind = \"eval\"\n[eval]\ntext = { file = \"t\" }\nchunks = 0\n", "`chunks`: 0"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
    }
}
