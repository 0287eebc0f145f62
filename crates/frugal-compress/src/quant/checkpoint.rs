//! Checkpoints of a block-wise pass (GPTQ, AWQ), so that a long run killed part-way resumes
//! where it stopped and writes the same bytes as a run never interrupted.
//!
//! After every block, two files beside the output hold the progress: `OUT.checkpoint` (a
//! safetensors file, written atomically: the chunks' states entering the next block, the
//! importance matrix so far, and in its metadata the run's identity, the number of blocks done
//! and the caller's record — for [`super::gptq::blockwise_model`], the index of the tensors
//! produced and AWQ's choices) and `OUT.checkpoint.tensors` (the produced tensors' bytes,
//! appended; a resumed run cuts it back to the length the checkpoint records). Everything a
//! block's treatment depends on is in them, so the resumed run computes the same numbers. With
//! several MPI ranks each rank keeps its own pair (`.checkpoint.R`, `.checkpoint.R.tensors`):
//! its chunks' states are its own.

use super::calibration::Resume;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use frugal_formats::safetensors::{Dtype, SafetensorsFile};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where a pass keeps its checkpoint, and whether to continue from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The output file; the checkpoint's files are named after it ([`Checkpoint::files`]).
    pub output: PathBuf,
    /// Continue from a checkpoint made by the same run (refused if made by another).
    pub resume: bool,
}

const META_KEY: &str = "frugal.block_checkpoint";

impl Checkpoint {
    /// The checkpoint and tensor files of this rank for an output `out`.
    pub fn files(out: &Path) -> (PathBuf, PathBuf) {
        let comm = frugal_dist::world();
        let mut name = out.as_os_str().to_owned();
        name.push(".checkpoint");
        if comm.size() > 1 {
            name.push(format!(".{}", comm.rank()));
        }
        let meta = PathBuf::from(&name);
        name.push(".tensors");
        (meta, PathBuf::from(name))
    }

    /// Removes this rank's files (after the output is written, or before a fresh start).
    pub fn remove(&self) -> Result<()> {
        let (meta, tensors) = Checkpoint::files(&self.output);
        for p in [meta, tensors] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(frugal_formats::Error::io(&p, "removing a checkpoint", e).into())
                }
            }
        }
        Ok(())
    }
}

/// What a run must share with the checkpoint it resumes: the same input file (path, length,
/// modification time), the same calibration tokens (a hash), chunks, ranks and settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PassKey {
    pub input: String,
    pub input_bytes: u64,
    pub input_modified_ns: u128,
    pub tokens_fnv1a: u64,
    pub n_chunks: usize,
    pub ranks: usize,
    pub rank: usize,
    /// The method's settings and every tensor's type, as text.
    pub settings: String,
}

impl PassKey {
    pub fn new(input: &Path, chunks: &[Vec<u32>], settings: String) -> Result<PassKey> {
        let m = std::fs::metadata(input)
            .map_err(|e| frugal_formats::Error::io(input, "reading the input's size", e))?;
        let modified = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for c in chunks {
            for t in c.iter().chain(std::iter::once(&u32::MAX)) {
                for b in t.to_le_bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        let comm = frugal_dist::world();
        Ok(PassKey {
            input: std::fs::canonicalize(input)
                .unwrap_or_else(|_| input.to_path_buf())
                .display()
                .to_string(),
            input_bytes: m.len(),
            input_modified_ns: modified,
            tokens_fnv1a: h,
            n_chunks: chunks.len(),
            ranks: comm.size(),
            rank: comm.rank(),
            settings,
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta<R> {
    key: PassKey,
    blocks_done: usize,
    n_states: usize,
    record: R,
}

/// Saves the progress after `blocks_done` blocks atomically to this rank's checkpoint file:
/// `states` entering the next block, the importance matrix so far, the caller's `record`.
pub(crate) fn save<R: serde::Serialize>(
    out: &Path,
    key: &PassKey,
    blocks_done: usize,
    states: &[Tensor],
    imatrix: &HashMap<String, Vec<f32>>,
    record: &R,
) -> Result<()> {
    let (path, _) = Checkpoint::files(out);
    let mut tensors = Vec::with_capacity(states.len() + imatrix.len());
    for (k, s) in states.iter().enumerate() {
        tensors.push((format!("state.{k}"), s.to_dtype(DType::F32)?));
    }
    let sorted: BTreeMap<&String, &Vec<f32>> = imatrix.iter().collect();
    for (name, v) in sorted {
        tensors.push((
            format!("imatrix.{name}"),
            Tensor::from_slice(v, v.len(), &Device::Cpu)?,
        ));
    }
    let meta = Meta {
        key: key.clone(),
        blocks_done,
        n_states: states.len(),
        record,
    };
    let mut md = BTreeMap::new();
    md.insert(
        META_KEY.to_string(),
        serde_json::to_string(&meta).expect("checkpoint metadata serializes"),
    );
    frugal_models::convert::write_f32_safetensors(&path, &[], &md, &tensors)?;
    Ok(())
}

/// This rank's checkpoint for `out`, if there is one — where the pass resumes and the caller's
/// record: refused unless made by a run with the same `key`.
pub(crate) fn load<R: serde::de::DeserializeOwned>(
    out: &Path,
    key: &PassKey,
) -> Result<Option<(Resume, R)>> {
    let (path, _) = Checkpoint::files(out);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |m: String| Error::BadOptions(format!("checkpoint {}: {m}", path.display()));
    let f = SafetensorsFile::open(&path)?;
    let meta: Meta<R> = f
        .header
        .metadata
        .get(META_KEY)
        .ok_or_else(|| bad("not a Frugal block-wise checkpoint".into()))
        .and_then(|j| serde_json::from_str(j).map_err(|e| bad(e.to_string())))?;
    if meta.key != *key {
        return Err(bad(format!(
            "made by another run ({:?}, this one {:?}); remove it or run without --resume",
            meta.key, key
        )));
    }
    let f32s = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
        let t = f
            .tensor(name)
            .filter(|t| t.dtype == Dtype::F32)
            .ok_or_else(|| bad(format!("{name} is missing or not F32")))?;
        let v = f
            .tensor_data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((v, t.shape.iter().map(|&d| d as usize).collect()))
    };
    let states = (0..meta.n_states)
        .map(|k| {
            let (v, shape) = f32s(&format!("state.{k}"))?;
            Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut imatrix = HashMap::new();
    for t in &f.header.tensors {
        if let Some(name) = t.name.strip_prefix("imatrix.") {
            imatrix.insert(name.to_string(), f32s(&t.name)?.0);
        }
    }
    let resume = Resume {
        blocks_done: meta.blocks_done,
        states,
        imatrix,
    };
    Ok(Some((resume, meta.record)))
}
