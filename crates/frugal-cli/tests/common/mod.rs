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
