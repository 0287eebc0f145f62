//! The malformed-input suite: crafted GGUF and safetensors files, each of which must give a clear
//! error naming the field at fault, never a panic. Then every truncation and thousands of random
//! byte flips of valid files, which must never panic either.

use frugal_formats::{gguf, safetensors, Error};

/// Little-endian byte builder for crafting files by hand.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &[u8]) -> Self {
        self.u64(s.len() as u64).raw(s)
    }
    /// GGUF header: magic, version 3, counts.
    fn gguf(n_tensors: u64, n_kv: u64) -> Self {
        B::default().raw(b"GGUF").u32(3).u64(n_tensors).u64(n_kv)
    }
    /// A tensor info: name, dims, type, offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut b = self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Pads to 32 bytes and appends `n` data bytes.
    fn data(mut self, n: usize) -> Self {
        self.0.resize(self.0.len().div_ceil(32) * 32 + n, 0xAB);
        self
    }
}

const F32: u32 = 0;
const Q4_0: u32 = 2;

fn gguf_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let kv_u32 = |b: B, k: &str, v: u32| b.str(k.as_bytes()).u32(4).u32(v);
    vec![
        ("empty file", vec![], "header.magic"),
        ("truncated magic", b"GGU".to_vec(), "header.magic"),
        (
            "wrong magic",
            B::default().raw(b"GGML").u32(3).u64(0).u64(0).0,
            "header.magic",
        ),
        (
            "version 1",
            B::default().raw(b"GGUF").u32(1).u64(0).u64(0).0,
            "header.version",
        ),
        (
            "version 99",
            B::default().raw(b"GGUF").u32(99).u64(0).u64(0).0,
            "header.version",
        ),
        (
            "big-endian",
            B::default()
                .raw(b"GGUF")
                .u32(3u32.swap_bytes())
                .u64(0)
                .u64(0)
                .0,
            "header.version",
        ),
        (
            "no tensor count",
            B::default().raw(b"GGUF").u32(3).0,
            "header.tensor_count",
        ),
        (
            "huge tensor count",
            B::gguf(u64::MAX, 0).0,
            "header.tensor_count",
        ),
        (
            "huge kv count",
            B::gguf(0, 1 << 60).0,
            "header.metadata_kv_count",
        ),
        (
            "key length past end",
            B::gguf(0, 1).u64(u64::MAX).raw(b"xxxxxxxxxxxxx").0,
            "metadata[0].key",
        ),
        (
            "truncated key",
            B::gguf(0, 1).u64(100).raw(b"abcde").u32(4).u32(0).0,
            "metadata[0].key",
        ),
        (
            "key not UTF-8",
            B::gguf(0, 1).str(b"bad\xff\xfekey").u32(4).u32(1).0,
            "metadata[0].key",
        ),
        (
            "duplicate key",
            kv_u32(kv_u32(B::gguf(0, 2), "a", 1), "a", 2).0,
            "metadata[1].key",
        ),
        (
            "unknown value type",
            B::gguf(0, 1).str(b"k").u32(13).u32(0).0,
            "k.type",
        ),
        (
            "bool of 2",
            B::gguf(0, 1).str(b"k").u32(7).raw(&[2]).raw(&[0; 12]).0,
            "k",
        ),
        (
            "array of unknown type",
            B::gguf(0, 1).str(b"k").u32(9).u32(77).u64(1).raw(&[0; 8]).0,
            "k.element_type",
        ),
        (
            "huge array",
            B::gguf(0, 1)
                .str(b"k")
                .u32(9)
                .u32(4)
                .u64(u64::MAX / 2)
                .raw(&[0; 16])
                .0,
            "k.length",
        ),
        (
            "huge string array",
            B::gguf(0, 1)
                .str(b"k")
                .u32(9)
                .u32(8)
                .u64(1 << 40)
                .raw(&[0; 64])
                .0,
            "k.length",
        ),
        (
            "string value past end",
            B::gguf(0, 1).str(b"k").u32(8).u64(1 << 20).raw(b"short").0,
            "k",
        ),
        (
            "string value not UTF-8",
            B::gguf(0, 1).str(b"k").u32(8).str(b"\xc3\x28").0,
            "k",
        ),
        (
            "arrays nested too deep",
            {
                let mut b = B::gguf(0, 1).str(b"k").u32(9);
                for _ in 0..20 {
                    b = b.u32(9).u64(1);
                }
                b.u32(4).u64(0).0
            },
            "k[0][0][0][0][0][0][0][0]",
        ),
        (
            "alignment not a power of two",
            kv_u32(B::gguf(0, 1), "general.alignment", 48).0,
            "general.alignment",
        ),
        (
            "alignment zero",
            kv_u32(B::gguf(0, 1), "general.alignment", 0).0,
            "general.alignment",
        ),
        (
            "alignment as string",
            B::gguf(0, 1).str(b"general.alignment").u32(8).str(b"32").0,
            "general.alignment",
        ),
        (
            "tensor name past end",
            B::gguf(1, 0).u64(1000).raw(&[0; 20]).0,
            "tensor_infos[0].name",
        ),
        (
            "five dimensions",
            B::gguf(1, 0)
                .tensor("t", &[1, 1, 1, 1, 1], F32, 0)
                .data(4)
                .0,
            "tensor_infos[0].n_dims",
        ),
        (
            "element count overflow",
            B::gguf(1, 0)
                .tensor("t", &[1 << 40, 1 << 40], F32, 0)
                .data(4)
                .0,
            "tensor_infos[0].dims[1]",
        ),
        (
            "dimension beyond i64",
            B::gguf(1, 0).tensor("t", &[u64::MAX], F32, 0).data(4).0,
            "tensor_infos[0].dims[0]",
        ),
        (
            "removed type id 4",
            B::gguf(1, 0).tensor("t", &[32], 4, 0).data(32).0,
            "tensor_infos[0].type",
        ),
        (
            "unknown type id",
            B::gguf(1, 0).tensor("t", &[32], 1000, 0).data(32).0,
            "tensor_infos[0].type",
        ),
        (
            "partial block",
            B::gguf(1, 0).tensor("t", &[33], Q4_0, 0).data(64).0,
            "tensor_infos[0].dims[0]",
        ),
        (
            "offset not aligned",
            B::gguf(1, 0).tensor("t", &[4], F32, 4).data(64).0,
            "tensor_infos[0].offset",
        ),
        (
            "offset past the end",
            B::gguf(1, 0).tensor("t", &[4], F32, 1 << 20).data(16).0,
            "tensor_infos[0].offset",
        ),
        (
            "offset overflow",
            B::gguf(1, 0)
                .tensor("t", &[8], F32, u64::MAX - 31)
                .data(16)
                .0,
            "tensor_infos[0].offset",
        ),
        (
            "data truncated",
            B::gguf(1, 0).tensor("t", &[64], F32, 0).data(100).0,
            "tensor_infos[0].offset",
        ),
        (
            "data section past the end",
            B::gguf(1, 0).tensor("t", &[0], F32, 0).0,
            "data",
        ),
        (
            "overlapping tensors",
            B::gguf(2, 0)
                .tensor("a", &[16], F32, 0)
                .tensor("b", &[16], F32, 32)
                .data(128)
                .0,
            "tensor_infos[1].offset",
        ),
        (
            "duplicate tensor name",
            B::gguf(2, 0)
                .tensor("a", &[8], F32, 0)
                .tensor("a", &[8], F32, 32)
                .data(64)
                .0,
            "tensor_infos[1].name",
        ),
        (
            "tensor name not UTF-8",
            B::gguf(1, 0)
                .str(b"\xff")
                .u32(1)
                .u64(8)
                .u32(F32)
                .u64(0)
                .data(32)
                .0,
            "tensor_infos[0].name",
        ),
        (
            "tensor name too long",
            B::gguf(1, 0)
                .tensor(&"x".repeat(5000), &[8], F32, 0)
                .data(32)
                .0,
            "tensor_infos[0].name",
        ),
    ]
}

fn safetensors_file(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data, 0);
    v
}

fn safetensors_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let st = safetensors_file;
    let ok = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    vec![
        ("st: shorter than 8 bytes", vec![1, 0, 0], "header_len"),
        (
            "st: header length huge",
            u64::MAX.to_le_bytes().to_vec(),
            "header_len",
        ),
        (
            "st: header length past end",
            {
                let mut v = st(ok, 8);
                v[0] = 0xff;
                v[1] = 0x7f;
                v
            },
            "header_len",
        ),
        ("st: header not an object", st("[1,2,3]", 0), "header"),
        ("st: header not JSON", st("{not json", 0), "header"),
        (
            "st: header not UTF-8",
            {
                let mut v = st("{\"a\":\"xx\"}", 0);
                v[14] = 0xff;
                v
            },
            "header",
        ),
        (
            "st: JSON nested deeply",
            st(
                &format!("{{\"a\":{}{}}}", "[".repeat(10000), "]".repeat(10000)),
                0,
            ),
            "header",
        ),
        (
            "st: unknown dtype",
            st(
                r#"{"w":{"dtype":"F24","shape":[2],"data_offsets":[0,6]}}"#,
                6,
            ),
            "w.dtype",
        ),
        (
            "st: missing dtype",
            st(r#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, 8),
            "w.dtype",
        ),
        (
            "st: negative dimension",
            st(
                r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "w.shape",
        ),
        (
            "st: too many dimensions",
            st(
                &format!(
                    r#"{{"w":{{"dtype":"U8","shape":[{}],"data_offsets":[0,1]}}}}"#,
                    vec!["1"; 40].join(",")
                ),
                1,
            ),
            "w.shape",
        ),
        (
            "st: shape overflow",
            st(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
                8,
            ),
            "w.shape",
        ),
        (
            "st: offsets past the end",
            st(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}}"#,
                8,
            ),
            "w.data_offsets",
        ),
        (
            "st: offsets reversed",
            st(
                r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
                8,
            ),
            "w.data_offsets",
        ),
        (
            "st: size mismatch",
            st(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            "w.data_offsets",
        ),
        (
            "st: three offsets",
            st(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}"#,
                8,
            ),
            "w.data_offsets",
        ),
        (
            "st: overlapping tensors",
            st(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            "b.data_offsets",
        ),
        (
            "st: hole in data",
            st(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            "w.data_offsets",
        ),
        ("st: trailing bytes", st(ok, 16), "data"),
        (
            "st: metadata value not a string",
            st(
                r#"{"__metadata__":{"format":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "__metadata__.format",
        ),
        ("st: tensor entry not an object", st(r#"{"w":5}"#, 0), "w"),
    ]
}

#[test]
fn crafted_gguf_files_are_rejected_with_the_field_named() {
    let cases = gguf_cases();
    assert!(cases.len() >= 30);
    for (what, bytes, field) in cases {
        let err = gguf::parse_header(&bytes).expect_err(what);
        assert_eq!(err.field, field, "{what}: {err}");
        assert!(!err.reason.is_empty());
    }
}

#[test]
fn crafted_safetensors_files_are_rejected_with_the_field_named() {
    for (what, bytes, field) in safetensors_cases() {
        let err = safetensors::parse_header(&bytes).expect_err(what);
        assert_eq!(err.field, field, "{what}: {err}");
    }
}

#[test]
fn errors_from_files_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes, field) in gguf_cases().into_iter().chain(safetensors_cases()) {
        let p = dir.path().join("crafted.bin");
        std::fs::write(&p, &bytes).unwrap();
        let err = if what.starts_with("st:") {
            safetensors::SafetensorsFile::open(&p).err().unwrap()
        } else {
            gguf::GgufFile::open(&p).err().unwrap()
        };
        let msg = err.to_string();
        assert!(matches!(err, Error::Malformed { .. }), "{what}: {msg}");
        assert!(
            msg.contains("crafted.bin") && msg.contains(field),
            "{what}: {msg}"
        );
    }
}

#[test]
fn valid_small_files_parse() {
    let g = B::gguf(2, 1)
        .str(b"general.architecture")
        .u32(8)
        .str(b"llama")
        .tensor("a", &[8], F32, 0)
        .tensor("b", &[32, 2], Q4_0, 32)
        .data(32 + 36);
    let h = gguf::parse_header(&g.0).unwrap();
    assert_eq!(h.tensors.len(), 2);
    let s = safetensors_file(
        r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        8,
    );
    let h = safetensors::parse_header(&s).unwrap();
    assert_eq!(h.metadata["format"], "pt");
}

/// SplitMix64, for reproducible mutations.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn no_truncation_or_mutation_panics() {
    let g = B::gguf(2, 3)
        .str(b"general.architecture")
        .u32(8)
        .str(b"llama")
        .str(b"tokens")
        .u32(9)
        .u32(8)
        .u64(3)
        .str(b"a")
        .str(b"bc")
        .str(b"")
        .str(b"nested")
        .u32(9)
        .u32(9)
        .u64(1)
        .u32(5)
        .u64(2)
        .u32(1)
        .u32(2)
        .tensor("a", &[8], F32, 0)
        .tensor("b", &[32, 2], Q4_0, 32)
        .data(32 + 36)
        .0;
    gguf::parse_header(&g).unwrap();
    let s = safetensors_file(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#,
        16,
    );
    safetensors::parse_header(&s).unwrap();

    // Every proper prefix of a valid GGUF file with tensors is an error, never a panic.
    for n in 0..g.len() {
        assert!(
            gguf::parse_header(&g[..n]).is_err(),
            "prefix of {n} bytes accepted"
        );
    }
    for n in 0..s.len() {
        assert!(
            safetensors::parse_header(&s[..n]).is_err(),
            "prefix of {n} bytes accepted"
        );
    }
    // Random byte flips: any result is fine, as long as nothing panics.
    let mut next = rng(42);
    for _ in 0..20_000 {
        let mut m = g.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        let _ = gguf::parse_header(&m);
        let mut m = s.clone();
        let i = (next() % m.len() as u64) as usize;
        m[i] = next() as u8;
        let _ = safetensors::parse_header(&m);
    }
}
