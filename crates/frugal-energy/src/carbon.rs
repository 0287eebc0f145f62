//! Carbon: grid intensity by region from a shipped, versioned table, emissions with PUE, the
//! Software Carbon Intensity score (SCI, ISO/IEC 21031:2024) with its embodied-emissions share,
//! and the break-even point of a compression.
//!
//! - Operational emissions O = E × PUE × I (E in kWh at the machine, I in gCO₂e/kWh).
//! - Embodied share M = TE × (TiR / EL) × (RR / ToR): TE the hardware's embodied emissions, TiR
//!   the time reserved, EL its expected life (same unit), RR/ToR the share of its resources
//!   reserved.
//! - SCI = (O + M) per functional unit R (per 1,000 tokens, per 1,000 queries, …).
//! - Break-even: the queries after which a compression's one-off energy (calibration,
//!   quantization, distillation) is paid back by its per-query saving.

use crate::{Error, Result};

/// The shipped table (`data/grid-intensity.csv`; its provenance in `data/README.md`).
pub const GRID_TABLE: &str = include_str!("../../../data/grid-intensity.csv");
/// The table's version: where its figures come from.
pub const GRID_TABLE_SOURCE: &str =
    "Our World in Data / Ember electricity-mix figures (2022–2023 for all but five regions; oldest 2009) via CodeCarbon 3.2.9 global_energy_mix.json";

/// One region's grid intensity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GridIntensity {
    pub iso3: String,
    pub country: String,
    pub g_per_kwh: f64,
    pub year: u32,
    pub source: String,
}

/// Every row of the shipped table.
pub fn grid_table() -> Vec<GridIntensity> {
    GRID_TABLE
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != 5 {
                return None;
            }
            Some(GridIntensity {
                iso3: f[0].to_string(),
                country: f[1].to_string(),
                g_per_kwh: f[2].parse().ok()?,
                year: f[3].parse().ok()?,
                source: f[4].to_string(),
            })
        })
        .collect()
}

/// The intensity of `region`: an ISO 3166-1 alpha-3 code (`FRA`) or a country name (`France`),
/// case-insensitive.
pub fn intensity(region: &str) -> Result<GridIntensity> {
    let r = region.trim();
    grid_table()
        .into_iter()
        .find(|g| g.iso3.eq_ignore_ascii_case(r) || g.country.eq_ignore_ascii_case(r))
        .ok_or_else(|| {
            Error::BadOptions(format!(
                "region `{region}` is not in the grid table (ISO 3166-1 alpha-3 codes such as FRA, USA, DEU, or country names)"
            ))
        })
}

/// Operational emissions in grams: `kwh × pue × g_per_kwh`.
pub fn operational_g(kwh: f64, pue: f64, g_per_kwh: f64) -> Result<f64> {
    if !(pue >= 1.0 && pue.is_finite()) {
        return Err(Error::BadOptions(format!("PUE {pue} must be at least 1")));
    }
    if !(kwh >= 0.0 && g_per_kwh >= 0.0) {
        return Err(Error::BadOptions(
            "energy and intensity must not be negative".into(),
        ));
    }
    Ok(kwh * pue * g_per_kwh)
}

/// The hardware's embodied emissions and how much of it a workload reserves.
#[derive(
    Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Embodied {
    /// TE: total embodied emissions of the hardware, grams.
    pub total_g: f64,
    /// EL: expected lifespan, hours.
    pub life_hours: f64,
    /// RR / ToR: the share of the hardware's resources reserved (e.g. cores used / cores).
    pub resource_share: f64,
}

impl Embodied {
    /// M = TE × (TiR / EL) × (RR / ToR) for `reserved_hours` (TiR).
    pub fn share_g(&self, reserved_hours: f64) -> Result<f64> {
        if !(self.life_hours > 0.0
            && (0.0..=1.0).contains(&self.resource_share)
            && self.total_g >= 0.0
            && reserved_hours >= 0.0)
        {
            return Err(Error::BadOptions(format!(
                "embodied emissions need TE ≥ 0, a positive life and a resource share in [0, 1]: {self:?}"
            )));
        }
        Ok(self.total_g * (reserved_hours / self.life_hours) * self.resource_share)
    }
}

/// SCI in grams per functional unit: ((E × I) + M) / R, E already including PUE if wanted.
pub fn sci_g_per_unit(operational_g: f64, embodied_g: f64, units: f64) -> Result<f64> {
    if units.is_nan() || units <= 0.0 {
        return Err(Error::BadOptions(format!(
            "the functional unit count R must be positive, got {units}"
        )));
    }
    Ok((operational_g + embodied_g) / units)
}

/// Queries after which a compression costing `cost_j` once is paid back by saving
/// `saving_j_per_query` on each query; `None` when it saves nothing.
pub fn break_even_queries(cost_j: f64, saving_j_per_query: f64) -> Option<f64> {
    (saving_j_per_query > 0.0).then(|| (cost_j / saving_j_per_query).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_over_200_regions_with_their_year() {
        let t = grid_table();
        assert!(t.len() >= 200, "{} rows", t.len());
        assert_eq!(t.len(), GRID_TABLE.lines().count() - 1, "every row parses");
        let fr = intensity("fra").unwrap();
        assert_eq!(
            (fr.country.as_str(), fr.g_per_kwh, fr.year),
            ("France", 56.039, 2023)
        );
        assert_eq!(intensity("Germany").unwrap().iso3, "DEU");
        assert!(intensity("Atlantis")
            .unwrap_err()
            .to_string()
            .contains("Atlantis"));
        assert!(t
            .iter()
            .all(|g| g.g_per_kwh >= 0.0 && g.g_per_kwh < 2000.0 && g.year >= 2000));
    }

    /// The SCI specification's embodied example: 1,000 kg of embodied emissions, a 4-year life,
    /// 1 hour reserved of the whole machine ≈ 28 g (28.54 g).
    #[test]
    fn embodied_share_matches_the_sci_spec_example() {
        let m = Embodied {
            total_g: 1_000_000.0,
            life_hours: 4.0 * 365.0 * 24.0,
            resource_share: 1.0,
        }
        .share_g(1.0)
        .unwrap();
        assert!((m - 28.538812785).abs() < 1e-6, "{m}");
        let bad = Embodied {
            resource_share: 1.5,
            ..Embodied {
                total_g: 1.0,
                life_hours: 1.0,
                resource_share: 1.0,
            }
        };
        assert!(bad.share_g(1.0).is_err());
    }

    /// Hand-computed: 0.2 kWh at PUE 1.5 in France (56.039 g/kWh) = 16.8117 g; plus an embodied
    /// share of 2 g; per 1,000 queries over 4,000 queries → 4.702925 g per 1,000 queries.
    #[test]
    fn sci_and_break_even_by_hand() {
        let i = intensity("FRA").unwrap().g_per_kwh;
        let o = operational_g(0.2, 1.5, i).unwrap();
        assert!((o - 16.8117).abs() < 1e-9, "{o}");
        let sci = sci_g_per_unit(o, 2.0, 4.0).unwrap();
        assert!((sci - 4.702925).abs() < 1e-9, "{sci}");
        assert!(sci_g_per_unit(o, 2.0, 0.0).is_err());
        assert!(operational_g(1.0, 0.9, i).is_err());
        // 3.6 MJ of GPTQ calibration, 12 J saved per query → 300,000 queries.
        assert_eq!(break_even_queries(3.6e6, 12.0), Some(300_000.0));
        assert_eq!(break_even_queries(3.6e6, 0.0), None);
        assert_eq!(break_even_queries(3.6e6, -1.0), None);
    }
}
