//! Frugal's file formats: GGUF (read v2/v3, write v3), safetensors, sparse tensor layouts,
//! Fashion-MNIST's IDX, the Brown corpus, the embedded digits data set, and safe atomic output.
//!
//! Every parser works on bytes it has been handed and checks each length, count and offset
//! against what is there before using it: a crafted file produces an [`Error`] naming the file
//! and field, never a panic or an allocation out of proportion to the file.

pub mod assets;
pub mod brown;
pub mod digits;
pub mod error;
pub mod gguf;
pub mod guard;
pub mod hf;
pub mod idx;
pub mod inspect;
pub mod model_card;
pub mod output;
pub mod rng;
pub mod safetensors;
pub mod sentencepiece;
pub mod sparse;

pub use error::{Error, ParseError, Result};

use std::path::Path;

/// Memory-maps a file read-only; `None` for an empty file (which cannot be mapped).
pub(crate) fn map_file(path: &Path) -> Result<Option<memmap2::Mmap>> {
    let f = guard::open_input(path, "model")?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(path, "reading metadata of", e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only, and Frugal never writes to its inputs (output goes to new
    // files renamed into place). Another process truncating the file while it is mapped could
    // still fault; that is the usual caveat of memory-mapped model loading (llama.cpp shares it).
    let map =
        unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, "memory-mapping", e))?;
    Ok(Some(map))
}

/// Drops the whole pages of `[start, start + len)` of a read-only file mapping from the resident
/// set (`MADV_DONTNEED`). A hint: failures are ignored.
pub(crate) fn release_range(map: &memmap2::Mmap, start: u64, len: u64) {
    let page = 4096u64;
    let first = start.div_ceil(page) * page;
    let end = ((start + len) / page * page).min(map.len() as u64);
    if end > first {
        // SAFETY: the map is a read-only, private file mapping; MADV_DONTNEED only drops clean
        // pages, which the kernel reloads from the file on the next access. No reference into
        // the range is invalidated in meaning.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                first as usize,
                (end - first) as usize,
            )
        };
    }
}

/// An option's one name table: a unit-only enum whose names the command line (clap's
/// `ValueEnum`), recipes and reports (serde) and the reports' schema (schemars) all spell
/// alike, in `$case` (`"lowercase"`, `"kebab-case"`, `"snake_case"`). The crate that uses it
/// depends on serde, clap and schemars.
#[macro_export]
macro_rules! name_table {
    ($case:tt; $(#[$m:meta])* $vis:vis enum $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            serde::Serialize,
            serde::Deserialize,
            clap::ValueEnum,
            schemars::JsonSchema,
        )]
        #[serde(rename_all = $case)]
        #[value(rename_all = $case)]
        $vis enum $name { $($body)* }
    };
}
