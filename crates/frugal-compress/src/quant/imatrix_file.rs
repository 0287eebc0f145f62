//! Importance matrices in llama.cpp's file format (what `llama-imatrix` writes and
//! `llama-quantize --imatrix` reads), so that either program can use the other's.
//!
//! The file is a GGUF with `general.type = "imatrix"`, `imatrix.datasets` (strings),
//! `imatrix.chunk_count` and `imatrix.chunk_size` (u32), and for each weight `W` two F32
//! tensors: `W.in_sum2` (`[n_in, n_mat]`: Σ x² over the tokens seen, per input column) and
//! `W.counts` (`[1, n_mat]`: how many tokens). A reader's value for a column is
//! `in_sum2 / count` in f32, or 1 where the count is 0 — `load_imatrix` in llama.cpp's
//! `tools/quantize/quantize.cpp`, which Frugal follows step for step so that the same file gives
//! the same weights, and so the same bytes.
//!
//! Frugal adds what a size budget weighs candidates by, as tensors llama.cpp's reader passes
//! over (it reads only the `.in_sum2` and `.counts` pairs): per entry `W.rnd_q8_0`, `W.rnd_q8k`
//! (where 256 tiles the rows) and `W.rnd_f16` (F32, `[n_in]`: the input's rounding errors,
//! [`super::InputRounding`]), and per weight measured `W.kl_gain` (F64, `[2]`: the weight's and
//! its input's KL gain, [`super::calibration::Gain`]). A file with them gives `quantize
//! --target-bpw` the same plan as calibrating on the text again; llama-imatrix's files have none.

use super::Imatrix;
use crate::{Error, Result};
use frugal_formats::gguf::{Array, GgmlType, GgufFile, TensorToWrite, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Longest dataset list and dataset name read.
const MAX_DATASETS: usize = 4096;

/// The suffixes of an entry's input-rounding tensors, in [`super::InputRounding::FORMATS`]'
/// order (q8_0, q8k, f16).
const ROUNDING_SUFFIXES: [&str; 3] = [".rnd_q8_0", ".rnd_q8k", ".rnd_f16"];
/// The suffix of a weight's KL gain.
const GAIN_SUFFIX: &str = ".kl_gain";

/// What an importance-matrix file says besides its entries (written into a quantized file's
/// `quantize.imatrix.*` keys, as `llama-quantize` writes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImatrixFileInfo {
    /// The path as the user gave it (llama-quantize records it so, cut to 127 bytes).
    pub path: String,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::BadOptions(format!("--imatrix {}: {why}", path.display()))
}

/// Reads an importance matrix written by `llama-imatrix` (or [`write_imatrix`]).
pub fn read_imatrix(path: &Path) -> Result<Imatrix> {
    let f = GgufFile::open(path).map_err(|e| {
        bad(
            path,
            format!("not an importance matrix in llama.cpp's GGUF format ({e})"),
        )
    })?;
    let h = &f.header;
    if h.tensors.is_empty() {
        return Err(bad(path, "no data in the file"));
    }
    let datasets_v = h.get("imatrix.datasets");
    let datasets = match datasets_v {
        Some(Value::Array(Array::String(v))) if v.len() <= MAX_DATASETS => v.clone(),
        Some(Value::Array(Array::String(_))) => {
            return Err(bad(path, "imatrix.datasets: too many entries"))
        }
        _ => Vec::new(),
    };
    let u32_of = |k: &str| -> Result<Option<u32>> {
        match h.get(k) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(*v)),
            Some(v) => Err(bad(
                path,
                format!("{k}: expected u32, found {}", v.summary()),
            )),
        }
    };
    let chunk_count = u32_of("imatrix.chunk_count")?;
    let chunk_size = u32_of("imatrix.chunk_size")?;
    // llama-quantize refuses a GGUF imatrix without its metadata.
    if datasets_v.is_none() || chunk_count.is_none() || chunk_size.is_none() {
        return Err(bad(
            path,
            "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)",
        ));
    }
    let mut pairs: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    let mut rounding_at: BTreeMap<&str, [Option<usize>; 3]> = BTreeMap::new();
    let mut gain_at: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in h.tensors.iter().enumerate() {
        if let Some(n) = t.name.strip_suffix(".in_sum2") {
            pairs.entry(n).or_default().0 = Some(i);
        } else if let Some(n) = t.name.strip_suffix(".counts") {
            pairs.entry(n).or_default().1 = Some(i);
        } else if let Some(n) = t.name.strip_suffix(GAIN_SUFFIX) {
            gain_at.insert(n, i);
        } else if let Some((k, n)) = ROUNDING_SUFFIXES
            .iter()
            .enumerate()
            .find_map(|(k, s)| Some((k, t.name.strip_suffix(s)?)))
        {
            rounding_at.entry(n).or_default()[k] = Some(i);
        }
    }
    let f32s = |i: usize| -> Result<Vec<f32>> {
        let t = &h.tensors[i];
        if t.ggml_type != GgmlType::F32 {
            return Err(bad(path, format!("{}: must be F32", t.name)));
        }
        Ok(f.tensor_data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let mut entries = HashMap::new();
    let mut n_tokens = 0u64;
    for (name, pair) in pairs {
        let (Some(s), Some(c)) = pair else {
            return Err(bad(path, format!("mismatched sums and counts for {name}")));
        };
        let sums = f32s(s)?;
        // llama.cpp rounds each count to an integer, then back to f32 for the division.
        let counts: Vec<f32> = f32s(c)?
            .iter()
            .map(|&c| {
                if c.is_finite() {
                    c.round() as i64 as f32
                } else {
                    0.0
                }
            })
            .collect();
        if counts.is_empty() || !sums.len().is_multiple_of(counts.len()) {
            return Err(bad(
                path,
                format!(
                    "{name}: {} sums for {} counts (not a whole number per matrix)",
                    sums.len(),
                    counts.len()
                ),
            ));
        }
        let ne0 = sums.len() / counts.len();
        let mut e = vec![0f32; sums.len()];
        for (j, &count) in counts.iter().enumerate() {
            for i in 0..ne0 {
                e[j * ne0 + i] = if count > 0.0 {
                    sums[j * ne0 + i] / count
                } else {
                    1.0
                };
            }
        }
        // Means of squares: a negative one is no statistic (llama-imatrix writes none).
        if let Some(v) = e.iter().find(|v| !v.is_finite() || **v < 0.0) {
            return Err(bad(
                path,
                format!("{name}: {v} (a mean of squares must be finite and non-negative)"),
            ));
        }
        n_tokens = n_tokens.max(counts.iter().fold(0f32, |m, &c| m.max(c)) as u64);
        entries.insert(name.to_string(), e);
    }
    // Frugal's statistics: each entry's input rounding (q8k present exactly where 256 tiles
    // the rows), for every entry or none (a budget prices a missing one as free), each
    // weight's gain; checked as strictly as the entries.
    if !rounding_at.is_empty() && rounding_at.len() != entries.len() {
        return Err(bad(
            path,
            format!(
                "input rounding for {} of its {} entries (Frugal writes it for all or none)",
                rounding_at.len(),
                entries.len()
            ),
        ));
    }
    let mut rounding = HashMap::new();
    for (name, at) in rounding_at {
        let Some(width) = entries.get(name).map(Vec::len) else {
            return Err(bad(
                path,
                format!("{name}: input rounding without an entry"),
            ));
        };
        let mut v: [Vec<f32>; 3] = Default::default();
        for (k, i) in at.iter().enumerate() {
            if let Some(i) = *i {
                v[k] = f32s(i)?;
            }
        }
        let [q8_0, q8k, f16] = v;
        let fits = |x: &[f32]| x.len() == width && x.iter().all(|e| e.is_finite() && *e >= 0.0);
        let q8k_fits = if width.is_multiple_of(256) {
            fits(&q8k)
        } else {
            q8k.is_empty()
        };
        if !fits(&q8_0) || !q8k_fits || !fits(&f16) {
            return Err(bad(
                path,
                format!("{name}: input rounding not {width} finite non-negative values each"),
            ));
        }
        rounding.insert(name.to_string(), super::InputRounding { q8_0, q8k, f16 });
    }
    let mut gains = HashMap::new();
    for (name, i) in gain_at {
        let t = &h.tensors[i];
        let d = f.tensor_data(t);
        if t.ggml_type != GgmlType::F64 || d.len() != 16 {
            return Err(bad(path, format!("{}: expected two F64 values", t.name)));
        }
        let g = |k: usize| f64::from_le_bytes(d[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        let gain = super::calibration::Gain {
            weight: g(0),
            input: g(1),
        };
        if ![gain.weight, gain.input]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
        {
            return Err(bad(
                path,
                format!("{}: gains must be finite and >= 0", t.name),
            ));
        }
        gains.insert(name.to_string(), gain);
    }
    let shown: String = path.display().to_string();
    Ok(Imatrix {
        entries,
        n_tokens,
        source: shown.clone(),
        file: Some(ImatrixFileInfo {
            path: shown,
            datasets,
            chunk_count: chunk_count.unwrap_or(0),
            chunk_size: chunk_size.unwrap_or(0),
        }),
        rounding,
        gains,
    })
}

/// One tensor as written: its name, type, dims and bytes.
type Owned = (String, GgmlType, [u64; 2], Vec<u8>);

/// Writes `m` in llama.cpp's format to `out` (atomically, never over one of `inputs`): each
/// entry's sums are its means times the tokens counted, so `llama-quantize` reads the means
/// back (to within the f32 rounding of that product); then Frugal's input rounding and gains
/// where `m` has them (the module's doc), exactly.
pub fn write_imatrix(
    out: &Path,
    inputs: &[&Path],
    m: &Imatrix,
    datasets: &[String],
    chunk_count: u32,
    chunk_size: u32,
) -> Result<u64> {
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut names: Vec<&String> = m.entries.keys().collect();
    names.sort();
    let mut owned: Vec<Owned> = Vec::new();
    for n in names {
        let v = &m.entries[n];
        let sums: Vec<u8> = v
            .iter()
            .flat_map(|&x| ((x as f64 * m.n_tokens as f64) as f32).to_le_bytes())
            .collect();
        owned.push((
            format!("{n}.in_sum2"),
            GgmlType::F32,
            [v.len() as u64, 1],
            sums,
        ));
        let count = (m.n_tokens as f32).to_le_bytes().to_vec();
        owned.push((format!("{n}.counts"), GgmlType::F32, [1, 1], count));
        if let Some(r) = m.rounding.get(n) {
            for (suffix, e) in ROUNDING_SUFFIXES.iter().zip([&r.q8_0, &r.q8k, &r.f16]) {
                if !e.is_empty() {
                    owned.push((
                        format!("{n}{suffix}"),
                        GgmlType::F32,
                        [e.len() as u64, 1],
                        f32_bytes(e),
                    ));
                }
            }
        }
    }
    let mut gained: Vec<(&String, &super::calibration::Gain)> = m.gains.iter().collect();
    gained.sort_by(|a, b| a.0.cmp(b.0));
    for (n, g) in gained {
        let bytes = [g.weight, g.input]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        owned.push((format!("{n}{GAIN_SUFFIX}"), GgmlType::F64, [2, 1], bytes));
    }
    let tensors: Vec<TensorToWrite> = owned
        .iter()
        .map(|(name, ggml_type, dims, data)| TensorToWrite {
            name,
            ggml_type: *ggml_type,
            dims,
            data,
        })
        .collect();
    let metadata = vec![
        ("general.type".to_string(), Value::String("imatrix".into())),
        (
            "imatrix.datasets".to_string(),
            Value::Array(Array::String(datasets.to_vec())),
        ),
        ("imatrix.chunk_count".to_string(), Value::U32(chunk_count)),
        ("imatrix.chunk_size".to_string(), Value::U32(chunk_size)),
    ];
    Ok(frugal_formats::gguf::write_gguf_file(
        out, inputs, &metadata, &tensors,
    )?)
}

/// The `quantize.imatrix.*` keys `llama-quantize` adds to a file quantized with `m` read from a
/// file (after `general.file_type`; integers as u32), replacing any the input carried.
pub fn set_quantize_keys(metadata: &mut Vec<(String, Value)>, m: &Imatrix) {
    let Some(info) = &m.file else {
        return;
    };
    const KEYS: [&str; 4] = [
        "quantize.imatrix.file",
        "quantize.imatrix.dataset",
        "quantize.imatrix.entries_count",
        "quantize.imatrix.chunks_count",
    ];
    metadata.retain(|(k, _)| !KEYS.contains(&k.as_str()));
    // strncpy into 128 bytes with the last forced to NUL: at most 127 bytes (cut in the middle
    // of a UTF-8 sequence as C cuts it; such a value is refused rather than written wrong).
    let cut = |s: &str| -> String {
        let b = s.as_bytes();
        let b = &b[..b.len().min(127)];
        let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
        String::from_utf8_lossy(b).into_owned()
    };
    metadata.push((KEYS[0].into(), Value::String(cut(&info.path))));
    if let Some(d) = info.datasets.first() {
        metadata.push((KEYS[1].into(), Value::String(cut(d))));
    }
    metadata.push((KEYS[2].into(), Value::U32(m.entries.len() as u32)));
    if info.chunk_count > 0 {
        metadata.push((KEYS[3].into(), Value::U32(info.chunk_count)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::calibration::Gain;

    #[test]
    fn writes_and_reads_back_and_refuses_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let mut entries = HashMap::new();
        entries.insert(
            "blk.0.attn_q.weight".to_string(),
            vec![0.5f32, 2.0, 0.0, 1e-3],
        );
        entries.insert("blk.0.ffn_down.weight".to_string(), vec![3.0f32; 8]);
        // Frugal's statistics: every entry's input rounding (no q8k: 4 and 8 columns), and
        // gains for one and for a weight without an entry (an untied token embedding).
        let rounding = HashMap::from([
            (
                "blk.0.attn_q.weight".to_string(),
                crate::quant::InputRounding {
                    q8_0: vec![1e-5, 2e-5, 0.0, 3e-7],
                    q8k: Vec::new(),
                    f16: vec![1e-9, 2e-9, 0.0, 3e-11],
                },
            ),
            (
                "blk.0.ffn_down.weight".to_string(),
                crate::quant::InputRounding {
                    q8_0: vec![1e-5; 8],
                    q8k: Vec::new(),
                    f16: vec![1e-9; 8],
                },
            ),
        ]);
        let gains = HashMap::from([
            ("blk.0.attn_q.weight".to_string(), Gain::same(0.1 + 1e-12)),
            (
                "token_embd.weight".to_string(),
                Gain {
                    weight: 3.5,
                    input: 0.0,
                },
            ),
        ]);
        let m = Imatrix {
            entries,
            n_tokens: 1000,
            source: "t".into(),
            file: None,
            rounding,
            gains,
        };
        write_imatrix(&p, &[], &m, &["brown".into()], 2, 512).unwrap();
        let r = read_imatrix(&p).unwrap();
        assert_eq!(r.n_tokens, 1000);
        for (k, v) in &m.entries {
            for (a, b) in v.iter().zip(&r.entries[k]) {
                assert!((a - b).abs() <= 1e-6 * a.abs(), "{k}: {a} {b}");
            }
        }
        // Exactly, bit for bit.
        assert_eq!(r.rounding, m.rounding);
        assert_eq!(r.gains, m.gains);
        // llama.cpp's own files have neither: written without them, read without them.
        let plain = Imatrix {
            rounding: HashMap::new(),
            gains: HashMap::new(),
            ..m.clone()
        };
        let p2 = dir.path().join("plain.gguf");
        write_imatrix(&p2, &[], &plain, &["brown".into()], 2, 512).unwrap();
        let r2 = read_imatrix(&p2).unwrap();
        assert!(r2.rounding.is_empty() && r2.gains.is_empty());
        assert_eq!(GgufFile::open(&p2).unwrap().header.tensors.len(), 4);
        // Frugal's statistics that do not fit their entry are refused: a wrong length, a q8k
        // term missing where 256 tiles the rows, the rounding of some entries only.
        let mut bad_len = m.clone();
        bad_len
            .rounding
            .get_mut("blk.0.ffn_down.weight")
            .unwrap()
            .q8_0
            .pop();
        write_imatrix(&p2, &[], &bad_len, &["brown".into()], 2, 512).unwrap();
        let e = read_imatrix(&p2).unwrap_err().to_string();
        assert!(e.contains("input rounding not 8"), "{e}");
        let mut no_q8k = m.clone();
        no_q8k
            .entries
            .insert("blk.0.ffn_up.weight".to_string(), vec![1.0; 256]);
        no_q8k.rounding.insert(
            "blk.0.ffn_up.weight".to_string(),
            crate::quant::InputRounding {
                q8_0: vec![1e-5; 256],
                q8k: Vec::new(),
                f16: vec![1e-9; 256],
            },
        );
        write_imatrix(&p2, &[], &no_q8k, &["brown".into()], 2, 512).unwrap();
        let e = read_imatrix(&p2).unwrap_err().to_string();
        assert!(e.contains("input rounding not 256"), "{e}");
        no_q8k.rounding.get_mut("blk.0.ffn_up.weight").unwrap().q8k = vec![1e-4; 256];
        write_imatrix(&p2, &[], &no_q8k, &["brown".into()], 2, 512).unwrap();
        assert_eq!(read_imatrix(&p2).unwrap().rounding, no_q8k.rounding);
        let mut partial = m.clone();
        partial.rounding.remove("blk.0.ffn_down.weight");
        write_imatrix(&p2, &[], &partial, &["brown".into()], 2, 512).unwrap();
        let e = read_imatrix(&p2).unwrap_err().to_string();
        assert!(e.contains("input rounding for 1 of its 2 entries"), "{e}");
        // A mean of squares below zero is no statistic.
        let mut negative = plain.clone();
        negative.entries.get_mut("blk.0.ffn_down.weight").unwrap()[3] = -1.0;
        write_imatrix(&p2, &[], &negative, &["brown".into()], 2, 512).unwrap();
        let e = read_imatrix(&p2).unwrap_err().to_string();
        assert!(e.contains("must be finite and non-negative"), "{e}");
        let bad_gain = Imatrix {
            gains: HashMap::from([("x".to_string(), Gain::same(f64::NAN))]),
            ..plain.clone()
        };
        write_imatrix(&p2, &[], &bad_gain, &["brown".into()], 2, 512).unwrap();
        let e = read_imatrix(&p2).unwrap_err().to_string();
        assert!(e.contains("gains must be finite"), "{e}");
        let info = r.file.as_ref().unwrap();
        assert_eq!(info.datasets, vec!["brown".to_string()]);
        assert_eq!((info.chunk_count, info.chunk_size), (2, 512));
        let mut md = vec![("general.file_type".to_string(), Value::U32(15))];
        set_quantize_keys(&mut md, &r);
        let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.file_type",
                "quantize.imatrix.file",
                "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count",
                "quantize.imatrix.chunks_count"
            ]
        );
        // Not an imatrix; a model GGUF without the metadata; truncations never panic.
        std::fs::write(dir.path().join("x"), b"not gguf").unwrap();
        assert!(read_imatrix(&dir.path().join("x")).is_err());
        let bytes = std::fs::read(&p).unwrap();
        // (The last 32 bytes may be the data section's alignment padding.)
        for cut in (0..bytes.len() - 32).step_by(7) {
            let q = dir.path().join("cut.gguf");
            std::fs::write(&q, &bytes[..cut]).unwrap();
            assert!(read_imatrix(&q).is_err(), "cut at {cut}");
        }
        let no_meta = dir.path().join("nometa.gguf");
        frugal_formats::gguf::write_gguf_file(
            &no_meta,
            &[],
            &[],
            &[TensorToWrite {
                name: "a.in_sum2",
                ggml_type: GgmlType::F32,
                dims: &[1, 1],
                data: &1f32.to_le_bytes(),
            }],
        )
        .unwrap();
        let e = read_imatrix(&no_meta).unwrap_err().to_string();
        assert!(e.contains("missing imatrix metadata"), "{e}");
    }
}
