//! A Hugging Face checkpoint folder seen as a GGUF model, so that every command that takes a
//! GGUF model takes the folder too (`frugal quantize HF_DIR out.gguf --type Q4_K_M`, `eval`,
//! `tune`, `prune`, recipes), converted as it is read, with no intermediate file: the header is
//! what [`super::convert`] would write at the checkpoint's own precision (its first matrix's
//! dtype, as llama.cpp's converter guesses `--outtype`), and each tensor is a range of its
//! memory-mapped shard where the conversion leaves the bytes as they are. The rest — 1-D
//! tensors widened to F32, Q and K rows permuted (a tenth of a Llama's bytes), Gemma's shifted
//! norms, any tensor whose dtype differs from the guess — is converted when a command first
//! reads it and dropped when the command releases it ([`Part::lazy`]), so opening the folder
//! costs no conversion and a streaming command holds one converted tensor at a time. A command
//! on the folder therefore reads the same values as on `frugal convert`'s file (with
//! `--outtype f32` too: 16-bit values widen exactly), and writes the same bytes.
//!
//! [`install`] makes `GgufFile::open` use this view for folders.

use super::convert::{plan_folder, Source, ARCHS};
use super::{HfError, OutType};
use frugal_formats::gguf::{GgmlType, GgufFile, MappedBytes, Part};
use frugal_formats::hf::{is_hf_folder, read_json, HfFolder, MAX_SMALL_JSON};
use frugal_formats::safetensors::Dtype;
use std::path::Path;

/// Whether `path` is a checkpoint folder of a decoder Frugal converts (what commands route to
/// their language-model paths; a BERT folder stays an encoder).
pub fn is_decoder_folder(path: &Path) -> bool {
    if !is_hf_folder(path) {
        return false;
    }
    let Ok(Some(cfg)) = read_json(&path.join("config.json"), MAX_SMALL_JSON) else {
        return false;
    };
    let arch = cfg
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or("");
    ARCHS.iter().any(|(n, f)| *n == arch && f.is_decoder())
}

/// The precision llama.cpp's converter guesses for a checkpoint: its first matrix's dtype.
fn guess_outtype(folder: &HfFolder) -> OutType {
    match folder
        .tensors
        .iter()
        .find(|t| t.info.shape.len() >= 2)
        .map(|t| t.info.dtype)
    {
        Some(Dtype::BF16) => OutType::Bf16,
        Some(Dtype::F32) => OutType::F32,
        _ => OutType::F16,
    }
}

fn dtype_ggml(d: Dtype) -> Option<GgmlType> {
    match d {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

/// Opens the folder `dir` as a GGUF model (see the module's documentation).
pub fn open_view(dir: &Path) -> Result<GgufFile, HfError> {
    let folder = HfFolder::open(dir)?;
    let outtype = guess_outtype(&folder);
    let mut p = plan_folder(folder, dir, outtype)?;
    let metadata = std::mem::take(&mut p.metadata);
    let p = std::sync::Arc::new(p);
    let mut parts = Vec::with_capacity(p.tensors.len());
    for (i, t) in p.tensors.iter().enumerate() {
        let part = match &t.src {
            Source::Folder(s)
                if t.is_verbatim()
                    && dtype_ggml(p.folder.tensors[*s].info.dtype) == Some(t.ggml_type) =>
            {
                Part::ready(p.folder.tensor_mapped(&p.folder.tensors[*s]))
            }
            _ => {
                // Converted when first read, dropped when released.
                let len = t.ggml_type.bytes_for(t.dims.iter().product()).unwrap_or(0);
                let plan = std::sync::Arc::clone(&p);
                Part::lazy(len, move || {
                    let mut v = Vec::with_capacity(len as usize);
                    plan.stream_tensor(i, &mut |b| {
                        v.extend_from_slice(b);
                        Ok(())
                    })
                    .map_err(std::io::Error::other)?;
                    MappedBytes::from_bytes(&v)
                })
            }
        };
        parts.push((t.name.clone(), t.ggml_type, t.dims.clone(), part));
    }
    Ok(GgufFile::from_parts(dir, metadata, parts)?)
}

/// Installs [`open_view`] as `GgufFile::open`'s opener for folders (the program does it once at
/// start; tests that open folders call it too).
pub fn install() {
    frugal_formats::gguf::set_folder_opener(|dir| {
        open_view(dir).map_err(|e| match e {
            HfError::Formats(f) => f,
            other => frugal_formats::Error::InvalidInput {
                path: dir.to_path_buf(),
                reason: other.to_string(),
            },
        })
    });
}
