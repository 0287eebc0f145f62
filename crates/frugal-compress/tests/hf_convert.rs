//! `frugal convert` against llama.cpp's own converter: all-MiniLM-L6-v2 (a real Hugging Face
//! BERT folder) at every `--outtype` must give the bytes `convert_hf_to_gguf.py` gave
//! (`tests/golden/convert_minilm.json`, made by `bench/make-golden-convert.sh` with the pinned
//! sdist's converter under PyTorch). Then the refusals of bad checkpoint folders, each before
//! anything is written.

use frugal_compress::hf::convert::convert;
use frugal_compress::hf::OutType;
use frugal_formats::assets;
use frugal_formats::safetensors::{write_safetensors_file, Dtype, StTensorToWrite};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn sha256(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn minilm_conversion_is_byte_identical_to_convert_hf_to_gguf() {
    let Some(dir) = assets::require_or_skip(assets::minilm_dir(), "MiniLM") else {
        return;
    };
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/convert_minilm.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // The converter names the model after the folder: the golden saw it as all-MiniLM-L6-v2.
    let t = tempfile::tempdir().unwrap();
    let seen = t.path().join("all-MiniLM-L6-v2");
    std::os::unix::fs::symlink(&dir, &seen).unwrap();
    for (name, ty) in [
        ("f32", OutType::F32),
        ("f16", OutType::F16),
        ("bf16", OutType::Bf16),
        ("q8_0", OutType::Q8_0),
    ] {
        let out = t.path().join(format!("minilm-{name}.gguf"));
        let r = convert(&seen, &out, ty).unwrap();
        assert_eq!(r.tensors, 101);
        let want = &golden[name];
        assert_eq!(
            std::fs::metadata(&out).unwrap().len(),
            want["bytes"].as_u64().unwrap(),
            "{name}: size"
        );
        assert_eq!(
            sha256(&out),
            want["sha256"].as_str().unwrap(),
            "{name}: bytes"
        );
        std::fs::remove_file(&out).unwrap();
    }
}

/// A two-shard Llama-shaped checkpoint of random F32 weights (no tokenizer: every refusal
/// below comes before the vocabulary is read).
fn tiny_llama(dir: &Path, hidden: u64, layers: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_attention_heads": 2,
        "num_key_value_heads": 1, "num_hidden_layers": layers, "vocab_size": 16,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut shards: Vec<Vec<(String, Vec<u64>)>> = vec![vec![], vec![]];
    shards[0].push(("model.embed_tokens.weight".into(), vec![16, hidden]));
    shards[1].push(("model.norm.weight".into(), vec![hidden]));
    for b in 0..layers {
        let s = &mut shards[b as usize % 2];
        let p = format!("model.layers.{b}.");
        s.push((format!("{p}self_attn.q_proj.weight"), vec![hidden, hidden]));
        s.push((
            format!("{p}self_attn.k_proj.weight"),
            vec![hidden / 2, hidden],
        ));
        s.push((
            format!("{p}self_attn.v_proj.weight"),
            vec![hidden / 2, hidden],
        ));
        s.push((format!("{p}self_attn.o_proj.weight"), vec![hidden, hidden]));
        s.push((format!("{p}mlp.gate_proj.weight"), vec![2 * hidden, hidden]));
        s.push((format!("{p}mlp.up_proj.weight"), vec![2 * hidden, hidden]));
        s.push((format!("{p}mlp.down_proj.weight"), vec![hidden, 2 * hidden]));
        s.push((format!("{p}input_layernorm.weight"), vec![hidden]));
        s.push((format!("{p}post_attention_layernorm.weight"), vec![hidden]));
    }
    let mut map = serde_json::Map::new();
    for (i, s) in shards.iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let data: Vec<Vec<u8>> = s
            .iter()
            .map(|(_, shape)| vec![0u8; 4 * shape.iter().product::<u64>() as usize])
            .collect();
        let ts: Vec<StTensorToWrite> = s
            .iter()
            .zip(&data)
            .map(|((n, shape), d)| StTensorToWrite {
                name: n,
                dtype: Dtype::F32,
                shape,
                data: d,
            })
            .collect();
        write_safetensors_file(&dir.join(&file), &[], &BTreeMap::new(), &ts).unwrap();
        for (n, _) in s {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn refused(dir: &Path, needle: &str) {
    let out = dir.with_extension("gguf");
    let e = convert(dir, &out, OutType::F16).unwrap_err().to_string();
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn bad_checkpoint_folders_are_refused_naming_file_and_field() {
    let t = tempfile::tempdir().unwrap();
    let edit = |name: &str, f: &dyn Fn(&Path)| {
        let d = t.path().join(name);
        tiny_llama(&d, 8, 2);
        f(&d);
        d
    };
    // Without a tokenizer the well-formed folder gets as far as the vocabulary.
    refused(&edit("ok", &|_| {}), "tokenizer.json: is missing");
    // A shard that is missing.
    let d = edit("missing", &|d| {
        std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap()
    });
    refused(&d, "model-00002-of-00002.safetensors: is missing");
    // A shard holding a tensor the index places elsewhere.
    let d = edit("moved", &|d| {
        let p = d.join("model.safetensors.index.json");
        let s = std::fs::read_to_string(&p).unwrap().replace(
            "\"model.norm.weight\":\"model-00002-of-00002.safetensors\"",
            "\"model.norm.weight\":\"model-00001-of-00002.safetensors\"",
        );
        std::fs::write(&p, s).unwrap();
    });
    refused(
        &d,
        "model.norm.weight`: model.safetensors.index.json places it in model-00001",
    );
    // An index naming a tensor no shard has.
    let d = edit("extra", &|d| {
        let p = d.join("model.safetensors.index.json");
        let s = std::fs::read_to_string(&p).unwrap().replace(
            "{\"model.",
            "{\"lm_head.weight\":\"model-00001-of-00002.safetensors\",\"model.",
        );
        std::fs::write(&p, s).unwrap();
    });
    refused(
        &d,
        "lm_head.weight`: is named by model.safetensors.index.json but not in the shard",
    );
    // config.json's sizes against the tensors.
    let d = edit("sizes", &|d| {
        let p = d.join("config.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"intermediate_size\":16", "\"intermediate_size\":24");
        std::fs::write(&p, s).unwrap();
    });
    refused(&d, "config.json: `intermediate_size`: is 24, but tensor `model.layers.0.mlp.gate_proj.weight` has shape [16, 8]");
    let d = edit("layers", &|d| {
        let p = d.join("config.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"num_hidden_layers\":2", "\"num_hidden_layers\":3");
        std::fs::write(&p, s).unwrap();
    });
    refused(
        &d,
        "`num_hidden_layers`: is 3, but the checkpoint has 2 blocks",
    );
    // An architecture the converter does not know.
    let d = edit("arch", &|d| {
        let p = d.join("config.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("LlamaForCausalLM", "FalconForCausalLM");
        std::fs::write(&p, s).unwrap();
    });
    refused(&d, "`architectures`: `FalconForCausalLM` is not converted");
    // A corrupt SentencePiece model: refused naming the file and the field, no panic.
    let d = edit("sp-corrupt", &|d| {
        std::fs::write(d.join("tokenizer.model"), [0x0a, 0x05, 0x0a, 0x03, b'a']).unwrap()
    });
    refused(
        &d,
        "tokenizer.model: field `pieces[0]` at byte 2: length 5 runs past the end",
    );
    // Gemma 3 without a tokenizer.model.
    let d = edit("gemma-no-sp", &|d| {
        let p = d.join("config.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("LlamaForCausalLM", "Gemma3ForCausalLM")
            .replace(
                "\"rope_theta\"",
                "\"head_dim\":4,\"sliding_window\":8,\"rope_theta\"",
            );
        std::fs::write(&p, s).unwrap();
    });
    refused(&d, "tokenizer.model: is missing");
}

/// A Llama checkpoint with a SentencePiece `tokenizer.model` converts through llama.cpp's
/// `_set_vocab_sentencepiece` rules (the bytes against llama.cpp's converter are checked on
/// real models in `frugal-eval/tests/hf_export.rs`; here the vocabulary's reading): pieces,
/// scores and types as written, user-defined pieces read as normal ones, `[PADi]` up to the
/// configured size, `added_tokens_decoder` entries written over them.
#[test]
fn a_sentencepiece_llama_folder_converts() {
    use frugal_formats::sentencepiece::{
        ModelType, Normalizer, Piece, PieceType, SpModel, Trainer,
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("sp-llama");
    tiny_llama(&d, 8, 2);
    let piece = |p: &str, score: f32, kind| Piece {
        piece: p.into(),
        score,
        kind,
    };
    let mut pieces = vec![
        piece("<unk>", 0.0, PieceType::Unknown),
        piece("<s>", 0.0, PieceType::Control),
        piece("</s>", 0.0, PieceType::Control),
        piece("\u{2581}\u{2581}", -1.0, PieceType::UserDefined),
    ];
    for (i, w) in ["\u{2581}the", "\u{2581}a", "s", "t", "e", "\u{2581}"]
        .iter()
        .enumerate()
    {
        pieces.push(piece(w, -2.0 - i as f32, PieceType::Normal));
    }
    let n_pieces = pieces.len();
    let model = SpModel {
        pieces,
        trainer: Trainer {
            model_type: ModelType::Bpe,
            vocab_size: n_pieces as i32,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        },
        normalizer: Normalizer {
            name: "identity".into(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
        },
    };
    std::fs::write(d.join("tokenizer.model"), model.to_bytes()).unwrap();
    std::fs::write(
        d.join("tokenizer_config.json"),
        r#"{"add_prefix_space": true, "added_tokens_decoder": {"9": {"content": "<|x|>"}}}"#,
    )
    .unwrap();
    let out = t.path().join("sp.gguf");
    convert(&d, &out, OutType::F16).unwrap();
    let f = frugal_formats::gguf::GgufFile::open(&out).unwrap();
    let get = |k: &str| f.header.get(k).cloned();
    use frugal_formats::gguf::{Array, Value};
    assert_eq!(
        get("tokenizer.ggml.model"),
        Some(Value::String("llama".into()))
    );
    assert_eq!(
        get("tokenizer.ggml.add_space_prefix"),
        Some(Value::Bool(true))
    );
    let Some(Value::Array(Array::String(tokens))) = get("tokenizer.ggml.tokens") else {
        panic!("no tokens")
    };
    let Some(Value::Array(Array::I32(types))) = get("tokenizer.ggml.token_type") else {
        panic!("no types")
    };
    let Some(Value::Array(Array::F32(scores))) = get("tokenizer.ggml.scores") else {
        panic!("no scores")
    };
    // vocab_size 16: ten pieces, `<|x|>` (looks special: a control token) at 9, [PAD10]..
    assert_eq!(tokens.len(), 16);
    assert_eq!(&tokens[..4], &["<unk>", "<s>", "</s>", "\u{2581}\u{2581}"]);
    assert_eq!(
        &types[..4],
        &[2, 3, 3, 1],
        "a user-defined piece reads as normal"
    );
    assert_eq!(
        (tokens[9].as_str(), types[9], scores[9]),
        ("<|x|>", 3, -1000.0)
    );
    assert_eq!(
        (tokens[15].as_str(), types[15], scores[15]),
        ("[PAD15]", 5, -10000.0)
    );
    assert_eq!(scores[4], -2.0);
}
