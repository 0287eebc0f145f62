//! `frugal check`: a report against a sustainability policy, clause by clause.

use super::{Job, Progress, ToText};
use crate::Error;
use frugal_formats::guard::IoPlan;
use frugal_report::policy::{Limit, Outcome, Policy};
use serde::Serialize;
use std::path::PathBuf;

/// The policy and the report it judges.
#[derive(Debug, Clone)]
pub struct Check {
    pub policy: PathBuf,
    pub report: PathBuf,
}

/// Every clause with the report's figure, the limit and the verdict.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CheckReport {
    pub policy: String,
    /// The report checked (its path).
    pub report_file: String,
    pub pass: bool,
    pub clauses: Vec<Outcome>,
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
        let p = Policy::load(&self.policy).map_err(|e| Error::Usage(e.to_string()))?;
        let r = crate::read_json_report(&self.report)?;
        let metrics = frugal_report::metrics::Metrics::from_report(&r)
            .map_err(|e| Error::Usage(format!("{}: {e}", self.report.display())))?;
        let clauses = frugal_report::policy::check(&p, &metrics);
        Ok(CheckReport {
            policy: self.policy.display().to_string(),
            report_file: self.report.display().to_string(),
            pass: clauses.iter().all(|o| o.pass),
            clauses,
        })
    }
}

impl CheckReport {
    /// The clauses that fail.
    pub fn failed(&self) -> usize {
        self.clauses.iter().filter(|o| !o.pass).count()
    }
}

impl ToText for CheckReport {
    fn to_text(&self) -> String {
        let mut t = String::new();
        for o in &self.clauses {
            let limit = match &o.limit {
                Limit::Number(x) => format!("{x} {}", o.unit),
                Limit::Require(b) => format!("required: {b}"),
                Limit::Text(s) => s.clone(),
                Limit::Grades(g) => format!("{g:?} {}", o.unit),
            };
            let value = o.value.map_or("-".to_string(), |v| format!("{v:.6}"));
            t += &format!(
                "{} {:26} value {:>12}  limit {:<14} {}{}\n",
                if o.pass { "PASS" } else { "FAIL" },
                o.key,
                value,
                limit,
                o.from
                    .as_deref()
                    .map(|f| format!("({f}) "))
                    .unwrap_or_default(),
                o.note
            );
        }
        t += &format!(
            "{}: {} of {} clauses pass\n",
            self.policy,
            self.clauses.len() - self.failed(),
            self.clauses.len()
        );
        t
    }
}
