//! `frugal export` of SmolLM2 and Gemma 3 270M against the peers
//! (`tests/golden/export_{smollm2,gemma3}.json`, made by `bench/make-golden-export.sh`):
//! llama.cpp's `convert_hf_to_gguf.py` of the exported folder gave the bytes `frugal convert`
//! must give at every `--outtype`; converting back reproduces the model's F32 tensors exactly;
//! and `transformers`, loading the folder, tokenized Brown cj01-cj12 to the ids Frugal's
//! tokenizer gives and computed logits that Frugal's F32 forward reproduces within float
//! tolerance.

mod common;

use common::{golden, require};
use frugal_compress::hf::{convert::convert, export::export, view, OutType};
use frugal_compress::quant::{quant_type, quantize_gguf, QuantizeOptions};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{Llama, LoadOptions};
use frugal_models::tokenizer::GgufTokenizer;
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_convert(dir: &Path, out: &Path, ty: OutType, want: &serde_json::Value) -> Vec<u8> {
    convert(dir, out, ty).unwrap();
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(
        bytes.len() as u64,
        want["bytes"].as_u64().unwrap(),
        "{ty:?}: size"
    );
    assert_eq!(
        sha256(&bytes),
        want["sha256"].as_str().unwrap(),
        "{ty:?}: bytes"
    );
    bytes
}

#[test]
fn smollm2_export_converts_back_byte_identical_and_matches_transformers() {
    let Some(model) = require(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    round_trip(&model, "smollm2", (272, 211), 300_000_000, true);
}

/// Gemma 3: a SentencePiece `tokenizer.model`, norms stored with llama.cpp's `+ 1`, a tied
/// embedding of 262,144 rows.
#[test]
fn gemma3_export_converts_back_byte_identical_and_matches_transformers() {
    let Some(model) = require(assets::gemma3_gguf(), "Gemma 3") else {
        return;
    };
    round_trip(&model, "gemma3", (236, 127), 600_000_000, false);
}

/// Qwen 2, Qwen 3 and Phi-3 (no checkpoint of them can be fetched here): SmolLM2's weights
/// written as each by `bench/make_arch_model.py` (seeded Q/K/V biases; seeded QK-norms; fused
/// weights), the bytes `arch_golden.rs` pins.
#[test]
fn qwen2_export_converts_back_byte_identical_and_matches_transformers() {
    synthetic("qwen2", (362, 0));
}

#[test]
fn qwen3_export_converts_back_byte_identical_and_matches_transformers() {
    synthetic("qwen3", (332, 0));
}

/// Llama 3's RoPE factors (`rope_freqs`), exported as `rope_scaling` and computed again by the
/// conversion back (within the ulp the export reports: the synthetic file's factors were
/// computed in f64, llama.cpp's in f32).
#[test]
fn llama3_export_converts_back_byte_identical_and_matches_transformers() {
    synthetic("llama3", (272, 0));
}

/// Phi-3: Q, K and V fused in one tensor, the MLP's gate and up in another.
#[test]
fn phi3_export_converts_back_byte_identical_and_matches_transformers() {
    synthetic("phi3", (182, 0));
}

fn synthetic(arch: &str, counts: (usize, usize)) {
    let Some(py) = common::gguf_python() else {
        return;
    };
    if require(assets::smollm2_gguf(), "SmolLM2").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join(format!("arch-{arch}.gguf"));
    common::make_arch_model(&py, arch, &model);
    round_trip(&model, arch, counts, 300_000_000, false);
}

/// Export of `model` against `tests/golden/export_{name}.json`: (tensors, dequantized) as
/// `counts`, a BF16 export under `bf16_bytes`; `bf16_view` also quantizes the BF16 folder.
fn round_trip(model: &Path, name: &str, counts: (usize, usize), bf16_bytes: u64, bf16_view: bool) {
    let Some(text) = common::brown_text("cj01-cj12") else {
        return;
    };
    let g = golden(&format!("export_{name}.json"));
    let t = tempfile::tempdir().unwrap();
    // The converter names the model after the folder: the golden saw it as {name}-export.
    let dir = t.path().join(format!("{name}-export"));
    let r = export(model, &dir, OutType::F32).unwrap();
    assert_eq!((r.tensors, r.dequantized), counts);
    assert_eq!(r.inexact_norm_values, 0);
    let rope_ulp = r.rope_freqs_ulp;
    assert_eq!(rope_ulp.is_some(), name == "llama3");

    // convert(export(x)) holds x's F32 tensors exactly, and llama.cpp's converter's bytes.
    let back = t.path().join("back-f32.gguf");
    check_convert(&dir, &back, OutType::F32, &g["convert"]["f32"]);
    let orig = GgufFile::open(model).unwrap();
    let conv = GgufFile::open(&back).unwrap();
    let dev = candle_core::Device::Cpu;
    for info in &orig.header.tensors {
        let want: Vec<f32> = frugal_models::gguf_load::load_f32(&orig, &info.name, &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let c = conv.tensor(&info.name).unwrap();
        assert_eq!(c.dims, info.dims, "{}", info.name);
        let got: Vec<f32> = conv
            .tensor_data(c)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // Llama 3's factors come back within the ulp the export reported; all else exactly.
        let tol = match (info.name.as_str(), rope_ulp) {
            ("rope_freqs.weight", Some(u)) => u,
            _ => 0,
        };
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits().abs_diff(b.to_bits()) <= tol),
            "{}: not reproduced exactly",
            info.name
        );
    }

    // transformers' tokenizer (the rebuilt tokenizer.json) and Frugal's give the same ids.
    let tg = &g["transformers"];
    let tok = GgufTokenizer::from_gguf(&conv).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(ids.len() as u64, tg["n_ids"].as_u64().unwrap());
    assert_eq!(common::ids_sha256(&ids), tg["ids_sha256"].as_str().unwrap());

    // Frugal's F32 forward against transformers' logits on the first 256 tokens.
    let n = 256;
    let m = Llama::load(&conv, LoadOptions::EXACT, &dev).unwrap();
    let logits: Vec<Vec<f32>> = m.forward(&ids[..n]).unwrap().to_vec2().unwrap();
    let lse_want: Vec<f64> = serde_json::from_value(tg["logsumexp"].clone()).unwrap();
    let top_ids: Vec<Vec<u32>> = serde_json::from_value(tg["top5_ids"].clone()).unwrap();
    let top_val: Vec<Vec<f64>> = serde_json::from_value(tg["top5_logits"].clone()).unwrap();
    let (mut worst_lse, mut worst_top, mut top1_same) = (0f64, 0f64, 0usize);
    for (p, row) in logits.iter().enumerate() {
        let max = row.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        worst_lse = worst_lse.max((lse - lse_want[p]).abs());
        for (id, v) in top_ids[p].iter().zip(&top_val[p]) {
            worst_top = worst_top.max((row[*id as usize] as f64 - v).abs());
        }
        let arg = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
            .0;
        top1_same += usize::from(arg as u32 == top_ids[p][0]);
    }
    eprintln!("logsumexp max |Δ| {worst_lse:.2e}, top-5 logits max |Δ| {worst_top:.2e}, top-1 agreement {top1_same}/{n}");
    assert!(worst_lse < 5e-4, "logsumexp differs by {worst_lse}");
    assert!(worst_top < 5e-4, "top-5 logits differ by {worst_top}");
    assert!(top1_same >= n - 2, "top-1 agrees at {top1_same} of {n}");
    drop(conv);

    // The folder opens as the GGUF model it converts to (no intermediate file): quantizing it
    // gives the bytes of quantizing its conversion.
    view::install();
    let same_quantized = |folder: &Path, file: &Path| {
        let opts = QuantizeOptions::new(quant_type("Q4_K_M").unwrap());
        let (a, b) = (t.path().join("q-folder.gguf"), t.path().join("q-file.gguf"));
        quantize_gguf(folder, &a, &opts, &|_, _| {}).unwrap();
        quantize_gguf(file, &b, &opts, &|_, _| {}).unwrap();
        let (a_bytes, b_bytes) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(
            a_bytes == b_bytes,
            "{} quantized differs from {}",
            folder.display(),
            file.display()
        );
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    };
    same_quantized(&dir, &back);
    // A tensor the view converted in memory (Llama's permuted Q, Gemma's shifted norm) reads
    // the same after being released (a command may read a tensor again: tune's candidates).
    let v = GgufFile::open(&dir).unwrap();
    for name in ["blk.0.attn_q.weight", "blk.0.attn_norm.weight"] {
        let Some(info) = v.tensor(name) else {
            continue; // Phi-3's Q is fused
        };
        let first = v.tensor_data(info).to_vec();
        v.release(info);
        assert!(
            v.tensor_data(info)[..] == first[..],
            "{name} changed after release"
        );
    }
    drop(v);
    std::fs::remove_file(&back).unwrap();

    for (name, ty) in [
        ("f16", OutType::F16),
        ("bf16", OutType::Bf16),
        ("q8_0", OutType::Q8_0),
    ] {
        let out = t.path().join(format!("back-{name}.gguf"));
        check_convert(&dir, &out, ty, &g["convert"][name]);
        std::fs::remove_file(&out).unwrap();
    }
    // A BF16 export converted at BF16 keeps its values: the same file as from the F32 export.
    std::fs::remove_dir_all(&dir).unwrap();
    let r = export(model, &dir, OutType::Bf16).unwrap();
    assert!(r.bytes < bf16_bytes);
    let out = t.path().join("back-bf16.gguf");
    check_convert(&dir, &out, OutType::Bf16, &g["convert"]["bf16_export_bf16"]);
    // A BF16 folder is seen at BF16, its weights read in place from the shard.
    if bf16_view {
        same_quantized(&dir, &out);
    }
}

/// RoPE scaling (`tests/golden/convert_rope.json`, `bench/make-golden-rope.sh`): SmolLM2's
/// export with Llama 3's factors (a `rope_freqs` tensor computed as torch does), YaRN and linear
/// scaling in its config converts to llama.cpp's bytes.
#[test]
fn rope_scaling_converts_as_llama_cpp() {
    let Some(model) = require(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let g = golden("convert_rope.json");
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    export(&model, &base, OutType::F32).unwrap();
    let dir = t.path().join("smol-rope");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&base).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let cfg_path = dir.join("config.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    let variants = [
        (
            "llama3-8k",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        ),
        (
            "llama3-32x",
            serde_json::json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}),
        ),
        (
            "yarn",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048, "beta_fast": 32.0, "beta_slow": 1.0}),
        ),
        (
            "linear",
            serde_json::json!({"rope_type": "linear", "factor": 2.0}),
        ),
    ];
    for (name, rope) in variants {
        let mut c = cfg.clone();
        c["rope_theta"] = serde_json::json!(500000.0);
        c["rope_scaling"] = rope;
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        let out = t.path().join(format!("{name}.gguf"));
        check_convert(&dir, &out, OutType::Q8_0, &g["convert"][name]);
        std::fs::remove_file(&out).unwrap();
    }
}
