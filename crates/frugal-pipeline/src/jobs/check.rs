//! `frugal check`: a report against a sustainability policy — every model the report holds (or
//! the one `--model` names), clause by clause.

use super::{Job, Progress, ToText};
use crate::Error;
use frugal_formats::guard::IoPlan;
use frugal_report::policy::{Limit, Policy, Verdict};
use serde::Serialize;
use std::path::PathBuf;

/// The policy, the report it judges, and optionally the one model to judge.
#[derive(Debug, Clone)]
pub struct Check {
    pub policy: PathBuf,
    pub report: PathBuf,
    pub model: Option<String>,
}

/// One verdict per model: every clause that applies to its kind, with the report's figure,
/// the limit and the outcome.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CheckReport {
    pub policy: String,
    /// The report checked (its path).
    pub report_file: String,
    /// The command that wrote it (its `report`).
    pub report_kind: String,
    /// Every model passes.
    pub pass: bool,
    pub models: Vec<Verdict>,
}

impl Job for Check {
    type Report = CheckReport;
    const KIND: &'static str = "check";

    fn io_plan(&self) -> IoPlan {
        let mut p = IoPlan::new();
        p.input("--policy", &self.policy)
            .input("report", &self.report);
        p
    }

    fn run(&self, _progress: Progress) -> Result<CheckReport, Error> {
        let p = Policy::load(&self.policy)?;
        let report = crate::judge::read(&self.report)?;
        let report_kind = report.kind().to_string();
        let mut subjects = crate::judge::subjects(&report)?;
        if subjects.is_empty() {
            return Err(Error::Usage(format!(
                "{}: the report holds no model to judge",
                self.report.display()
            )));
        }
        if let Some(name) = &self.model {
            let names: Vec<String> = subjects.iter().map(|s| s.model.clone()).collect();
            subjects.retain(|s| &s.model == name);
            if subjects.is_empty() {
                return Err(Error::Usage(format!(
                    "--model {name}: the report holds no such model (it holds: {})",
                    names.join(", ")
                )));
            }
        }
        let models = subjects
            .iter()
            .map(|s| frugal_report::policy::check(&p, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CheckReport {
            policy: self.policy.display().to_string(),
            report_file: self.report.display().to_string(),
            report_kind,
            pass: models.iter().all(|v| v.pass),
            models,
        })
    }
}

impl CheckReport {
    /// The models that fail.
    pub fn failed(&self) -> usize {
        self.models.iter().filter(|v| !v.pass).count()
    }
}

impl ToText for CheckReport {
    fn to_text(&self) -> String {
        let mut t = String::new();
        for v in &self.models {
            t += &format!(
                "{} ({}): {}\n",
                v.model,
                v.kind.map_or("kind not given", |k| k.name()),
                if v.pass { "PASS" } else { "FAIL" }
            );
            for o in &v.clauses {
                let limit = match &o.limit {
                    Limit::Number(x) => format!("{x} {}", o.unit),
                    Limit::Require(b) => format!("required: {b}"),
                    Limit::Text(s) => s.clone(),
                    Limit::Grades(g) => format!("{g:?} {}", o.unit),
                };
                let value = o.value.map_or("-".to_string(), |v| format!("{v:.6}"));
                let key = match o.scope {
                    Some(k) => format!("[{}] {}", k.name(), o.key),
                    None => o.key.clone(),
                };
                t += &format!(
                    "  {} {:38} value {:>12}  limit {:<14} {}{}\n",
                    if o.pass { "PASS" } else { "FAIL" },
                    key,
                    value,
                    limit,
                    o.from
                        .as_deref()
                        .map(|f| format!("({f}) "))
                        .unwrap_or_default(),
                    o.note
                );
            }
        }
        t += &format!(
            "{}: {} of {} models pass\n",
            self.policy,
            self.models.len() - self.failed(),
            self.models.len()
        );
        t
    }
}
