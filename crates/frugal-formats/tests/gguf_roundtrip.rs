//! GGUF write → read → write on synthetic files holding every metadata value type and every
//! tensor type the issue names: values and bytes must survive unchanged, and a second write must
//! be byte-identical to the first.

use frugal_formats::gguf::{self, Array, GgmlType, TensorToWrite, Value};

fn metadata() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", Value::String("llama".into())),
        kv("general.alignment", Value::U32(64)),
        kv("t.u8", Value::U8(250)),
        kv("t.i8", Value::I8(-7)),
        kv("t.u16", Value::U16(65000)),
        kv("t.i16", Value::I16(-32000)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(-1.5e-7)),
        kv("t.bool", Value::Bool(true)),
        kv("t.string", Value::String("naïve ✓ — \u{1F600}".into())),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(std::f64::consts::PI)),
        kv("t.empty", Value::String(String::new())),
        kv("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        kv("a.i8", Value::Array(Array::I8(vec![-128, 127]))),
        kv("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        kv("a.i16", Value::Array(Array::I16(vec![-1, 1]))),
        kv("a.u32", Value::Array(Array::U32(vec![7; 5]))),
        kv("a.i32", Value::Array(Array::I32(vec![-5, 0, 5]))),
        kv("a.f32", Value::Array(Array::F32(vec![0.25, -0.0, 1e30]))),
        kv("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        kv(
            "a.string",
            Value::Array(Array::String(vec![
                "<s>".into(),
                "Ġthe".into(),
                String::new(),
            ])),
        ),
        kv("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        kv("a.i64", Value::Array(Array::I64(vec![i64::MIN, i64::MAX]))),
        kv("a.f64", Value::Array(Array::F64(vec![1e-300, -2.5]))),
        kv("a.empty", Value::Array(Array::F32(vec![]))),
        kv(
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::U8(vec![9])]),
            ])),
        ),
    ]
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

const TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "Q8_K",
];

fn write_all_types() -> Vec<u8> {
    let shapes: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)> = TYPES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let t = GgmlType::from_name(name).unwrap();
            let dims = vec![512, 3 + i as u64];
            let n = t.bytes_for(dims.iter().product()).unwrap() as usize;
            (
                format!("blk.{i}.{name}.weight"),
                t,
                dims,
                bytes(n, i as u64),
            )
        })
        .collect();
    let tensors: Vec<TensorToWrite> = shapes
        .iter()
        .map(|(n, t, d, b)| TensorToWrite {
            name: n,
            ggml_type: *t,
            dims: d,
            data: b,
        })
        .collect();
    let mut out = Vec::new();
    gguf::write_gguf(&mut out, &metadata(), &tensors).unwrap();
    out
}

#[test]
fn every_value_and_tensor_type_round_trips() {
    let file = write_all_types();
    let h = gguf::parse_header(&file).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 64);
    assert_eq!(h.metadata, metadata());
    assert_eq!(h.tensors.len(), TYPES.len());
    for (i, t) in h.tensors.iter().enumerate() {
        assert_eq!(t.ggml_type.name(), TYPES[i]);
        assert_eq!(t.offset % 64, 0, "{}: alignment honoured", t.name);
        let start = (h.data_offset + t.offset) as usize;
        assert_eq!(
            &file[start..start + t.n_bytes as usize],
            &bytes(t.n_bytes as usize, i as u64)[..],
            "{}",
            t.name
        );
    }
    assert_eq!(h.data_offset % 64, 0);

    // Rewriting what was read gives the same bytes.
    let data: Vec<&[u8]> = h
        .tensors
        .iter()
        .map(|t| {
            &file[(h.data_offset + t.offset) as usize
                ..(h.data_offset + t.offset + t.n_bytes) as usize]
        })
        .collect();
    let tensors: Vec<TensorToWrite> = h
        .tensors
        .iter()
        .zip(&data)
        .map(|(t, d)| TensorToWrite {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims,
            data: d,
        })
        .collect();
    let mut again = Vec::new();
    gguf::write_gguf(&mut again, &h.metadata, &tensors).unwrap();
    assert_eq!(again, file);
}

#[test]
fn version_2_files_are_read() {
    // Little-endian v2 and v3 share a layout; only the version field differs.
    let mut file = write_all_types();
    file[4..8].copy_from_slice(&2u32.to_le_bytes());
    let h = gguf::parse_header(&file).unwrap();
    assert_eq!(h.version, 2);
    assert_eq!(h.tensors.len(), TYPES.len());
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let data = vec![0u8; 18];
    let bad = [
        TensorToWrite {
            name: "short",
            ggml_type: GgmlType::Q4_0,
            dims: &[64],
            data: &data,
        },
        TensorToWrite {
            name: "partial-block",
            ggml_type: GgmlType::Q4_0,
            dims: &[16],
            data: &data[..9],
        },
        TensorToWrite {
            name: "unknown-type",
            ggml_type: GgmlType(4),
            dims: &[32],
            data: &data,
        },
        TensorToWrite {
            name: "five-dims",
            ggml_type: GgmlType::Q4_0,
            dims: &[32, 1, 1, 1, 1],
            data: &data,
        },
    ];
    for t in bad {
        let err = gguf::write_gguf(&mut Vec::new(), &[], &[t]).unwrap_err();
        assert!(err.to_string().contains(t.name), "{err}");
    }
    let dup = TensorToWrite {
        name: "a",
        ggml_type: GgmlType::Q4_0,
        dims: &[32],
        data: &data,
    };
    assert!(gguf::write_gguf(&mut Vec::new(), &[], &[dup, dup]).is_err());
    let align = vec![("general.alignment".to_string(), Value::U32(48))];
    assert!(gguf::write_gguf(&mut Vec::new(), &align, &[]).is_err());
}

#[test]
fn written_file_opens_from_disk_with_tensor_access() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gguf");
    std::fs::write(&p, write_all_types()).unwrap();
    let f = gguf::GgufFile::open(&p).unwrap();
    let t = f.tensor("blk.3.Q8_0.weight").unwrap();
    assert_eq!(&f.tensor_data(t)[..], &bytes(t.n_bytes as usize, 3)[..]);
    assert_eq!(f.header.architecture(), Some("llama"));
}
