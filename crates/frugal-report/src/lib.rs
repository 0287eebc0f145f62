//! Reports and the policy gate: the figures a report holds ([`metrics`]), and a TOML policy
//! whose clauses are checked against them ([`policy`]).

pub mod exports;
pub mod html;
pub mod metrics;
pub mod policy;
