//! The authorship metadata (`general.name`, `general.basename`, `general.size_label`,
//! `general.dataset.N.*`, …) that llama.cpp's converter derives from a checkpoint folder: its
//! model card's front matter, `config.json`'s `_name_or_path`, the folder's own name and the
//! parameter count, by the rules of gguf-py's `Metadata.load` (`metadata.py`, pinned sdist
//! llama-cpp-python 0.3.36), and `generation_config.json`'s sampling defaults. Frugal writes the
//! same keys in the same order so that its conversion is byte-identical to llama.cpp's.
//!
//! A card value of a type llama.cpp could not write (a number where a name is expected) is
//! refused with the key named, as llama.cpp's own writer fails on it.

use super::HfError;
use frugal_formats::gguf::{Array, Value};
use frugal_formats::hf::{HfFolder, MAX_SMALL_JSON};
use frugal_formats::model_card::Yaml;
use regex::Regex;
use std::sync::LazyLock;

/// The fields gathered, in the order llama.cpp writes them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metadata {
    pub sampling: Vec<(String, Value)>,
    pub name: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub organization: Option<String>,
    pub finetune: Option<String>,
    pub basename: Option<String>,
    pub description: Option<String>,
    pub size_label: Option<String>,
    pub license: Option<String>,
    pub license_name: Option<String>,
    pub license_link: Option<String>,
    pub source_url: Option<String>,
    pub source_doi: Option<String>,
    pub source_uuid: Option<String>,
    pub source_repo_url: Option<String>,
    pub base_models: Option<Vec<Source>>,
    pub datasets: Option<Vec<Source>>,
    pub tags: Option<Vec<String>>,
    pub languages: Option<Vec<String>>,
}

/// A base model or dataset entry: its fields in llama.cpp's writing order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Source {
    pub fields: Vec<(&'static str, String)>,
}

/// The fields an entry may carry, in writing order.
const SOURCE_FIELDS: [&str; 9] = [
    "name",
    "author",
    "version",
    "organization",
    "description",
    "url",
    "doi",
    "uuid",
    "repo_url",
];

impl Source {
    fn set(&mut self, k: &'static str, v: String) {
        self.fields.retain(|(f, _)| *f != k);
        self.fields.push((k, v));
    }
}

/// What llama.cpp's `get_model_id_components` splits a model id into.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IdParts {
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:(v|iter)?\d+([.]\d+)*)$").expect("regex"));
static QUANT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:i?q\d(_\w)*|b?fp?(16|32))$").expect("regex"));
static SIZE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl))$")
        .expect("regex")
});
static FINETUNE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:chat|instruct|vision|lora)$").expect("regex"));
static TITLE_KEEP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").expect("regex"));
static HF_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").expect("regex"));

/// Python's `str.islower()`: at least one cased character and no upper- or titlecase one.
fn py_islower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() {
            return false;
        }
        if c.is_lowercase() {
            cased = true;
        }
    }
    cased
}

/// Python's `str.title()`: a cased character after an uncased one is uppercased, one after a
/// cased one lowercased.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_uppercase() || c.is_lowercase();
        if cased {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// llama.cpp's `id_to_title`: words title-cased unless they carry capitals or are versions or
/// numbers.
pub fn id_to_title(s: &str) -> String {
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if py_islower(w) && !TITLE_KEEP.is_match(w) {
                py_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default, Clone)]
struct Types {
    basename: bool,
    size_label: bool,
    finetune: bool,
    version: bool,
    kind: bool,
}

impl Types {
    fn len(&self) -> usize {
        [
            self.basename,
            self.size_label,
            self.finetune,
            self.version,
            self.kind,
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// Python's `float()` of a size label's number (digits, one `.`).
fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.chars().any(|c| !(c.is_ascii_digit() || c == '.')) {
        return None;
    }
    s.parse().ok()
}

/// llama.cpp's `get_model_id_components`.
pub fn model_id_components(model_id: Option<&str>, total_params: i64) -> IdParts {
    let Some(id) = model_id else {
        return IdParts::default();
    };
    if id.contains(' ') {
        return IdParts {
            full_name: Some(id.to_string()),
            ..Default::default()
        };
    }
    let (mut org, full) = match id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut types: Vec<Types> = vec![Types::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if VERSION.is_match(&part) {
            types[i].version = true;
        } else if QUANT.is_match(&part) {
            types[i].kind = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && SIZE.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p[n - 1].is_ascii_digit() {
                // bloom-7b1 → 7.1b
                let last = p[n - 1];
                let unit = p[n - 2];
                p.truncate(n - 2);
                p.push('.');
                p.push(last);
                p.push(unit);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let n = p.len();
                let num: String = p[..n - 1].iter().collect();
                if let Some(v) = parse_float(&num) {
                    let unit = " KMBT".find(p[n - 1]).map_or(-1i32, |u| u as i32);
                    let label = if unit < 0 {
                        // Python's str.find returns -1: 1000^-1.
                        v / 1000.0
                    } else {
                        v * 1000f64.powi(unit)
                    };
                    let tp = total_params as f64;
                    let small_lora =
                        total_params < 0 && label < (total_params.unsigned_abs() / 8) as f64;
                    let far =
                        total_params > 0 && (label - tp).abs() > (7 * total_params / 8) as f64;
                    if small_lora || far {
                        types[i].finetune = true;
                        p[n - 1] = p[n - 1].to_ascii_lowercase();
                    }
                }
            }
            if types[i].len() == 0 {
                types[i].size_label = true;
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && FINETUNE.is_match(&part) {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                types[i].kind = true;
            } else {
                types[i].finetune = true;
            }
        }
    }
    // Word-based size labels go when a number-based one is present.
    let numeric = parts
        .iter()
        .zip(&types)
        .any(|(n, t)| t.size_label && n.chars().any(|c| c.is_ascii_digit()));
    if numeric {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.size_label && n.chars().all(char::is_alphabetic) {
                t.size_label = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let alpha_start = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.len() == 0 && alpha_start) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.len() == 0 {
                t.finetune = true;
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.basename && t.len() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Types) -> bool| -> Option<String> {
        let v: Vec<&str> = parts
            .iter()
            .zip(&types)
            .filter(|(_, t)| f(t))
            .map(|(p, _)| p.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join("-"))
    };
    let mut basename = join(&|t| t.basename);
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if t.size_label && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdParts {
        full_name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// llama.cpp's `model_weight_count_rounded_notation` (min_digits 2).
pub fn rounded_notation(n: u64) -> String {
    let x = n as f64;
    let (scaled, suffix) = if x > 1e12 {
        (x * 1e-12, "T")
    } else if x > 1e9 {
        (x * 1e-9, "B")
    } else if x > 1e6 {
        (x * 1e-6, "M")
    } else {
        (x * 1e-3, "K")
    };
    // Python's round() is half-to-even; str() of the integer, leading zeros stripped.
    let r = scaled.round_ties_even() as i64;
    let digits = r.to_string().trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

fn card_str(card: &[(String, Yaml)], key: &str) -> Result<Option<String>, HfError> {
    match card.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(HfError::Card(format!(
            "`{key}` is {other:?}; llama.cpp's converter writes it as a string and fails on this"
        ))),
    }
}

/// A card value read as a list, as llama.cpp reads one: a string is a list of one, a list is
/// itself, anything else is ignored.
fn card_list(card: &[(String, Yaml)], key: &str) -> Option<Vec<Yaml>> {
    match card.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(Yaml::List(l)) => Some(l.clone()),
        Some(s @ Yaml::Str(_)) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn strings(key: &str, items: Vec<Yaml>) -> Result<Vec<String>, HfError> {
    items
        .into_iter()
        .map(|y| match y {
            Yaml::Str(s) => Ok(s),
            other => Err(HfError::Card(format!(
                "`{key}` holds {other:?}, not a string"
            ))),
        })
        .collect()
}

/// Base models or datasets as llama.cpp reads them from the card.
fn sources(key: &str, items: Vec<Yaml>, total_params: i64) -> Result<Vec<Source>, HfError> {
    let mut out = Vec::new();
    for item in items {
        let mut s = Source::default();
        match item {
            Yaml::Str(id) => {
                let parts = if id.starts_with("http://")
                    || id.starts_with("https://")
                    || id.starts_with("ssh://")
                {
                    s.set("repo_url", id.clone());
                    HF_URL
                        .captures(&id)
                        .filter(|_| id.contains("huggingface.co"))
                        .map(|c| (model_id_components(Some(&c[1]), total_params), false))
                } else {
                    Some((model_id_components(Some(&id), total_params), true))
                };
                if let Some((p, with_url)) = parts {
                    if let Some(n) = &p.full_name {
                        s.set("name", id_to_title(n));
                    }
                    if let Some(o) = &p.org {
                        s.set("organization", id_to_title(o));
                    }
                    if let Some(v) = p.version {
                        s.set("version", v);
                    }
                    if with_url {
                        if let (Some(o), Some(n)) = (&p.org, &p.full_name) {
                            s.set("repo_url", format!("https://huggingface.co/{o}/{n}"));
                        }
                    }
                }
            }
            Yaml::Map(m) => {
                for (k, v) in m {
                    if let Some(f) = SOURCE_FIELDS.iter().find(|f| **f == k) {
                        match v {
                            Yaml::Str(v) => s.fields.push((f, v)),
                            other => {
                                return Err(HfError::Card(format!(
                                    "`{key}` entry field `{k}` is {other:?}, not a string"
                                )))
                            }
                        }
                    }
                }
                // Written in the field order, whatever the card's order.
                s.fields
                    .sort_by_key(|(f, _)| SOURCE_FIELDS.iter().position(|g| g == f));
            }
            other => {
                return Err(HfError::Card(format!(
                    "`{key}` entry {other:?} is not in a known format"
                )))
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Fills `m`'s empty fields from a model id's parts (llama.cpp's `_name_or_path` and
/// folder-name fallbacks).
fn fill_from_id(m: &mut Metadata, p: IdParts) {
    if m.name.is_none() {
        m.name = p.full_name.as_deref().map(id_to_title);
    }
    if m.organization.is_none() {
        m.organization = p.org.as_deref().map(id_to_title);
    }
    m.basename = m.basename.take().or(p.basename);
    m.finetune = m.finetune.take().or(p.finetune);
    m.version = m.version.take().or(p.version);
    m.size_label = m.size_label.take().or(p.size_label);
}

/// The sampling defaults of `generation_config.json` that llama.cpp writes (other keys are
/// ignored), typed as its writer types them.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize)]
pub struct GenerationConfig {
    pub sequence: Option<String>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub xtc_probability: Option<f32>,
    pub xtc_threshold: Option<f32>,
    pub temperature: Option<f32>,
    pub penalty_last_n: Option<i32>,
    pub penalty_repeat: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub mirostat: Option<i32>,
    pub mirostat_tau: Option<f32>,
    pub mirostat_eta: Option<f32>,
}

impl GenerationConfig {
    /// The folder's `generation_config.json`: `None` when absent or not valid JSON (llama.cpp
    /// skips such files); a value of the wrong type is refused (llama.cpp's writer fails on it).
    pub fn read(folder: &HfFolder) -> Result<Option<GenerationConfig>, HfError> {
        let path = folder.dir().join("generation_config.json");
        let Ok(Some(json)) = folder.json("generation_config.json", MAX_SMALL_JSON) else {
            return Ok(None);
        };
        serde_json::from_value(json)
            .map(Some)
            .map_err(|e| HfError::Config {
                path,
                field: "sampling".into(),
                reason: e.to_string(),
            })
    }

    /// The `general.sampling.*` keys, in llama.cpp's order.
    fn to_gguf(&self) -> Vec<(String, Value)> {
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let i = |v: Option<i32>| v.map(Value::I32);
        let f = |v: Option<f32>| v.map(Value::F32);
        [
            ("sequence", s(&self.sequence)),
            ("top_k", i(self.top_k)),
            ("top_p", f(self.top_p)),
            ("min_p", f(self.min_p)),
            ("xtc_probability", f(self.xtc_probability)),
            ("xtc_threshold", f(self.xtc_threshold)),
            ("temp", f(self.temperature)),
            ("penalty_last_n", i(self.penalty_last_n)),
            (
                "penalty_repeat",
                f(self.penalty_repeat.or(self.repetition_penalty)),
            ),
            ("mirostat", i(self.mirostat)),
            ("mirostat_tau", f(self.mirostat_tau)),
            ("mirostat_eta", f(self.mirostat_eta)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((format!("general.sampling.{k}"), v?)))
        .collect()
    }
}

/// What llama.cpp's `Metadata.load` derives for a folder named `folder_name` (the last part
/// of the path as given) with `total_params` parameters, its model card, `config.json`'s
/// `_name_or_path` and its generation config.
pub fn load(
    card: Option<&[(String, Yaml)]>,
    name_or_path: Option<&str>,
    generation: Option<&GenerationConfig>,
    folder_name: &str,
    total_params: i64,
) -> Result<Metadata, HfError> {
    let mut m = Metadata::default();
    if let Some(card) = card {
        let first = |keys: &[&str]| -> Result<Option<String>, HfError> {
            for k in keys {
                if let Some(v) = card_str(card, k)? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        };
        m.name = first(&["name", "model_name"])?;
        m.author = first(&["author", "model_author", "model_creator"])?;
        m.version = first(&["version", "model_version"])?;
        m.organization = first(&["organization", "model_organization"])?;
        m.description = first(&["description", "model_description"])?;
        m.finetune = first(&["finetune", "model_finetune"])?;
        m.basename = first(&["basename", "model_basename", "model_type"])?;
        m.size_label = first(&["size_label", "model_size_label"])?;
        m.source_url = first(&["url", "model_url"])?;
        m.source_doi = first(&["doi", "model_doi"])?;
        m.source_uuid = first(&["uuid", "model_uuid"])?;
        m.source_repo_url = first(&["repo_url", "model_repo_url"])?;
        for (field, keys) in [
            (0, ["base_model", "base_models", "base_model_sources"]),
            (1, ["datasets", "dataset", "dataset_sources"]),
        ] {
            // The first of the keys present decides, even when its value is empty.
            if let Some(k) = keys.iter().find(|k| card.iter().any(|(c, _)| c == *k)) {
                let items = card_list(card, k).unwrap_or_default();
                let v = sources(keys[0], items, total_params)?;
                if field == 0 {
                    m.base_models = Some(v);
                } else {
                    m.datasets = Some(v);
                }
            }
        }
        m.license = match card.iter().find(|(k, _)| k == "license").map(|(_, v)| v) {
            None | Some(Yaml::Null) => None,
            Some(Yaml::List(l)) => Some(strings("license", l.clone())?.join(",")),
            Some(_) => card_str(card, "license")?,
        };
        m.license_name = card_str(card, "license_name")?;
        m.license_link = card_str(card, "license_link")?;
        for (dst, keys) in [
            (&mut m.tags, ["tags", "pipeline_tag"]),
            (&mut m.languages, ["languages", "language"]),
        ] {
            for k in keys {
                if let Some(items) = card_list(card, k) {
                    dst.get_or_insert_with(Vec::new).extend(strings(k, items)?);
                }
            }
        }
    }
    if let Some(id) = name_or_path {
        if id.matches('/').count() <= 1 {
            fill_from_id(&mut m, model_id_components(Some(id), total_params));
        }
    }
    fill_from_id(&mut m, model_id_components(Some(folder_name), total_params));
    if let Some(g) = generation {
        m.sampling = g.to_gguf();
    }
    if m.name.is_none() {
        m.name = Some(folder_name.to_string());
    }
    if m.size_label.is_none() && total_params > 0 {
        m.size_label = Some(rounded_notation(total_params as u64));
    }
    Ok(m)
}

impl Metadata {
    /// The `general.*` keys llama.cpp's `set_gguf_meta_model` writes, in its order.
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let mut out = self.sampling.clone();
        let s = |k: &str, v: &Option<String>, out: &mut Vec<(String, Value)>| {
            if let Some(v) = v {
                out.push((format!("general.{k}"), Value::String(v.clone())));
            }
        };
        s("name", &self.name, &mut out);
        s("author", &self.author, &mut out);
        s("version", &self.version, &mut out);
        s("organization", &self.organization, &mut out);
        s("finetune", &self.finetune, &mut out);
        s("basename", &self.basename, &mut out);
        s("description", &self.description, &mut out);
        s("size_label", &self.size_label, &mut out);
        s("license", &self.license, &mut out);
        s("license.name", &self.license_name, &mut out);
        s("license.link", &self.license_link, &mut out);
        s("source.url", &self.source_url, &mut out);
        s("source.doi", &self.source_doi, &mut out);
        s("source.uuid", &self.source_uuid, &mut out);
        s("source.repo_url", &self.source_repo_url, &mut out);
        for (group, list) in [
            ("base_model", &self.base_models),
            ("dataset", &self.datasets),
        ] {
            if let Some(list) = list {
                out.push((
                    format!("general.{group}.count"),
                    Value::U32(list.len() as u32),
                ));
                for (i, e) in list.iter().enumerate() {
                    for f in SOURCE_FIELDS {
                        if let Some((_, v)) = e.fields.iter().find(|(g, _)| *g == f) {
                            out.push((
                                format!("general.{group}.{i}.{f}"),
                                Value::String(v.clone()),
                            ));
                        }
                    }
                }
            }
        }
        for (k, v) in [("tags", &self.tags), ("languages", &self.languages)] {
            if let Some(v) = v {
                out.push((
                    format!("general.{k}"),
                    Value::Array(Array::String(v.clone())),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_split_as_llama_cpp_splits_them() {
        let p = model_id_components(Some("nreimers/MiniLM-L6-H384-uncased"), 22_713_216);
        assert_eq!(p.full_name.as_deref(), Some("MiniLM-L6-H384-uncased"));
        assert_eq!(p.org.as_deref(), Some("nreimers"));
        assert_eq!(p.basename, None);
        let p = model_id_components(Some("all-MiniLM-L6-v2"), 22_713_216);
        assert_eq!(p.basename.as_deref(), Some("all-MiniLM-L6"));
        assert_eq!(p.version.as_deref(), Some("v2"));
        let p = model_id_components(Some("HuggingFaceTB/SmolLM2-135M-Instruct"), 134_515_008);
        assert_eq!(p.basename.as_deref(), Some("SmolLM2"));
        assert_eq!(p.size_label.as_deref(), Some("135M"));
        assert_eq!(p.finetune.as_deref(), Some("Instruct"));
        let p = model_id_components(Some("bigscience/bloom-7b1"), 7_000_000_000);
        assert_eq!(p.size_label.as_deref(), Some("7.1B"));
        // A size far from the parameter count is a context length, kept as a finetune.
        let p = model_id_components(Some("Llama-2-7b-32k"), 6_700_000_000);
        assert_eq!(p.finetune.as_deref(), Some("32k"));
        assert_eq!(id_to_title("s2orc"), "S2Orc");
        assert_eq!(id_to_title("flickr30k-captions"), "Flickr30K Captions");
        assert_eq!(
            id_to_title("MiniLM-L6-H384-uncased"),
            "MiniLM L6 H384 Uncased"
        );
        assert_eq!(rounded_notation(22_713_216), "23M");
        assert_eq!(rounded_notation(134_515_008), "135M");
        assert_eq!(rounded_notation(1_500_000), "1.5M");
    }

    #[test]
    fn generation_config_gives_llama_cpps_sampling_keys_in_its_order() {
        let g: GenerationConfig = serde_json::from_str(
            r#"{"temperature": 1, "top_p": 0.9, "repetition_penalty": 1.1, "top_k": 50, "bos_token_id": 1}"#,
        )
        .unwrap();
        let keys: Vec<(String, Value)> = g.to_gguf();
        assert_eq!(
            keys,
            vec![
                ("general.sampling.top_k".into(), Value::I32(50)),
                ("general.sampling.top_p".into(), Value::F32(0.9)),
                ("general.sampling.temp".into(), Value::F32(1.0)),
                ("general.sampling.penalty_repeat".into(), Value::F32(1.1)),
            ]
        );
        // llama.cpp's writer packs top_k as int32: a fractional one is refused.
        assert!(serde_json::from_str::<GenerationConfig>(r#"{"top_k": 50.5}"#).is_err());
    }
}
