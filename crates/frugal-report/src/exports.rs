//! The same energy record in the forms standards and hubs ask for:
//! - Hugging Face model-card front matter, `co2_eq_emissions` (grams CO₂e; `source`,
//!   `training_type`, `geographical_location`, `hardware_used`), per the Hub's model-card docs;
//! - an EU AI Act block for Annex XI, section 1, point 2(d)–(e) of Regulation (EU) 2024/1689
//!   (compute in FLOPs, training time, energy in MWh to two significant figures, and the method:
//!   measured or estimated from computational resources);
//! - a JSON record in the spirit of Boavizta's BoAmps data model (`header`, `task`, `measures`
//!   with `measurementMethod` and `powerConsumption` in kWh, `infrastructure`, `environment`);
//! - an SPDX 3.0.1 document with the AI profile: an `ai_AIPackage` whose `ai_energyConsumption`
//!   holds the energy of the measured activity in kWh (training, fine-tuning or inference);
//! - a CycloneDX 1.6 ML-BOM: a `machine-learning-model` component whose model card's
//!   `environmentalConsiderations.energyConsumptions` holds the activity, its energy (kWh) and
//!   its emissions (tCO2eq).
//!
//! All from one measurement ([`Record`]); the tests validate the SPDX and CycloneDX files
//! against the official JSON Schemas (scripts/validate-spdx.py, scripts/validate-cyclonedx.py).

use serde::Serialize;

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
    /// What the measured work was.
    pub training_type: Activity,
    /// The model the work made or served, and its version (for the SPDX and CycloneDX records).
    pub model: String,
    pub model_version: String,
    /// Who supplies the model (an organisation or person), when given.
    pub supplier: Option<String>,
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
    y.push_str(&format!("  training_type: {}\n", q(r.training_type.name())));
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

/// What a measured command did: one row per name, with the name each standard gives it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    PreTraining,
    Training,
    FineTuning,
    Distillation,
    Quantization,
    Pruning,
    Inference,
}

/// `(activity, its name, SPDX 3.0.1 energy list, CycloneDX 1.6 activity, BoAmps task stage)`.
/// SPDX has only training, fine-tuning and inference lists: compressing a trained model is
/// recorded as fine-tuning there (the document's comment names the activity); CycloneDX says
/// `other` for it.
const ACTIVITIES: &[(Activity, &str, SpdxList, &str, &str)] = &[
    (
        Activity::PreTraining,
        "pre-training",
        SpdxList::Training,
        "training",
        "training",
    ),
    (
        Activity::Training,
        "training",
        SpdxList::Training,
        "training",
        "training",
    ),
    (
        Activity::FineTuning,
        "fine-tuning",
        SpdxList::Finetuning,
        "fine-tuning",
        "finetuning",
    ),
    (
        Activity::Distillation,
        "distillation",
        SpdxList::Training,
        "training",
        "training",
    ),
    (
        Activity::Quantization,
        "quantization",
        SpdxList::Finetuning,
        "other",
        "quantization",
    ),
    (
        Activity::Pruning,
        "pruning",
        SpdxList::Finetuning,
        "other",
        "pruning",
    ),
    (
        Activity::Inference,
        "inference",
        SpdxList::Inference,
        "inference",
        "inference",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum SpdxList {
    Training,
    Finetuning,
    Inference,
}

impl Activity {
    fn row(self) -> &'static (Activity, &'static str, SpdxList, &'static str, &'static str) {
        ACTIVITIES
            .iter()
            .find(|r| r.0 == self)
            .expect("every activity has a row")
    }

    /// Its name (`fine-tuning`, …).
    pub fn name(self) -> &'static str {
        self.row().1
    }
}

/// The command line reads the same table (`--training-type`).
impl clap::ValueEnum for Activity {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [Activity; 7] = [
            Activity::PreTraining,
            Activity::Training,
            Activity::FineTuning,
            Activity::Distillation,
            Activity::Quantization,
            Activity::Pruning,
            Activity::Inference,
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A BoAmps-style report (`powerConsumption` is energy in kWh, as that model defines it).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmps {
    pub header: BoAmpsHeader,
    pub task: BoAmpsTask,
    pub measures: Vec<BoAmpsMeasure>,
    pub infrastructure: BoAmpsInfrastructure,
    pub environment: BoAmpsEnvironment,
    pub quality: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsHeader {
    pub format_version: &'static str,
    pub report_status: &'static str,
    pub publisher: BoAmpsPublisher,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsPublisher {
    pub name: &'static str,
    pub confidentiality_level: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsTask {
    pub task_stage: &'static str,
    pub task_family: &'static str,
    pub algorithms: Vec<String>,
    pub dataset: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsMeasure {
    pub measurement_method: String,
    pub cpu_tracking_mode: &'static str,
    pub power_consumption: f64,
    pub measurement_duration: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsInfrastructure {
    pub infra_type: &'static str,
    pub components: Vec<BoAmpsComponent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoAmpsComponent {
    pub component_type: &'static str,
    pub nb_component: u32,
    pub component_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoAmpsEnvironment {
    pub country: Option<String>,
}

/// The BoAmps-style record of `r`.
pub fn boamps(r: &Record) -> BoAmps {
    BoAmps {
        header: BoAmpsHeader {
            format_version: "1.1.0",
            report_status: "draft",
            publisher: BoAmpsPublisher {
                name: "Frugal",
                confidentiality_level: "public",
            },
        },
        task: BoAmpsTask {
            task_stage: r.training_type.row().4,
            task_family: "model compression",
            algorithms: Vec::new(),
            dataset: Vec::new(),
        },
        measures: vec![BoAmpsMeasure {
            measurement_method: format!("frugal {}", env!("CARGO_PKG_VERSION")),
            cpu_tracking_mode: if r.measured { "rapl" } else { "constant" },
            power_consumption: r.joules / 3.6e6,
            measurement_duration: r.seconds,
        }],
        infrastructure: BoAmpsInfrastructure {
            infra_type: "other",
            components: vec![BoAmpsComponent {
                component_type: "cpu",
                nb_component: 1,
                component_name: r.hardware.clone(),
            }],
        },
        environment: BoAmpsEnvironment {
            country: r.region.clone(),
        },
        quality: if r.measured { "high" } else { "low" },
    }
}

/// When and under which identifier a record is exported (given, so that tests are exact).
#[derive(Debug, Clone)]
pub struct Stamp {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ` (what SPDX 3.0.1 accepts: no fraction, no offset).
    pub created: String,
    /// A random UUID (lower-case hex), for the documents' identifiers.
    pub uuid: String,
}

impl Stamp {
    /// Now, with a fresh random UUID.
    pub fn now() -> Stamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            created: utc(now.as_secs()),
            uuid: uuid_v4(now.as_nanos() as u64),
        }
    }
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (civil date from days: Howard Hinnant's
/// algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A version-4 UUID from 128 random bits (std's randomly keyed hasher, mixed with `salt`).
fn uuid_v4(salt: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bits = [0u8; 16];
    for (i, half) in bits.chunks_exact_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt ^ i as u64);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    bits[6] = (bits[6] & 0x0f) | 0x40;
    bits[8] = (bits[8] & 0x3f) | 0x80;
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A decimal without exponent (what an SPDX `xsd:decimal` string must be).
fn decimal(x: f64) -> String {
    let s = format!("{:.12}", x.max(0.0));
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map_or(s.to_string(), |t| format!("{t}.0"))
}

/// An SPDX 3.0.1 JSON-LD document.
#[derive(Debug, Clone, Serialize)]
pub struct Spdx {
    #[serde(rename = "@context")]
    pub context: &'static str,
    #[serde(rename = "@graph")]
    pub graph: Vec<SpdxNode>,
}

/// The nodes of the document's graph.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum SpdxNode {
    CreationInfo {
        #[serde(rename = "@id")]
        id: String,
        #[serde(rename = "specVersion")]
        spec_version: &'static str,
        created: String,
        #[serde(rename = "createdBy")]
        created_by: Vec<String>,
        #[serde(rename = "createdUsing")]
        created_using: Vec<String>,
    },
    SoftwareAgent(SpdxElement),
    Agent(SpdxElement),
    Tool(SpdxElement),
    SpdxDocument {
        #[serde(flatten)]
        element: SpdxElement,
        #[serde(rename = "profileConformance")]
        profile_conformance: Vec<&'static str>,
        #[serde(rename = "rootElement")]
        root_element: Vec<String>,
        #[serde(rename = "element")]
        element_ids: Vec<String>,
    },
    #[serde(rename = "ai_AIPackage")]
    AiPackage(Box<SpdxAiPackage>),
}

/// What every SPDX element carries.
#[derive(Debug, Clone, Serialize)]
pub struct SpdxElement {
    #[serde(rename = "spdxId")]
    pub spdx_id: String,
    #[serde(rename = "creationInfo")]
    pub creation_info: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The AI profile's package: the model, and the energy of the measured activity.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)] // SPDX's own property names
pub struct SpdxAiPackage {
    #[serde(flatten)]
    pub element: SpdxElement,
    pub software_packageVersion: String,
    pub software_downloadLocation: String,
    pub software_primaryPurpose: &'static str,
    #[serde(rename = "releaseTime")]
    pub release_time: String,
    #[serde(rename = "suppliedBy")]
    pub supplied_by: String,
    pub ai_energyConsumption: SpdxEnergy,
}

/// `ai_EnergyConsumption`: one list per activity, kWh.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)] // SPDX's own property names
pub struct SpdxEnergy {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ai_trainingEnergyConsumption: Vec<SpdxEnergyDescription>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ai_finetuningEnergyConsumption: Vec<SpdxEnergyDescription>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ai_inferenceEnergyConsumption: Vec<SpdxEnergyDescription>,
}

#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)] // SPDX's own property names
pub struct SpdxEnergyDescription {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// kWh as an `xsd:decimal` string (no exponent).
    pub ai_energyQuantity: String,
    pub ai_energyUnit: &'static str,
}

/// SPDX's individual for "no assertion" where a location is not known.
const NO_ASSERTION: &str = "https://spdx.org/rdf/3.0.1/terms/Core/NoAssertionElement";

/// The SPDX 3.0.1 AI-profile document of `r`.
pub fn spdx(r: &Record, stamp: &Stamp) -> Spdx {
    let ns = format!("urn:uuid:{}", stamp.uuid);
    let id = |what: &str| format!("{ns}#{what}");
    let info = "_:creationinfo".to_string();
    let element = |what: &str, name: String, comment: Option<String>| SpdxElement {
        spdx_id: id(what),
        creation_info: info.clone(),
        name,
        comment,
    };
    let description = vec![SpdxEnergyDescription {
        kind: "ai_EnergyConsumptionDescription",
        ai_energyQuantity: decimal(r.joules / 3.6e6),
        ai_energyUnit: "kilowattHour",
    }];
    let list = r.training_type.row().2;
    let pick = |l: SpdxList| {
        if l == list {
            description.clone()
        } else {
            Vec::new()
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    Spdx {
        context: "https://spdx.org/rdf/3.0.1/spdx-context.jsonld",
        graph: vec![
            SpdxNode::CreationInfo {
                id: info.clone(),
                spec_version: "3.0.1",
                created: stamp.created.clone(),
                created_by: vec![id("frugal-agent")],
                created_using: vec![id("frugal")],
            },
            SpdxNode::SoftwareAgent(element("frugal-agent", "Frugal".into(), None)),
            SpdxNode::Agent(match &r.supplier {
                Some(name) => element("supplier", name.clone(), None),
                None => element(
                    "supplier",
                    "unknown".into(),
                    Some("The supplier was not given (frugal measure --supplier NAME).".into()),
                ),
            }),
            SpdxNode::Tool(element("frugal", format!("Frugal {version}"), None)),
            SpdxNode::SpdxDocument {
                element: element("document", format!("Energy record of {}", r.model), None),
                profile_conformance: vec!["core", "software", "ai"],
                root_element: vec![id("model")],
                element_ids: vec![
                    id("frugal-agent"),
                    id("supplier"),
                    id("frugal"),
                    id("model"),
                ],
            },
            SpdxNode::AiPackage(Box::new(SpdxAiPackage {
                element: element(
                    "model",
                    r.model.clone(),
                    Some(format!(
                        "Energy of {} ({}), {} J over {:.1} s: {} ({}).",
                        r.training_type,
                        match list {
                            SpdxList::Training => "ai_trainingEnergyConsumption",
                            SpdxList::Finetuning => "ai_finetuningEnergyConsumption",
                            SpdxList::Inference => "ai_inferenceEnergyConsumption",
                        },
                        r.joules,
                        r.seconds,
                        if r.measured { "measured" } else { "estimated" },
                        r.method
                    )),
                ),
                software_packageVersion: r.model_version.clone(),
                software_downloadLocation: NO_ASSERTION.into(),
                software_primaryPurpose: "model",
                release_time: stamp.created.clone(),
                supplied_by: id("supplier"),
                ai_energyConsumption: SpdxEnergy {
                    kind: "ai_EnergyConsumption",
                    ai_trainingEnergyConsumption: pick(SpdxList::Training),
                    ai_finetuningEnergyConsumption: pick(SpdxList::Finetuning),
                    ai_inferenceEnergyConsumption: pick(SpdxList::Inference),
                },
            })),
        ],
    }
}

/// A CycloneDX 1.6 BOM.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycloneDx {
    pub bom_format: &'static str,
    pub spec_version: &'static str,
    pub serial_number: String,
    pub version: u32,
    pub metadata: CdxMetadata,
    pub components: Vec<CdxComponent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdxMetadata {
    pub timestamp: String,
    pub tools: CdxTools,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdxTools {
    pub components: Vec<CdxTool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdxTool {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdxComponent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "bom-ref")]
    pub bom_ref: String,
    pub name: String,
    pub version: String,
    pub properties: Vec<CdxProperty>,
    pub model_card: CdxModelCard,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdxProperty {
    pub name: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdxModelCard {
    pub considerations: CdxConsiderations,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdxConsiderations {
    pub environmental_considerations: CdxEnvironment,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdxEnvironment {
    pub energy_consumptions: Vec<CdxEnergyConsumption>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdxEnergyConsumption {
    pub activity: &'static str,
    /// Who provided the energy: not known to a meter on this machine (none listed).
    pub energy_providers: Vec<CdxProvider>,
    pub activity_energy_cost: CdxMeasure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub co2_cost_equivalent: Option<CdxMeasure>,
    pub properties: Vec<CdxProperty>,
}

#[derive(Debug, Clone, Serialize)]
pub enum CdxProvider {}

#[derive(Debug, Clone, Serialize)]
pub struct CdxMeasure {
    pub value: f64,
    pub unit: &'static str,
}

/// The CycloneDX 1.6 ML-BOM of `r`: the model as a `machine-learning-model` component whose
/// model card holds the activity's energy (kWh) and, with a region, its emissions (tCO2eq).
pub fn cyclonedx(r: &Record, stamp: &Stamp) -> CycloneDx {
    let provenance = vec![
        CdxProperty {
            name: "frugal:energy-provenance",
            value: if r.measured { "measured" } else { "estimated" }.into(),
        },
        CdxProperty {
            name: "frugal:energy-method",
            value: r.method.clone(),
        },
        CdxProperty {
            name: "frugal:activity",
            value: r.training_type.name().into(),
        },
    ];
    CycloneDx {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: format!("urn:uuid:{}", stamp.uuid),
        version: 1,
        metadata: CdxMetadata {
            timestamp: stamp.created.clone(),
            tools: CdxTools {
                components: vec![CdxTool {
                    kind: "application",
                    name: "frugal",
                    version: env!("CARGO_PKG_VERSION"),
                }],
            },
        },
        components: vec![CdxComponent {
            kind: "machine-learning-model",
            bom_ref: "model".into(),
            name: r.model.clone(),
            version: r.model_version.clone(),
            properties: provenance.clone(),
            model_card: CdxModelCard {
                considerations: CdxConsiderations {
                    environmental_considerations: CdxEnvironment {
                        energy_consumptions: vec![CdxEnergyConsumption {
                            activity: r.training_type.row().3,
                            energy_providers: Vec::new(),
                            activity_energy_cost: CdxMeasure {
                                value: r.joules / 3.6e6,
                                unit: "kWh",
                            },
                            co2_cost_equivalent: r.grams.map(|g| CdxMeasure {
                                value: g / 1e6,
                                unit: "tCO2eq",
                            }),
                            properties: provenance,
                        }],
                    },
                },
            },
        }],
    }
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
            training_type: Activity::FineTuning,
            model: "student.safetensors".into(),
            model_version: "1".into(),
            supplier: None,
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
        let b = serde_json::to_value(boamps(&record())).unwrap();
        assert!(
            (b["measures"][0]["powerConsumption"].as_f64().unwrap() - 342.777_777).abs() < 1e-3
        );
        assert_eq!(b["quality"], "low");
        assert_eq!(b["task"]["taskStage"], "finetuning");
    }

    /// The SPDX and CycloneDX records carry the one measurement in their standard's units and
    /// names (the official schemas are checked in the CLI tests, with Python's jsonschema).
    #[test]
    fn spdx_and_cyclonedx_hold_the_measurement() {
        let stamp = Stamp {
            created: utc(1_796_256_000),
            uuid: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
        };
        assert_eq!(stamp.created, "2026-12-03T00:00:00Z");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400 + 86_399), "2000-02-29T23:59:59Z");
        let r = record();
        let s = serde_json::to_value(spdx(&r, &stamp)).unwrap();
        let pkg = &s["@graph"][5];
        assert_eq!(pkg["type"], "ai_AIPackage");
        let e = &pkg["ai_energyConsumption"]["ai_finetuningEnergyConsumption"][0];
        // 1.234 GJ = 342.777… kWh, as a decimal string with no exponent.
        assert_eq!(e["ai_energyQuantity"], "342.777777777778");
        assert_eq!(e["ai_energyUnit"], "kilowattHour");
        assert!(pkg["ai_energyConsumption"]["ai_trainingEnergyConsumption"].is_null());
        assert!(pkg["comment"].as_str().unwrap().contains("estimated"));
        assert_eq!(s["@graph"][0]["created"], "2026-12-03T00:00:00Z");
        assert_eq!(decimal(2.5e-9), "0.000000002500".trim_end_matches('0'));
        assert_eq!(decimal(3.0), "3.0");
        let c = serde_json::to_value(cyclonedx(
            &Record {
                grams: Some(19_210.0),
                ..r.clone()
            },
            &stamp,
        ))
        .unwrap();
        assert_eq!(
            c["serialNumber"],
            "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100"
        );
        let m = &c["components"][0];
        assert_eq!(m["type"], "machine-learning-model");
        let ec = &m["modelCard"]["considerations"]["environmentalConsiderations"]
            ["energyConsumptions"][0];
        assert_eq!(ec["activity"], "fine-tuning");
        assert!((ec["activityEnergyCost"]["value"].as_f64().unwrap() - 342.777_777_8).abs() < 1e-6);
        assert_eq!(ec["co2CostEquivalent"]["unit"], "tCO2eq");
        assert!((ec["co2CostEquivalent"]["value"].as_f64().unwrap() - 0.01921).abs() < 1e-12);
        // A quantization is fine-tuning to SPDX and `other` to CycloneDX.
        let q = Record {
            training_type: Activity::Quantization,
            ..r
        };
        let s = serde_json::to_value(spdx(&q, &stamp)).unwrap();
        assert!(
            s["@graph"][5]["ai_energyConsumption"]["ai_finetuningEnergyConsumption"].is_array()
        );
        let c = serde_json::to_value(cyclonedx(&q, &stamp)).unwrap();
        assert_eq!(
            c["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]
                ["energyConsumptions"][0]["activity"],
            "other"
        );
        let u = Stamp::now();
        assert_eq!(u.uuid.len(), 36);
        assert_eq!(&u.uuid[14..15], "4");
        assert_ne!(u.uuid, Stamp::now().uuid);
    }
}
