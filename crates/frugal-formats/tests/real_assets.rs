//! The formats crate on the real models and data sets fetched by `scripts/fetch-assets.sh`.
//! Missing assets skip these tests with a message, unless `FRUGAL_REQUIRE_ASSETS=1` (as in
//! `scripts/test` and CI), where they fail.

use frugal_formats::{assets, brown, gguf, idx, inspect, safetensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn asset(path: PathBuf, what: &str) -> Option<PathBuf> {
    assets::require_or_skip(path, what)
}

#[test]
fn smollm2_inspects_as_272_tensors_and_134_5m_parameters() {
    let Some(p) = asset(assets::smollm2_gguf(), "SmolLM2 GGUF") else {
        return;
    };
    let s = inspect::inspect(&p).unwrap();
    assert_eq!(s.format, inspect::ModelFormat::Gguf);
    assert_eq!(s.architecture.as_deref(), Some("llama"));
    assert_eq!(s.n_tensors, 272);
    assert_eq!(s.n_parameters, 134_515_008);
    assert_eq!(format!("{:.1}", s.n_parameters as f64 / 1e6), "134.5");
    assert_eq!(s.dtypes["Q4_1"].tensors, 210);
    assert_eq!(s.metadata["llama.block_count"], 30);
    assert_eq!(s.metadata["llama.embedding_length"], 576);
    assert_eq!(s.metadata["tokenizer.ggml.tokens"], "[string; 49152]");
}

#[test]
fn minilm_inspects_as_104_tensors_and_22_7m_numbers() {
    let Some(dir) = asset(assets::minilm_dir(), "all-MiniLM-L6-v2") else {
        return;
    };
    let s = inspect::inspect(&dir.join("model.safetensors")).unwrap();
    assert_eq!(s.format, inspect::ModelFormat::Safetensors);
    assert_eq!(s.architecture.as_deref(), Some("bert"));
    assert_eq!(s.n_tensors, 104);
    assert_eq!(s.n_parameters, 22_713_728);
    assert_eq!(s.dtypes["F32"].tensors, 103);
}

/// Runs `scripts/gguf_dump.py` (the `gguf` Python package's reader) on `file`, when
/// `FRUGAL_GGUF_PYTHON` names a Python that has the package.
fn python_dump(file: &Path) -> Option<serde_json::Value> {
    let py = std::env::var_os("FRUGAL_GGUF_PYTHON").filter(|p| !p.is_empty());
    let Some(py) = py else {
        assert!(
            std::env::var_os("FRUGAL_REQUIRE_ASSETS").is_none_or(|v| v != "1"),
            "FRUGAL_GGUF_PYTHON is not set; scripts/test sets it from scripts/setup-python.sh"
        );
        eprintln!("skipping the gguf-py check: FRUGAL_GGUF_PYTHON is not set");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gguf_dump.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "gguf_dump.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("gguf_dump.py prints JSON"))
}

/// Checks that the `gguf` Python package sees exactly what our reader sees.
fn check_against_gguf_py(path: &Path, f: &gguf::GgufFile) {
    let Some(dump) = python_dump(path) else {
        return;
    };
    assert_eq!(dump["version"], f.header.version);
    assert_eq!(dump["alignment"], f.header.alignment);
    let theirs = dump["tensors"].as_array().unwrap();
    assert_eq!(theirs.len(), f.header.tensors.len());
    for (t, o) in f.header.tensors.iter().zip(theirs) {
        assert_eq!(o["name"], t.name.as_str());
        assert_eq!(o["type"], t.ggml_type.name().as_str(), "{}", t.name);
        assert_eq!(o["shape"], serde_json::json!(t.dims), "{}", t.name);
        assert_eq!(o["n_bytes"], t.n_bytes, "{}", t.name);
        assert_eq!(
            o["data_offset"],
            f.header.data_offset + t.offset,
            "{}",
            t.name
        );
    }
    let meta = dump["metadata"].as_object().unwrap();
    assert_eq!(meta.len(), f.header.metadata.len());
    for (k, v) in &f.header.metadata {
        assert_eq!(meta.get(k), Some(&json_of(v)), "metadata `{k}`");
    }
}

#[test]
fn smollm2_gguf_round_trips_and_gguf_py_agrees() {
    let Some(p) = asset(assets::smollm2_gguf(), "SmolLM2 GGUF") else {
        return;
    };
    let src = gguf::GgufFile::open(&p).unwrap();
    check_against_gguf_py(&p, &src);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rewritten.gguf");
    let data: Vec<_> = src
        .header
        .tensors
        .iter()
        .map(|t| src.tensor_data(t))
        .collect();
    let tensors: Vec<gguf::TensorToWrite> = src
        .header
        .tensors
        .iter()
        .zip(&data)
        .map(|(t, data)| gguf::TensorToWrite {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims,
            data,
        })
        .collect();
    let n = gguf::write_gguf_file(&out, &[&p], &src.header.metadata, &tensors).unwrap();
    assert_eq!(n, std::fs::metadata(&out).unwrap().len());

    let back = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(back.header.version, 3);
    assert_eq!(
        back.header.metadata, src.header.metadata,
        "every metadata value identical"
    );
    assert_eq!(back.header.tensors.len(), 272);
    for (a, b) in src.header.tensors.iter().zip(&back.header.tensors) {
        assert_eq!(
            (&a.name, a.ggml_type, &a.dims),
            (&b.name, b.ggml_type, &b.dims)
        );
        assert!(
            src.tensor_data(a) == back.tensor_data(b),
            "bytes of {} differ",
            a.name
        );
    }
    check_against_gguf_py(&out, &back);

    // Writing over the input is refused, and the input is untouched.
    let before = std::fs::metadata(&p).unwrap().len();
    let err = gguf::write_gguf_file(&p, &[&p], &src.header.metadata, &tensors).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), before);
}

#[test]
fn minilm_safetensors_round_trips_and_the_reference_crate_reads_ours() {
    let Some(dir) = asset(assets::minilm_dir(), "all-MiniLM-L6-v2") else {
        return;
    };
    let p = dir.join("model.safetensors");
    let src = safetensors::SafetensorsFile::open(&p).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("copy.safetensors");
    let mut meta = src.header.metadata.clone();
    meta.insert("frugal.note".into(), "round trip ✓".into());
    let tensors: Vec<safetensors::StTensorToWrite> = src
        .header
        .tensors
        .iter()
        .map(|t| safetensors::StTensorToWrite {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: src.tensor_data(t),
        })
        .collect();
    safetensors::write_safetensors_file(&out, &[&p], &meta, &tensors).unwrap();

    let back = safetensors::SafetensorsFile::open(&out).unwrap();
    assert_eq!(back.header.metadata, meta);
    assert_eq!(back.header.tensors.len(), 104);
    for t in &src.header.tensors {
        let b = back.tensor(&t.name).unwrap();
        assert_eq!((b.dtype, &b.shape), (t.dtype, &t.shape));
        assert!(back.tensor_data(b) == src.tensor_data(t), "{}", t.name);
    }
    let bytes = std::fs::read(&out).unwrap();
    let reference = ::safetensors::SafeTensors::deserialize(&bytes)
        .expect("the safetensors crate reads our file");
    assert_eq!(reference.len(), 104);
    let w = reference
        .tensor("embeddings.word_embeddings.weight")
        .unwrap();
    assert_eq!(w.shape(), &[30522, 384]);
    assert!(w.data() == src.tensor_data(src.tensor("embeddings.word_embeddings.weight").unwrap()));
}

#[test]
fn fashion_mnist_has_60000_train_and_10000_test_images() {
    let Some(dir) = asset(assets::fashion_mnist_dir(), "Fashion-MNIST") else {
        return;
    };
    let (train, test) = idx::read_fashion_mnist(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.rows, train.cols), (28, 28));
    for (set, per_class) in [(&train, 6000), (&test, 1000)] {
        let mut counts = [0usize; 10];
        set.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [per_class; 10]);
    }
    // The first test image is an ankle boot (label 9) in every copy of the data set.
    assert_eq!(
        idx::FASHION_MNIST_CLASSES[test.labels[0] as usize],
        "Ankle boot"
    );
}

#[test]
fn brown_corpus_has_500_files_in_15_genres() {
    let Some(dir) = asset(assets::brown_dir(), "Brown corpus") else {
        return;
    };
    let docs = brown::read_brown_dir(&dir).unwrap();
    assert_eq!(docs.len(), 500);
    let mut per_genre: BTreeMap<char, usize> = BTreeMap::new();
    for d in &docs {
        *per_genre.entry(brown::GENRES[d.genre].0).or_default() += 1;
    }
    let expected = [
        ('a', 44),
        ('b', 27),
        ('c', 17),
        ('d', 17),
        ('e', 36),
        ('f', 48),
        ('g', 75),
        ('h', 30),
        ('j', 80),
        ('k', 29),
        ('l', 24),
        ('m', 6),
        ('n', 29),
        ('p', 29),
        ('r', 9),
    ];
    assert_eq!(per_genre, expected.into_iter().collect());
    let sentences: usize = docs.iter().map(|d| d.sentences.len()).sum();
    // The tagged Brown corpus has 57,340 sentences (NLTK's count).
    assert_eq!(sentences, 57_340);
    let cj01 = docs.iter().find(|d| d.id == "cj01").unwrap();
    assert!(
        cj01.sentences[2]
            .starts_with("It has recently become practical to use the radio emission of the moon"),
        "{}",
        cj01.sentences[2]
    );
    let ca01 = &docs[0];
    assert_eq!(
        ca01.sentences[0],
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place."
    );
    assert!(!cj01.text().contains("/nn "), "tags are gone");
}

/// A GGUF value as JSON, every element as stored (f32 widened exactly), as gguf-py dumps it.
fn json_of(v: &frugal_formats::gguf::Value) -> serde_json::Value {
    use frugal_formats::gguf::Value as V;
    use serde_json::json;
    match v {
        V::U8(v) => json!(v),
        V::I8(v) => json!(v),
        V::U16(v) => json!(v),
        V::I16(v) => json!(v),
        V::U32(v) => json!(v),
        V::I32(v) => json!(v),
        V::F32(v) => json!(v),
        V::Bool(v) => json!(v),
        V::String(v) => json!(v),
        V::Array(a) => array_json(a),
        V::U64(v) => json!(v),
        V::I64(v) => json!(v),
        V::F64(v) => json!(v),
    }
}

fn array_json(a: &frugal_formats::gguf::Array) -> serde_json::Value {
    use frugal_formats::gguf::Array as A;
    use serde_json::json;
    match a {
        A::U8(v) => json!(v),
        A::I8(v) => json!(v),
        A::U16(v) => json!(v),
        A::I16(v) => json!(v),
        A::U32(v) => json!(v),
        A::I32(v) => json!(v),
        A::F32(v) => json!(v),
        A::Bool(v) => json!(v),
        A::String(v) => json!(v),
        A::Array(v) => serde_json::Value::Array(v.iter().map(array_json).collect()),
        A::U64(v) => json!(v),
        A::I64(v) => json!(v),
        A::F64(v) => json!(v),
    }
}
