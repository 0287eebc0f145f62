//! What `LlamaConfig::from_gguf` reads from an architecture's row and what it refuses, on
//! metadata-only files: Granite's multipliers and listed window, and the features no row runs
//! (a window where llama.cpp reads none, a missing pattern or logit scale, experts, sinks
//! outside `granite_swa`). Logits against llama.cpp are checked in
//! `frugal-eval/tests/arch_golden.rs`.

use frugal_formats::gguf::{write_gguf_file, Array, GgmlType, GgufFile, TensorToWrite, Value};
use frugal_models::llama::LlamaConfig;

/// A file of `arch` with two blocks, width 64 and 4 heads, plus `extra` keys (`{arch}.` is
/// prefixed) and, with `sinks`, one `blk.0.attn_sinks.weight`.
fn config(arch: &str, extra: &[(&str, Value)], sinks: bool) -> Result<LlamaConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut meta = vec![(
        "general.architecture".to_string(),
        Value::String(arch.into()),
    )];
    for (k, v) in [
        ("block_count", Value::U32(2)),
        ("embedding_length", Value::U32(64)),
        ("feed_forward_length", Value::U32(128)),
        ("attention.head_count", Value::U32(4)),
        ("vocab_size", Value::U32(32)),
        ("rope.freq_base", Value::F32(100_000.0)),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    {
        meta.push((format!("{arch}.{k}"), v));
    }
    let data = vec![0u8; 16];
    let tensors: Vec<TensorToWrite> = if sinks {
        vec![TensorToWrite {
            name: "blk.0.attn_sinks.weight",
            ggml_type: GgmlType::F32,
            dims: &[4],
            data: &data,
        }]
    } else {
        Vec::new()
    };
    write_gguf_file(&path, &[], &meta, &tensors).unwrap();
    LlamaConfig::from_gguf(&GgufFile::open(&path).unwrap()).map_err(|e| e.to_string())
}

fn refused(r: Result<LlamaConfig, String>, words: &[&str]) {
    let e = r.expect_err("refused");
    assert!(words.iter().all(|w| e.contains(w)), "{e}");
}

#[test]
fn granite_reads_its_multipliers_and_listed_window() {
    let c = config(
        "granite_swa",
        &[
            ("attention.sliding_window", Value::U32(16)),
            (
                "attention.sliding_window_pattern",
                Value::Array(Array::Bool(vec![true, false])),
            ),
            ("embedding_scale", Value::F32(12.0)),
            ("residual_scale", Value::F32(0.22)),
            ("logit_scale", Value::F32(8.0)),
            ("attention.scale", Value::F32(0.015625)),
        ],
        false,
    )
    .unwrap();
    assert_eq!(c.swa_window, 16);
    assert_eq!(c.swa_layers, vec![true, false]);
    // Granite's graph has one RoPE base for every layer.
    assert_eq!(c.rope_base_swa, c.rope_base);
    assert_eq!(c.embed_scale, 12.0);
    assert!((c.residual_scale - 0.22).abs() < 1e-6);
    assert_eq!(c.logit_scale, 8.0);
    assert_eq!(c.attn_scale, 0.015625);
    // Absent or zero multipliers are none, as llama.cpp reads them; the attention scale then
    // falls back to 1/√head_dim.
    let c = config(
        "granite",
        &[
            ("logit_scale", Value::F32(1.0)),
            ("residual_scale", Value::F32(0.0)),
        ],
        false,
    )
    .unwrap();
    assert_eq!((c.embed_scale, c.residual_scale), (1.0, 1.0));
    assert_eq!(c.attn_scale, 0.25);
    // Llama ignores Granite's keys, as llama.cpp does.
    let c = config("llama", &[("logit_scale", Value::F32(8.0))], false).unwrap();
    assert_eq!(c.logit_scale, 1.0);
}

#[test]
fn what_no_row_runs_is_refused_naming_the_key() {
    let window = ("attention.sliding_window", Value::U32(16));
    // llama.cpp runs `llama` and `mistral` files without a window whatever they say.
    refused(
        config("llama", std::slice::from_ref(&window), false),
        &["llama", "sliding_window"],
    );
    // granite_swa's windowed layers must be listed, as llama.cpp requires.
    refused(
        config(
            "granite_swa",
            &[window.clone(), ("logit_scale", Value::F32(1.0))],
            false,
        ),
        &["sliding_window_pattern", "missing"],
    );
    refused(
        config(
            "granite_swa",
            &[
                window.clone(),
                ("logit_scale", Value::F32(1.0)),
                ("attention.sliding_window_pattern", Value::U32(4)),
            ],
            false,
        ),
        &["sliding_window_pattern", "booleans"],
    );
    refused(
        config("granite", &[], false),
        &["granite.logit_scale", "missing"],
    );
    refused(
        config("granite", &[("logit_scale", Value::F32(f32::NAN))], false),
        &["logit_scale"],
    );
    refused(
        config(
            "granite",
            &[
                ("logit_scale", Value::F32(1.0)),
                ("expert_count", Value::U32(8)),
            ],
            false,
        ),
        &["expert_count", "experts"],
    );
    refused(config("llama", &[], true), &["attn_sinks", "llama"]);
}
