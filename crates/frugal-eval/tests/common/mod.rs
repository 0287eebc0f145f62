//! What the golden-file tests share: the golden JSON files of `tests/golden/` (made by the
//! `bench/make-golden*.sh` scripts from llama.cpp), the Brown texts they were made on, and the
//! summary of a long id list (count, first 64 ids, sha256 of the ids as a JSON list).
#![allow(dead_code)]

use frugal_formats::{assets, brown};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// `tests/golden/NAME`, parsed.
pub fn golden(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// An asset's path, or a skip (a failure under `FRUGAL_REQUIRE_ASSETS=1`).
pub fn require(p: PathBuf, what: &str) -> Option<PathBuf> {
    assets::require_or_skip(p, what)
}

/// The plain text of a Brown selection (`cj01-cj12`), as `frugal brown-text` writes it.
pub fn brown_text(selection: &str) -> Option<String> {
    let dir = require(assets::brown_dir(), "Brown corpus")?;
    let ids = brown::select_ids(&dir, selection).unwrap();
    Some(brown::plain_text(&dir, &ids).unwrap())
}

/// `ids` against a golden summary: count, first 64 ids and the sha256 of the ids written as a
/// JSON list (Python's `json.dumps`).
pub fn check_summary(ids: &[u32], g: &serde_json::Value, what: &str) {
    assert_eq!(ids.len() as u64, g["n_tokens"].as_u64().unwrap(), "{what}");
    let first: Vec<u32> = serde_json::from_value(g["first_64"].clone()).unwrap();
    assert_eq!(&ids[..64], &first[..], "{what}");
    assert_eq!(ids_sha256(ids), g["sha256_ids"].as_str().unwrap(), "{what}");
}

/// sha256 of `ids` written as Python writes a list (`str(ids)`, `json.dumps(ids)`).
pub fn ids_sha256(ids: &[u32]) -> String {
    let joined = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    format!("{:x}", sha2::Sha256::digest(joined.as_bytes()))
}

/// `model` evaluated on `text` (a file) with the golden's context and chunk count, loaded as
/// `load` says.
pub fn eval_as_golden(
    model: PathBuf,
    reference: Option<PathBuf>,
    text: PathBuf,
    g: &serde_json::Value,
    load: frugal_models::llama::LoadOptions,
) -> frugal_eval::LmEvalReport {
    let job = frugal_eval::LmEvalFiles {
        model,
        reference,
        text,
        opts_ctx: g["ctx"].as_u64().unwrap() as usize,
        max_chunks: Some(g["chunks"].as_u64().unwrap() as usize),
        load,
        split: frugal_eval::RankSplit::Chunks,
    };
    frugal_eval::eval_lm_files(&job, &|_, _| {}).unwrap()
}

/// Frugal's perplexity within 0.5 % of llama-perplexity's `want`.
pub fn assert_ppl_near(ppl: f64, want: f64, what: &str) {
    let rel = (ppl - want).abs() / want;
    assert!(
        rel < 0.005,
        "{what}: Frugal PPL {ppl:.4} vs llama-perplexity {want:.4} ({:.3} %)",
        rel * 100.0
    );
}

/// The Python that has gguf-py (`scripts/setup-python.sh`), or a skip.
#[allow(dead_code)]
pub fn gguf_python() -> Option<std::path::PathBuf> {
    match std::env::var_os("FRUGAL_GGUF_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("FRUGAL_REQUIRE_ASSETS").is_none(),
                "FRUGAL_GGUF_PYTHON is not set; scripts/test sets it from scripts/setup-python.sh"
            );
            eprintln!("skipping: FRUGAL_GGUF_PYTHON is not set");
            None
        }
    }
}

/// Writes `bench/make_arch_model.py`'s synthetic `arch` model (SmolLM2's weights) to `out`.
#[allow(dead_code)]
pub fn make_arch_model(py: &std::path::Path, arch: &str, out: &std::path::Path) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/make_arch_model.py");
    let o = std::process::Command::new(py)
        .arg(&script)
        .arg(arch)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
