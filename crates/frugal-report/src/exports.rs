//! The same energy record in the forms standards and hubs ask for:
//! - Hugging Face model-card front matter, `co2_eq_emissions` (grams CO₂e; `source`,
//!   `training_type`, `geographical_location`, `hardware_used`), per the Hub's model-card docs;
//! - an EU AI Act block for Annex XI, section 1, point 2(d)–(e) of Regulation (EU) 2024/1689
//!   (compute in FLOPs, training time, energy in MWh to two significant figures, and the method:
//!   measured or estimated from computational resources);
//! - a JSON record in the spirit of Boavizta's BoAmps data model (`header`, `task`, `measures`
//!   with `measurementMethod` and `powerConsumption` in kWh, `infrastructure`, `environment`).

use serde_json::{json, Value};

/// What the exports are made from.
#[derive(Debug, Clone)]
pub struct Record {
    pub seconds: f64,
    pub joules: f64,
    /// Every figure from a hardware counter.
    pub measured: bool,
    /// How the energy was obtained, in words (counters, or the estimate's model and constants).
    pub method: String,
    /// Operational emissions, grams CO₂e, and the grid region they were computed for.
    pub grams: Option<f64>,
    pub region: Option<String>,
    pub hardware: String,
    /// `pre-training`, `fine-tuning`, `quantization`, `inference`, …
    pub training_type: String,
    /// Floating-point operations of the work, when known.
    pub flops: Option<f64>,
}

/// `x` to two significant figures (as Annex XI energy is asked for).
pub fn two_significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let d = 10f64.powi(x.abs().log10().floor() as i32 - 1);
    (x / d).round() * d
}

/// The Hugging Face model-card front matter (YAML between `---` lines).
pub fn model_card(r: &Record) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut y = String::from("---\nco2_eq_emissions:\n");
    match r.grams {
        Some(g) => y.push_str(&format!("  emissions: {g}\n")),
        None => {
            y.push_str("  emissions: null  # no --region: energy known, emissions not computed\n")
        }
    }
    y.push_str(&format!(
        "  source: {}\n",
        q(&format!(
            "Frugal {} ({}: {})",
            env!("CARGO_PKG_VERSION"),
            if r.measured { "measured" } else { "estimated" },
            r.method
        ))
    ));
    y.push_str(&format!("  training_type: {}\n", q(&r.training_type)));
    if let Some(region) = &r.region {
        y.push_str(&format!("  geographical_location: {}\n", q(region)));
    }
    y.push_str(&format!("  hardware_used: {}\n---\n", q(&r.hardware)));
    y
}

impl EuAiAct {
    /// The Annex XI fields left empty ([`crate::metrics::EU_AI_ACT_FIELDS`] names them).
    pub fn missing(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.training_compute_flops.is_none() {
            m.push(crate::metrics::EU_AI_ACT_FIELDS[0].to_string());
        }
        if self.energy_method.trim().is_empty() {
            m.push(crate::metrics::EU_AI_ACT_FIELDS[3].to_string());
        }
        m
    }
}

/// The Annex XI 2(d)–(e) fields; the field names are those `require_eu_ai_act_fields` checks
/// ([`crate::metrics::EU_AI_ACT_FIELDS`]).
pub fn eu_ai_act(r: &Record) -> EuAiAct {
    EuAiAct {
        regulation: "Regulation (EU) 2024/1689, Annex XI, section 1, point 2(d)-(e)".into(),
        training_compute_flops: r.flops,
        training_time_hours: r.seconds / 3600.0,
        energy_mwh: two_significant(r.joules / 3.6e9),
        energy_method: format!(
            "{}: {}",
            if r.measured {
                "measured"
            } else {
                "estimated from computational resources"
            },
            r.method
        ),
    }
}

/// The EU AI Act Annex XI 2(d)–(e) block.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EuAiAct {
    pub regulation: String,
    /// Floating-point operations of the work, when known (`null` otherwise).
    pub training_compute_flops: Option<f64>,
    pub training_time_hours: f64,
    pub energy_mwh: f64,
    /// Measured (which counters) or estimated (which model).
    pub energy_method: String,
}

/// A BoAmps-style report (`powerConsumption` is energy in kWh, as that model defines it).
pub fn boamps(r: &Record, task_stage: &str) -> Value {
    json!({
        "header": {
            "formatVersion": "1.1.0",
            "reportStatus": "draft",
            "publisher": {"name": "Frugal", "confidentialityLevel": "public"},
        },
        "task": {"taskStage": task_stage, "taskFamily": "model compression", "algorithms": [], "dataset": []},
        "measures": [{
            "measurementMethod": format!("frugal {}", env!("CARGO_PKG_VERSION")),
            "cpuTrackingMode": if r.measured { "rapl" } else { "constant" },
            "powerConsumption": r.joules / 3.6e6,
            "measurementDuration": r.seconds,
        }],
        "infrastructure": {"infraType": "other", "components": [{"componentType": "cpu", "nbComponent": 1, "componentName": r.hardware}]},
        "environment": {"country": r.region},
        "quality": if r.measured { "high" } else { "low" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            seconds: 7200.0,
            joules: 1.234e9,
            measured: false,
            method: "process CPU time × TDP / logical CPUs".into(),
            grams: Some(19_210.0),
            region: Some("France".into()),
            hardware: "2 logical CPUs, AMD EPYC".into(),
            training_type: "fine-tuning".into(),
            flops: Some(3.1e15),
        }
    }

    #[test]
    fn annex_xi_energy_has_two_significant_figures_and_every_field() {
        assert_eq!(two_significant(0.34277), 0.34);
        assert_eq!(two_significant(1234.0), 1200.0);
        assert_eq!(two_significant(0.0), 0.0);
        let e = serde_json::to_value(eu_ai_act(&record())).unwrap();
        assert_eq!(e["energy_mwh"].as_f64(), Some(0.34));
        assert_eq!(e["training_time_hours"].as_f64(), Some(2.0));
        assert!(e["energy_method"]
            .as_str()
            .unwrap()
            .starts_with("estimated"));
        assert!(eu_ai_act(&record()).missing().is_empty());
        let no_flops = eu_ai_act(&Record {
            flops: None,
            ..record()
        });
        assert_eq!(no_flops.missing(), ["training_compute_flops"]);
    }

    #[test]
    fn model_card_block_is_grams_and_says_estimated() {
        let y = model_card(&record());
        assert!(
            y.starts_with("---\nco2_eq_emissions:\n  emissions: 19210\n"),
            "{y}"
        );
        assert!(
            y.contains("source: \"Frugal") && y.contains("(estimated: "),
            "{y}"
        );
        assert!(y.contains("geographical_location: \"France\""));
        assert!(y.ends_with("---\n"));
        let b = boamps(&record(), "finetuning");
        assert!(
            (b["measures"][0]["powerConsumption"].as_f64().unwrap() - 342.777_777).abs() < 1e-3
        );
        assert_eq!(b["quality"], "low");
    }
}
