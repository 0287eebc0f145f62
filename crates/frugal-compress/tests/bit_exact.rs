//! `frugal quantize` against `llama-quantize` on SmolLM2 F32: for every block type with
//! `--pure`, and for every named k-quant mix (Q4_K_M, …, with llama.cpp's per-tensor rules and
//! its fallback for SmolLM2's 576-wide rows), the whole output file must be byte-identical
//! (sha256 in `tests/golden/`, made by `bench/make-golden.sh`).

use frugal_compress::quant::{quant_type, quantize_gguf, QuantizeOptions, QUANT_TYPES};
use frugal_formats::assets;
use sha2::Digest;
use std::path::Path;

#[test]
fn every_type_and_mix_is_byte_identical_to_llama_quantize() {
    let Some(q41) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let g: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/golden/smollm2_quantize_pure.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f32 = dir.path().join("f32.gguf");
    // Bit-identical to `llama-quantize --allow-requantize … F32` (checked by bench/make-golden.sh).
    frugal_models::convert::dequantize_gguf(&q41, &f32).unwrap();
    let f32_sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&f32).unwrap()));
    assert_eq!(
        f32_sha,
        g["f32_llama_quantize_sha256"].as_str().unwrap(),
        "F32 differs from llama-quantize's"
    );
    let pure = g["sha256"].as_object().unwrap().iter().map(|e| (e, true));
    let mixes = g["mix_sha256"]
        .as_object()
        .unwrap()
        .iter()
        .map(|e| (e, false));
    for ((name, want), pure) in pure.chain(mixes) {
        let t = quant_type(name).unwrap();
        let out = dir.path().join(format!("{name}.gguf"));
        let mut opts = QuantizeOptions::new(t);
        opts.pure = pure;
        let r = quantize_gguf(&f32, &out, &opts, &|_, _| {}).unwrap();
        let got = format!("{:x}", sha2::Sha256::digest(std::fs::read(&out).unwrap()));
        assert_eq!(
            &got,
            want.as_str().unwrap(),
            "{name} (pure: {pure}) differs from llama-quantize"
        );
        // Relative error bounds per bit width (round to nearest: half a step of the block scale).
        let worst = r.tensors.iter().map(|t| t.rel_rmse).fold(0.0, f64::max);
        let bound = match name.as_str() {
            "Q8_0" => 0.01,
            "Q6_K" => 0.03,
            "Q5_0" | "Q5_1" | "Q5_K" | "Q5_K_S" | "Q5_K_M" => 0.06,
            "Q3_K" | "Q3_K_S" | "Q3_K_M" | "Q3_K_L" => 0.25,
            "Q2_K" => 0.5,
            _ => 0.12,
        };
        assert!(worst < bound, "{name}: worst relative RMS error {worst}");
        std::fs::remove_file(&out).unwrap();
    }
    assert!(QUANT_TYPES.iter().any(|t| t.name == "F16"));
}

#[test]
fn bad_targets_and_inputs_give_clear_errors() {
    assert!(quant_type("Q3_XL").is_none());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"not a model").unwrap();
    let err = quantize_gguf(
        &bad,
        &dir.path().join("o.gguf"),
        &QuantizeOptions::new(quant_type("Q8_0").unwrap()),
        &|_, _| {},
    )
    .unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("bad.gguf"),
        "{err}"
    );
    assert!(!dir.path().join("o.gguf").exists());
}

/// IQ2_XXS, IQ2_XS and IQ1_S cannot quantize without importance weights (llama.cpp's quantizers
/// assert them): a tensor planned in one of them with no importance data — here a 256-wide
/// token embedding, which importance matrices never cover (on SmolLM2 it is 576 wide and falls
/// back to IQ4_NL) — is refused before anything is written, naming it; overridden to another
/// type, the file is written.
#[test]
fn types_that_need_importance_weights_are_refused_where_a_tensor_has_none() {
    use frugal_compress::quant::Imatrix;
    use frugal_formats::gguf::{write_gguf_file, GgmlType, TensorToWrite, Value};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    let data: Vec<u8> = (0..256 * 8)
        .flat_map(|i| ((i % 17) as f32 * 0.01 - 0.08).to_le_bytes())
        .collect();
    let tensor = |name| TensorToWrite {
        name,
        ggml_type: GgmlType::F32,
        dims: &[256, 8],
        data: &data,
    };
    write_gguf_file(
        &src,
        &[],
        &[(
            "general.architecture".to_string(),
            Value::String("llama".into()),
        )],
        &[tensor("token_embd.weight"), tensor("blk.0.ffn_down.weight")],
    )
    .unwrap();
    let imatrix = Imatrix {
        entries: [("blk.0.ffn_down.weight".to_string(), vec![1.0; 256])].into(),
        n_tokens: 1,
        source: "test".into(),
        file: None,
        rounding: Default::default(),
        gains: Default::default(),
    };
    let out = dir.path().join("o.gguf");
    for name in ["IQ2_XXS", "IQ2_XS", "IQ1_S"] {
        let mut opts = QuantizeOptions::new(quant_type(name).unwrap());
        opts.pure = true;
        opts.imatrix = Some(imatrix.clone());
        let e = quantize_gguf(&src, &out, &opts, &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("token_embd.weight") && e.contains("importance weights"),
            "{name}: {e}"
        );
        assert!(!out.exists());
        opts.overrides = vec!["token_embd=Q8_0".parse().unwrap()];
        quantize_gguf(&src, &out, &opts, &|_, _| {}).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// With llama-imatrix's importance matrix file, every type (`--pure`; IQ2_XXS, IQ2_XS and IQ1_S
/// with the token embedding overridden to Q8_0, as their quantizers need weights it has none
/// of) and named mix — the k-quants' and legacy types' weighted searches, the IQ4, IQ3, IQ2 and
/// IQ1 types, and the mix rules that depend on having an imatrix — gives llama-quantize's file
/// byte for byte, as do the IQ types without one; each IQ file decodes to llama.cpp's values
/// (`tests/golden/smollm2_quantize_imatrix.json`, `bench/make-golden-iq.sh`).
#[test]
fn with_an_imatrix_file_every_type_and_mix_is_byte_identical_to_llama_quantize() {
    use frugal_compress::quant::imatrix_file::read_imatrix;
    let Some(q41) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let g: serde_json::Value = serde_json::from_slice(
        &std::fs::read(golden.join("smollm2_quantize_imatrix.json")).unwrap(),
    )
    .unwrap();
    let im_path = golden.join("smollm2.imatrix.gguf");
    let im_sha = format!(
        "{:x}",
        sha2::Sha256::digest(std::fs::read(&im_path).unwrap())
    );
    assert_eq!(im_sha, g["imatrix_sha256"].as_str().unwrap());
    let mut imatrix = read_imatrix(&im_path).unwrap();
    // llama-quantize records its --imatrix argument as given.
    imatrix.file.as_mut().unwrap().path = g["imatrix_arg"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let f32 = dir.path().join("f32.gguf");
    frugal_models::convert::dequantize_gguf(&q41, &f32).unwrap();
    let sets = [
        ("sha256", true, true),
        ("mix_sha256", false, true),
        ("plain_sha256", true, false),
        ("plain_mix_sha256", false, false),
        ("pure_override_sha256", true, true),
    ];
    let mut failures = Vec::new();
    for (key, pure, with_imatrix) in sets {
        for (name, want) in g[key].as_object().unwrap() {
            let t = quant_type(name).unwrap_or_else(|| panic!("{name}: not a target"));
            let out = dir.path().join(format!("{key}-{name}.gguf"));
            let mut opts = QuantizeOptions::new(t);
            opts.pure = pure;
            opts.imatrix = with_imatrix.then(|| imatrix.clone());
            if key == "pure_override_sha256" {
                opts.overrides = vec![g["pure_override"].as_str().unwrap().parse().unwrap()];
            }
            quantize_gguf(&f32, &out, &opts, &|_, _| {}).unwrap();
            let got = format!("{:x}", sha2::Sha256::digest(std::fs::read(&out).unwrap()));
            if got != want.as_str().unwrap() {
                failures.push(format!("{key} {name}"));
            }
            // Decoding: every value as llama.cpp decodes it (`llama-quantize … F32`).
            let pure_im = matches!(key, "sha256" | "pure_override_sha256");
            if let (true, Some(want)) = (pure_im, g["decoded_sha256"][name].as_str()) {
                let dec = dir.path().join("decoded.gguf");
                frugal_models::convert::dequantize_gguf(&out, &dec).unwrap();
                let f = frugal_formats::gguf::GgufFile::open(&dec).unwrap();
                let mut h = sha2::Sha256::new();
                for t in &f.header.tensors {
                    h.update(&*f.tensor_data(t));
                }
                if format!("{:x}", h.finalize()) != want {
                    failures.push(format!("decoding {name}"));
                }
                drop(f);
                std::fs::remove_file(&dec).unwrap();
            }
            std::fs::remove_file(&out).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "differ from llama-quantize: {failures:?}"
    );
    // Refused without an importance matrix, naming the tensor llama-quantize names, before
    // anything is written.
    for (name, tensor) in g["refused_without_imatrix"].as_object().unwrap() {
        let out = dir.path().join("refused.gguf");
        let mut opts = QuantizeOptions::new(quant_type(name).unwrap());
        opts.pure = true;
        let e = quantize_gguf(&f32, &out, &opts, &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(tensor.as_str().unwrap()) && e.contains("importance matrix"),
            "{name}: {e}"
        );
        assert!(!out.exists());
    }
}
