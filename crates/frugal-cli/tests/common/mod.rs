//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test file uses its own subset

/// A temporary folder with `calib.txt` (Brown ca01–ca02) and `eval.txt` (cj13–cj16).
pub fn brown_calib_and_eval() -> Option<tempfile::TempDir> {
    let brown = frugal_formats::assets::require_or_skip(
        frugal_formats::assets::brown_dir(),
        "Brown corpus",
    )?;
    let dir = tempfile::tempdir().unwrap();
    for (file, ids) in [("calib.txt", "ca01-ca02"), ("eval.txt", "cj13-cj16")] {
        let ids = frugal_formats::brown::select_ids(&brown, ids).unwrap();
        std::fs::write(
            dir.path().join(file),
            frugal_formats::brown::plain_text(&brown, &ids).unwrap(),
        )
        .unwrap();
    }
    Some(dir)
}

/// SmolLM2's GGUF from the asset cache (skipped, or failed under FRUGAL_REQUIRE_ASSETS=1).
pub fn smollm2() -> Option<std::path::PathBuf> {
    frugal_formats::assets::require_or_skip(frugal_formats::assets::smollm2_gguf(), "SmolLM2")
}

/// Parses a JSON report Frugal wrote (a command's `--json` output or a `report.json`) after
/// validating it against the published schema, `docs/report.schema.json`, with Python's
/// `jsonschema` (an implementation independent of the Rust types the schema comes from). The
/// Python is `FRUGAL_GGUF_PYTHON` (`scripts/setup-python.sh`); without it the validation is
/// skipped with a message, or fails under `FRUGAL_REQUIRE_ASSETS=1`.
pub fn report(bytes: &[u8]) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_slice(bytes).expect("a JSON report");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(py) = std::env::var_os("FRUGAL_GGUF_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("FRUGAL_REQUIRE_ASSETS").is_none(),
            "FRUGAL_GGUF_PYTHON is not set; scripts/test sets it from scripts/setup-python.sh"
        );
        eprintln!("skipping the schema check: FRUGAL_GGUF_PYTHON is not set");
        return value;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = std::process::Command::new(py)
        .arg(root.join("scripts/validate-report.py"))
        .arg(root.join("docs/report.schema.json"))
        .arg(file.path())
        .output()
        .expect("the validator runs");
    assert!(
        out.status.success(),
        "the report does not validate against docs/report.schema.json:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(bytes)
            .chars()
            .take(2000)
            .collect::<String>()
    );
    value
}

/// Validates an exported standard record against its official JSON Schema with Python's
/// `jsonschema`: `spdx` (SPDX 3.0.1, the schema in docs/schemas checked by its sha256) or
/// `cyclonedx` (CycloneDX 1.6, from the pinned cyclonedx-python-lib wheel that
/// `scripts/fetch-assets.sh` caches). `Err` holds the validator's words; `Ok(false)` when the
/// Python or the schemas are missing (skipped, or a failure under FRUGAL_REQUIRE_ASSETS=1).
pub fn validate_standard(kind: &str, file: &std::path::Path) -> Result<bool, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let required = std::env::var_os("FRUGAL_REQUIRE_ASSETS").is_some();
    let Some(py) = std::env::var_os("FRUGAL_GGUF_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            !required,
            "FRUGAL_GGUF_PYTHON is not set; scripts/test sets it"
        );
        eprintln!("skipping the {kind} schema check: FRUGAL_GGUF_PYTHON is not set");
        return Ok(false);
    };
    let mut cmd = std::process::Command::new(py);
    if kind == "spdx" {
        cmd.arg(root.join("scripts/validate-spdx.py"));
    } else {
        let dir = frugal_formats::assets::cyclonedx_schemas_dir();
        if !dir.is_dir() {
            assert!(
                !required,
                "{} is missing: run scripts/fetch-assets.sh",
                dir.display()
            );
            eprintln!(
                "skipping the CycloneDX schema check: {} is missing",
                dir.display()
            );
            return Ok(false);
        }
        cmd.arg(root.join("scripts/validate-cyclonedx.py"))
            .arg("--schema-dir")
            .arg(dir);
    }
    let out = cmd.arg(file).output().expect("the validator runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Err(text),
        _ => panic!("the {kind} validator could not run: {text}"),
    }
}

/// SmolLM2 cut to its first `n` blocks, written to `dir` as `smollm2-{n}.gguf`: those blocks'
/// real weights, the embedding (tied to the output) and the final norm as stored, and
/// `llama.block_count = n`. The tests whose point is a mechanism rather than the model's
/// quality (resuming a killed run, the MPI splits, `tune`'s search and its recipe) run on it:
/// the same code paths with about a third of the arithmetic at `n = 6`. The full model's
/// figures are the quality tests' and BENCHMARKS.md's.
pub fn smollm2_first_blocks(dir: &std::path::Path, n: usize) -> Option<std::path::PathBuf> {
    use frugal_compress::quant::mix::layer_of;
    use frugal_formats::gguf::{write_gguf_file, GgufFile, TensorToWrite, Value};
    let src = smollm2()?;
    let f = GgufFile::open(&src).unwrap();
    let mut set = false;
    let metadata: Vec<(String, Value)> = f
        .header
        .metadata
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("llama.block_count", Value::U32(all)) => {
                assert!(n >= 1 && n < *all as usize, "{n} of {all} blocks");
                set = true;
                (k.clone(), Value::U32(n as u32))
            }
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert!(set, "llama.block_count (u32) in {}", src.display());
    let kept: Vec<_> = f
        .header
        .tensors
        .iter()
        .filter(|t| layer_of(&t.name).is_none_or(|i| i < n))
        .map(|t| (t, f.tensor_data(t)))
        .collect();
    let tensors: Vec<TensorToWrite<'_>> = kept
        .iter()
        .map(|(t, data)| TensorToWrite {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims,
            data,
        })
        .collect();
    let out = dir.join(format!("smollm2-{n}.gguf"));
    write_gguf_file(&out, &[&src], &metadata, &tensors).unwrap();
    Some(out)
}
