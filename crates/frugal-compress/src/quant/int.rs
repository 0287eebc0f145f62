//! Integer weights for safetensors models (format: `frugal_models::int_weights`): int8 per
//! output channel (symmetric) and int4 in groups of 32/64/128 input columns (asymmetric, with
//! the scale and offset of each group searched for the least squared error, the search ggml's
//! k-quants use). Linear-layer weights are quantized; embeddings, norms and biases stay F32,
//! as PyTorch's dynamic quantization does.

use super::codec::{Codec, LevelAccess};
use super::kquants::{make_qkx_quants, nearest_int};
use crate::{Error, Result};
use frugal_formats::gguf::GgmlType;
use frugal_formats::output::AtomicDir;
use frugal_formats::safetensors::{
    write_safetensors_file, Dtype, SafetensorsFile, StTensorToWrite,
};
use frugal_models::int_weights::{min_name, packed_name, scale_name, META_KEY};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

/// One integer scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntType {
    pub name: &'static str,
    pub bits: u8,
    /// Input columns per scale (None: one scale per output channel).
    pub group: Option<usize>,
    pub summary: &'static str,
}

/// Every scheme `frugal quantize --type` accepts for safetensors models.
pub const INT_TYPES: &[IntType] = &[
    IntType {
        name: "int8",
        bits: 8,
        group: None,
        summary: "int8 per output channel, symmetric (safetensors)",
    },
    IntType {
        name: "int4-g32",
        bits: 4,
        group: Some(32),
        summary: "int4 in groups of 32 columns, scale and offset (safetensors)",
    },
    IntType {
        name: "int4-g64",
        bits: 4,
        group: Some(64),
        summary: "int4 in groups of 64 columns, scale and offset (safetensors)",
    },
    IntType {
        name: "int4-g128",
        bits: 4,
        group: Some(128),
        summary: "int4 in groups of 128 columns, scale and offset (safetensors)",
    },
];

pub fn int_type(name: &str) -> Option<&'static IntType> {
    INT_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(name))
}

/// Whether a tensor is a linear-layer weight to quantize.
pub fn is_linear_weight(name: &str, shape: &[u64]) -> bool {
    shape.len() == 2
        && name.ends_with(".weight")
        && !name.contains("embeddings")
        && !name.contains("LayerNorm")
        && !name.contains("norm")
}

/// int8 per row: (q, scale per row).
pub fn int8_rows(w: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>) {
    let rows = w.len() / cols;
    let mut q = vec![0u8; w.len()];
    let mut s = vec![0f32; rows];
    q.par_chunks_mut(cols)
        .zip(s.par_iter_mut())
        .zip(w.par_chunks(cols))
        .for_each(|((qr, sr), wr)| {
            let amax = wr.iter().fold(0f32, |m, v| m.max(v.abs()));
            *sr = amax / 127.0;
            let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            for (o, &v) in qr.iter_mut().zip(wr) {
                *o = nearest_int(v * id).clamp(-127, 127) as i8 as u8;
            }
        });
    (q, s)
}

/// int4 in groups of `g` columns: (packed nibbles, scale, min) with W ≈ scale·q + min.
pub fn int4_groups(w: &[f32], cols: usize, g: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let rows = w.len() / cols;
    let groups = cols / g;
    let mut packed = vec![0u8; w.len() / 2];
    let mut scale = vec![0f32; rows * groups];
    let mut min = vec![0f32; rows * groups];
    packed
        .par_chunks_mut(cols / 2)
        .zip(scale.par_chunks_mut(groups))
        .zip(min.par_chunks_mut(groups))
        .zip(w.par_chunks(cols))
        .for_each(|(((pr, sr), mr), wr)| {
            let mut levels = vec![0u8; cols];
            let ones = vec![1f32; g];
            for (k, x) in wr.chunks_exact(g).enumerate() {
                (sr[k], mr[k]) = fit_group(x, &ones);
                group_levels(x, sr[k], mr[k], &mut levels[k * g..(k + 1) * g]);
            }
            for (b, pair) in pr.iter_mut().zip(levels.chunks_exact(2)) {
                *b = pair[0] | (pair[1] << 4);
            }
        });
    (packed, scale, min)
}

/// Scale and offset of one group (x ≈ d·l + m, l ∈ 0..=15), searched for the least weighted
/// squared error.
pub fn fit_group(x: &[f32], w: &[f32]) -> (f32, f32) {
    // The k-quant search allows only offsets ≤ 0; shift the group so it can use it.
    let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let shifted: Vec<f32> = x.iter().map(|&v| v - lo).collect();
    let mut l = vec![0u8; x.len()];
    let (d, neg_min) = make_qkx_quants(&shifted, 15, w, &mut l, -1.0, 0.1, 20, false);
    (d, lo - neg_min)
}

/// The nearest level 0..=15 of each value for x ≈ d·l + m.
fn group_levels(x: &[f32], d: f32, m: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = if d > 0.0 {
            nearest_int((v - m) / d).clamp(0, 15) as u8
        } else {
            0
        };
    }
}

/// int4 groups of `G` as a block layout for GPTQ (Frugal-internal, never written as such):
/// per group `[d: f32, m: f32, G/2 bytes of nibbles]`.
fn int4_row<const G: usize>(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let bb = 8 + G / 2;
    for (k, (b, o)) in x.chunks_exact(G).zip(y.chunks_exact_mut(bb)).enumerate() {
        let w: Vec<f32> = match qw {
            Some(q) => q[k * G..(k + 1) * G]
                .iter()
                .map(|&v| v.max(1e-12))
                .collect(),
            None => vec![1.0; G],
        };
        let (d, m) = fit_group(b, &w);
        o[..4].copy_from_slice(&d.to_le_bytes());
        o[4..8].copy_from_slice(&m.to_le_bytes());
        let mut lv = vec![0u8; G];
        group_levels(b, d, m, &mut lv);
        int4_set::<G>(o, &lv);
    }
}
fn int4_scales<const G: usize>(y: &[u8], o: &mut [(f32, f32)]) {
    let f = |i: usize| f32::from_le_bytes([y[i], y[i + 1], y[i + 2], y[i + 3]]);
    o[0] = (f(0), f(4));
}
fn int4_get<const G: usize>(y: &[u8], l: &mut [u8]) {
    for (k, v) in l[..G].iter_mut().enumerate() {
        *v = (y[8 + k / 2] >> (4 * (k % 2))) & 0xF;
    }
}
fn int4_set<const G: usize>(y: &mut [u8], l: &[u8]) {
    for (k, pair) in l[..G].chunks_exact(2).enumerate() {
        y[8 + k] = pair[0] | (pair[1] << 4);
    }
}

macro_rules! int4_codec {
    ($name:ident, $g:literal) => {
        static $name: Codec = Codec {
            // Not a ggml type: this layout only lives between GPTQ and the safetensors writer.
            ggml: GgmlType(u32::MAX),
            block: $g,
            block_bytes: 8 + $g / 2,
            sub: $g,
            lmax: 15,
            offset: 0,
            values: None,
            row: int4_row::<$g>,
            levels: Some(LevelAccess {
                scales: int4_scales::<$g>,
                get: int4_get::<$g>,
                set: int4_set::<$g>,
            }),
            regroup: None,
        };
    };
}
int4_codec!(INT4_G32, 32);
int4_codec!(INT4_G64, 64);
int4_codec!(INT4_G128, 128);

/// The GPTQ block layout of int4 groups of `g` (32, 64 or 128).
pub fn int4_codec(g: usize) -> Option<&'static Codec> {
    match g {
        32 => Some(&INT4_G32),
        64 => Some(&INT4_G64),
        128 => Some(&INT4_G128),
        _ => None,
    }
}

/// GPTQ layout bytes (rows of `[d, m, nibbles]` groups) to the safetensors tensors.
fn int4_from_blocks(bytes: &[u8], g: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let bb = 8 + g / 2;
    let n_groups = bytes.len() / bb;
    let mut packed = Vec::with_capacity(n_groups * g / 2);
    let (mut s, mut m) = (Vec::with_capacity(n_groups), Vec::with_capacity(n_groups));
    for b in bytes.chunks_exact(bb) {
        s.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        m.push(f32::from_le_bytes([b[4], b[5], b[6], b[7]]));
        packed.extend_from_slice(&b[8..]);
    }
    (packed, s, m)
}

/// Per linear weight of an encoder: XᵀX of its inputs on calibration passages (full-precision
/// model), and the number of rows.
pub fn encoder_hessians(
    dir: &Path,
    calib: &[Vec<u32>],
) -> Result<HashMap<String, (Vec<f64>, u64)>> {
    use frugal_models::linear::RecordOptions;
    let dev = candle_core::Device::Cpu;
    let mut bert = frugal_models::bert::Bert::load(dir, &dev)?;
    for l in bert.linears_mut() {
        l.start_recording(RecordOptions { gram: true });
    }
    bert.embed_ids(calib, 16)?;
    let mut out = HashMap::new();
    for l in bert.linears_mut() {
        let name = format!("{}.weight", l.name);
        if let Some(st) = l.take_stats() {
            out.insert(name, (st.gram.unwrap_or_default(), st.n_rows));
        }
    }
    Ok(out)
}

/// What [`quantize_safetensors_dir`] did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct IntReport {
    pub input: String,
    pub output: String,
    pub scheme: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub n_quantized: usize,
    pub quantized_parameters: u64,
    pub seconds: f64,
    /// `rtn`, or `gptq` with the calibration passages' count.
    pub method: String,
    /// Worst relative RMS error over the quantized weights, and its tensor.
    pub worst_rel_rmse: (f64, String),
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What [`quantize_tensors`] did.
struct Written {
    bytes: u64,
    n_quantized: usize,
    parameters: u64,
    worst: (f64, String),
}

impl Written {
    fn report(
        self,
        input: &Path,
        output: &Path,
        scheme: &'static IntType,
        input_bytes: u64,
        t0: std::time::Instant,
        method: String,
    ) -> IntReport {
        IntReport {
            input: input.display().to_string(),
            output: output.display().to_string(),
            scheme: scheme.name.to_string(),
            input_bytes,
            output_bytes: self.bytes,
            n_quantized: self.n_quantized,
            quantized_parameters: self.parameters,
            seconds: t0.elapsed().as_secs_f64(),
            method,
            worst_rel_rmse: self.worst,
        }
    }
}

/// Which scheme each linear weight gets: one for all, or one per tensor (absent: kept F32).
pub enum IntPlan<'a> {
    All(&'static IntType),
    PerTensor(&'a BTreeMap<String, &'static IntType>),
}

/// The `frugal.quantization` metadata of an int file (its JSON, in this field order).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum IntMeta<'a> {
    One {
        format: &'static str,
        version: u32,
        scheme: &'static str,
        bits: u8,
        group_size: Option<usize>,
    },
    Mixed {
        format: &'static str,
        version: u32,
        scheme: &'static str,
        tensors: BTreeMap<&'a str, &'static str>,
    },
}

impl IntPlan<'_> {
    fn scheme(&self, name: &str) -> Option<&'static IntType> {
        match self {
            IntPlan::All(s) => Some(s),
            IntPlan::PerTensor(m) => m.get(name).copied(),
        }
    }

    /// The `frugal.quantization` metadata: the scheme, or `mixed` with every tensor's.
    fn meta(&self) -> IntMeta<'_> {
        match self {
            IntPlan::All(s) => IntMeta::One {
                format: "frugal-int",
                version: 1,
                scheme: s.name,
                bits: s.bits,
                group_size: s.group,
            },
            IntPlan::PerTensor(m) => IntMeta::Mixed {
                format: "frugal-int",
                version: 1,
                scheme: "mixed",
                tensors: m.iter().map(|(k, s)| (k.as_str(), s.name)).collect(),
            },
        }
    }
}

/// The bytes a `[rows, cols]` F32 weight takes in `scheme` (None: F32), scales included, or
/// `None` when the scheme cannot hold it (groups that do not divide the columns).
pub fn int_bytes(rows: u64, cols: u64, scheme: Option<&IntType>) -> Option<u64> {
    match scheme {
        None => Some(4 * rows * cols),
        Some(IntType { group: None, .. }) => Some(rows * cols + 4 * rows),
        Some(IntType { group: Some(g), .. }) => {
            let g = *g as u64;
            (cols.is_multiple_of(g) && cols.is_multiple_of(2))
                .then(|| rows * cols / 2 + 8 * rows * (cols / g))
        }
    }
}

/// Writes the model file `input` to `output` with its linear weights quantized per tensor
/// (`plan`; weights it leaves out stay F32), atomically; metadata kept, `frugal.quantization`
/// says `mixed` and lists each tensor's scheme.
pub fn quantize_safetensors_planned(
    input: &Path,
    output: &Path,
    plan: &BTreeMap<String, &'static IntType>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<u64> {
    let f = SafetensorsFile::open(input)?;
    Ok(quantize_tensors(&f, output, &IntPlan::PerTensor(plan), None, progress)?.bytes)
}

/// Writes `f` to `output` with its linear weights in the plan's schemes (GPTQ where `hessians`
/// has the weight), everything else and the metadata as they are.
fn quantize_tensors(
    f: &SafetensorsFile,
    output: &Path,
    plan: &IntPlan,
    hessians: Option<&HashMap<String, (Vec<f64>, u64)>>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Written> {
    let mut owned: Vec<(String, Dtype, Vec<u64>, Vec<u8>)> = Vec::new();
    let mut n_quantized = 0;
    let mut qparams = 0u64;
    let mut worst = (0f64, String::new());
    // Sparse-stored (pruned) weights are decoded to dense F32 first; their zeros stay zero
    // through int8 and the output is an ordinary integer file.
    let sparse = frugal_models::int_weights::sparse_meta(f)?;
    type Item<'a> = (String, Dtype, Vec<u64>, std::borrow::Cow<'a, [u8]>);
    let mut items: Vec<Item> = Vec::new();
    for t in &f.header.tensors {
        let base = t
            .name
            .strip_suffix("_values")
            .or_else(|| t.name.strip_suffix("_index"))
            .filter(|b| sparse.tensors.contains_key(*b));
        match base {
            Some(b) if t.name.ends_with("_values") => {
                let w = frugal_models::int_weights::load_weight(f, b, &candle_core::Device::Cpu)?;
                let v: Vec<f32> = w.flatten_all()?.to_vec1()?;
                let shape = sparse.tensors[b].shape.clone();
                items.push((b.to_string(), Dtype::F32, shape, bytes_of(&v).into()));
            }
            Some(_) => {}
            None => items.push((
                t.name.clone(),
                t.dtype,
                t.shape.clone(),
                f.tensor_data(t).into(),
            )),
        }
    }
    // Every listed sparse tensor decoded exactly once, and no name twice.
    for name in sparse.tensors.keys() {
        let count = items.iter().filter(|(n, ..)| n == name).count();
        if count != 1 {
            return Err(Error::BadOptions(format!(
                "{}: sparse tensor `{name}` appears {count} times (its values missing, or also stored dense)",
                f.path().display()
            )));
        }
    }
    let n = items.len();
    for (i, (name, dtype, shape, data)) in items.iter().enumerate() {
        let scheme = match plan.scheme(name) {
            Some(s) if *dtype == Dtype::F32 && is_linear_weight(name, shape) => s,
            _ => {
                owned.push((name.clone(), *dtype, shape.clone(), data.to_vec()));
                progress(i + 1, n);
                continue;
            }
        };
        let (rows, cols) = (shape[0], shape[1] as usize);
        let w = f32s(data);
        let back: Vec<f32> = match scheme.group {
            None => {
                let (q, s) = int8_rows(&w, cols);
                let back = q
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| s[k / cols] * v as i8 as f32)
                    .collect();
                owned.push((name.clone(), Dtype::I8, shape.clone(), q));
                owned.push((scale_name(name), Dtype::F32, vec![rows], bytes_of(&s)));
                back
            }
            Some(g) => {
                if cols % g != 0 {
                    return Err(Error::BadOptions(format!(
                        "{}: {cols} columns are not a multiple of the group size {g}",
                        name
                    )));
                }
                let (p, s, m) = match hessians.and_then(|h| h.get(name)) {
                    Some((h, n)) if h.len() == cols * cols => {
                        let qw: Vec<f32> = (0..cols)
                            .map(|j| (h[j * cols + j] / (*n).max(1) as f64) as f32)
                            .collect();
                        let c = int4_codec(g).ok_or_else(|| {
                            Error::BadOptions(format!("no GPTQ layout for groups of {g}"))
                        })?;
                        let bytes = super::gptq::gptq_act_order_with(&w, cols, h, 0.01, &qw, c)?;
                        int4_from_blocks(&bytes, g)
                    }
                    _ => int4_groups(&w, cols, g),
                };
                let groups = (cols / g) as u64;
                let back = (0..w.len())
                    .map(|k| {
                        let q = (p[k / 2] >> (4 * (k % 2))) & 0xF;
                        let gi = (k / cols) * (cols / g) + (k % cols) / g;
                        s[gi] * q as f32 + m[gi]
                    })
                    .collect();
                owned.push((packed_name(name), Dtype::U8, vec![rows, cols as u64 / 2], p));
                owned.push((
                    scale_name(name),
                    Dtype::F32,
                    vec![rows, groups],
                    bytes_of(&s),
                ));
                owned.push((min_name(name), Dtype::F32, vec![rows, groups], bytes_of(&m)));
                back
            }
        };
        let (num, den) = w.iter().zip(&back).fold((0f64, 0f64), |(a, b), (&x, &y)| {
            (a + f64::from(x - y).powi(2), b + f64::from(x).powi(2))
        });
        let rel = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        n_quantized += 1;
        qparams += shape.iter().product::<u64>();
        progress(i + 1, n);
    }
    let mut meta: BTreeMap<String, String> = f.header.metadata.clone();
    meta.remove(frugal_models::int_weights::SPARSE_KEY);
    meta.insert(
        META_KEY.into(),
        serde_json::to_string(&plan.meta()).expect("the metadata serializes"),
    );
    let tensors: Vec<StTensorToWrite> = owned
        .iter()
        .map(|(name, dtype, shape, data)| StTensorToWrite {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    let written = write_safetensors_file(output, &[f.path()], &meta, &tensors)?;
    Ok(Written {
        bytes: written,
        n_quantized,
        parameters: qparams,
        worst,
    })
}

/// Quantizes the linear weights of one safetensors model file (e.g. a Frugal CNN; metadata
/// kept) into `output`, atomically.
pub fn quantize_safetensors_file(
    input: &Path,
    output: &Path,
    scheme: &'static IntType,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<IntReport> {
    let t0 = std::time::Instant::now();
    let f = SafetensorsFile::open(input)?;
    let w = quantize_tensors(&f, output, &IntPlan::All(scheme), None, progress)?;
    Ok(w.report(input, output, scheme, f.file_len(), t0, "rtn".into()))
}

/// Quantizes the linear weights of a sentence-transformers folder (`model.safetensors` plus
/// its configuration and tokenizer files, copied as they are) into a new folder, atomically.
pub fn quantize_safetensors_dir(
    input: &Path,
    output: &Path,
    scheme: &'static IntType,
    calib: Option<&[Vec<u32>]>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<IntReport> {
    let t0 = std::time::Instant::now();
    // GPTQ for the int4 groups when there are calibration passages.
    let hessians = match (calib, scheme.group) {
        (Some(c), Some(_)) if !c.is_empty() => Some(encoder_hessians(input, c)?),
        _ => None,
    };
    let model = input.join("model.safetensors");
    let f = SafetensorsFile::open(&model)?;
    let out = AtomicDir::create(output)?;
    // Every other file of the folder (configuration, tokenizer) as it is.
    let entries = std::fs::read_dir(input)
        .map_err(|e| frugal_formats::Error::io(input, "reading folder", e))?;
    for e in entries {
        let e = e.map_err(|e| frugal_formats::Error::io(input, "reading folder", e))?;
        let name = e.file_name();
        if name != "model.safetensors" && e.path().is_file() {
            // Opened through the guard: a file swapped for a FIFO is refused, never blocks.
            let mut from = frugal_formats::guard::open_input(&e.path(), "encoder file")?;
            let mut to = std::fs::File::create(out.tmp_path().join(&name))
                .map_err(|err| frugal_formats::Error::write(&e.path(), "copying", err))?;
            std::io::copy(&mut from, &mut to)
                .map_err(|err| frugal_formats::Error::write(&e.path(), "copying", err))?;
        }
    }
    let out_model = out.tmp_path().join("model.safetensors");
    let w = quantize_tensors(
        &f,
        &out_model,
        &IntPlan::All(scheme),
        hessians.as_ref(),
        progress,
    )?;
    out.commit()?;
    let method = match &hessians {
        Some(_) => format!(
            "gptq ({} calibration passages)",
            calib.map_or(0, |c| c.len())
        ),
        None => "rtn".into(),
    };
    Ok(w.report(input, output, scheme, f.file_len(), t0, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_groups_fit_each_group_and_pack_low_nibble_first() {
        let cols = 64;
        let w: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01 + 0.3)
            .collect();
        for g in [32, 64] {
            let (p, s, m) = int4_groups(&w, cols, g);
            assert_eq!(p.len(), w.len() / 2);
            let mut worst = 0f32;
            for k in 0..w.len() {
                let q = (p[k / 2] >> (4 * (k % 2))) & 0xF;
                let gi = (k / cols) * (cols / g) + (k % cols) / g;
                let y = s[gi] * q as f32 + m[gi];
                worst = worst.max((y - w[k]).abs());
            }
            // Range 1.0 over 15 steps: within one step even with the searched clipping.
            assert!(worst < 1.0 / 15.0, "g={g}: worst error {worst}");
        }
        let (q, s) = int8_rows(&w, cols);
        for k in 0..w.len() {
            assert!((s[k / cols] * q[k] as i8 as f32 - w[k]).abs() <= 0.5 * s[k / cols] + 1e-6);
        }
    }
}
