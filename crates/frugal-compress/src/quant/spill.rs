//! Where the block-wise pass keeps the tensors it has produced until the file is written: an
//! unnamed temporary file beside the output, not memory. At 7B scale a Q4_K model's block
//! weights are 3.6 GB, which memory would otherwise hold from the first block to the last;
//! spilled, they cost page cache the kernel may drop, and the file is read back one tensor at
//! a time while the output streams out.

use super::gptq::Produced;
use crate::Result;
use frugal_formats::gguf::GgmlType;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A produced tensor's record: its type, its errors (as their bits: exact through a
/// checkpoint's JSON, NaN too) and its place in the spill file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    ty: u32,
    error_bits: Option<(u64, Option<u64>)>,
    offset: u64,
    len: usize,
}

/// A store's index as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreIndex {
    entries: std::collections::BTreeMap<String, Entry>,
    end: u64,
}

/// Produced tensors by name, their bytes in an unnamed temporary file in a folder (created on
/// the first insert; removed by the system when dropped, even after a kill), or in a named
/// file a checkpoint keeps.
pub struct ProducedStore {
    /// The folder of the unnamed file, or the named file (for messages).
    place: PathBuf,
    file: Option<std::fs::File>,
    end: u64,
    index: HashMap<String, Entry>,
}

impl ProducedStore {
    /// A store spilling into `dir` (the output's folder: the output will need as much room).
    pub fn new_in(dir: &Path) -> ProducedStore {
        ProducedStore {
            place: dir.to_path_buf(),
            file: None,
            end: 0,
            index: HashMap::new(),
        }
    }

    /// An empty store whose file is `path` (created, or emptied), kept when the store is
    /// dropped: a checkpoint's.
    pub fn create_at(path: &Path) -> Result<ProducedStore> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| {
                frugal_formats::Error::io(path, "creating the produced tensors' file", e)
            })?;
        Ok(ProducedStore {
            place: path.to_path_buf(),
            file: Some(file),
            end: 0,
            index: HashMap::new(),
        })
    }

    /// The store a checkpoint recorded: `path` cut back to the recorded length (what was
    /// appended after the checkpoint is dropped).
    pub fn reopen(path: &Path, index: &StoreIndex) -> Result<ProducedStore> {
        let io = |e| frugal_formats::Error::io(path, "reopening the produced tensors' file", e);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < index.end {
            return Err(crate::Error::BadOptions(format!(
                "{}: {len} bytes, the checkpoint recorded {}: the file was cut",
                path.display(),
                index.end
            )));
        }
        file.set_len(index.end).map_err(io)?;
        Ok(ProducedStore {
            place: path.to_path_buf(),
            file: Some(file),
            end: index.end,
            index: index.entries.clone().into_iter().collect(),
        })
    }

    /// The index, for a checkpoint; the file's bytes are flushed to the disk first.
    pub fn checkpoint_index(&self) -> Result<StoreIndex> {
        if let Some(f) = &self.file {
            f.sync_data().map_err(|e| {
                frugal_formats::Error::io(&self.place, "flushing the produced tensors", e)
            })?;
        }
        Ok(StoreIndex {
            entries: self.index.clone().into_iter().collect(),
            end: self.end,
        })
    }

    /// Keeps `p` as `name` (replacing an earlier one of that name).
    pub fn insert(&mut self, name: String, p: Produced) -> Result<()> {
        let io = |e| frugal_formats::Error::io(&self.place, "spilling a produced tensor", e);
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile_in(&self.place).map_err(io)?);
        }
        let file = self.file.as_ref().expect("created above");
        file.write_all_at(&p.bytes, self.end).map_err(io)?;
        let entry = Entry {
            ty: p.ty.0,
            error_bits: p.errors.map(|(a, b)| (a.to_bits(), b.map(f64::to_bits))),
            offset: self.end,
            len: p.bytes.len(),
        };
        self.end += p.bytes.len() as u64;
        self.index.insert(name, entry);
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The type `name` was produced as.
    pub fn ty(&self, name: &str) -> Option<GgmlType> {
        self.index.get(name).map(|e| GgmlType(e.ty))
    }

    /// `name` read back, if produced.
    pub fn get(&self, name: &str) -> Result<Option<Produced>> {
        let Some(e) = self.index.get(name) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; e.len];
        if e.len > 0 {
            let file = self.file.as_ref().expect("a produced tensor was written");
            file.read_exact_at(&mut bytes, e.offset).map_err(|err| {
                frugal_formats::Error::io(&self.place, "reading back a produced tensor", err)
            })?;
        }
        Ok(Some(Produced {
            ty: GgmlType(e.ty),
            bytes,
            errors: e
                .error_bits
                .map(|(a, b)| (f64::from_bits(a), b.map(f64::from_bits))),
        }))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_come_back_as_they_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducedStore::new_in(dir.path());
        assert!(s.get("a").unwrap().is_none());
        let a = Produced {
            ty: GgmlType::Q8_0,
            bytes: (0..=255u8).cycle().take(1000).collect(),
            errors: Some((0.5, Some(0.25))),
        };
        let b = Produced {
            ty: GgmlType::F32,
            bytes: vec![7; 12],
            errors: None,
        };
        s.insert("a".into(), a.clone()).unwrap();
        s.insert("b".into(), b.clone()).unwrap();
        s.insert(
            "empty".into(),
            Produced {
                bytes: Vec::new(),
                ..b.clone()
            },
        )
        .unwrap();
        let got = s.get("a").unwrap().unwrap();
        assert_eq!((got.ty, &got.bytes, got.errors), (a.ty, &a.bytes, a.errors));
        let got = s.get("b").unwrap().unwrap();
        assert_eq!((got.ty, &got.bytes, got.errors), (b.ty, &b.bytes, b.errors));
        assert!(s.get("empty").unwrap().unwrap().bytes.is_empty());
        assert_eq!(
            (s.len(), s.ty("a"), s.contains("c")),
            (3, Some(GgmlType::Q8_0), false)
        );
        // Nothing is left in the folder: the file has no name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_reopened_store_is_the_one_checkpointed_and_drops_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut s = ProducedStore::create_at(&path).unwrap();
        let p = |b: u8, e: Option<(f64, Option<f64>)>| Produced {
            ty: GgmlType::Q4_K,
            bytes: vec![b; 100 + b as usize],
            errors: e,
        };
        s.insert("a".into(), p(1, Some((0.1, None)))).unwrap();
        s.insert("b".into(), p(2, Some((1.0 / 3.0, Some(f64::MIN_POSITIVE)))))
            .unwrap();
        assert_eq!(s.get("a").unwrap().unwrap().bytes, vec![1; 101]);
        let index = s.checkpoint_index().unwrap();
        let json = serde_json::to_string(&index).unwrap();
        s.insert("c".into(), p(3, None)).unwrap();
        drop(s);
        assert!(path.exists(), "a named store's file is kept");
        let back: StoreIndex = serde_json::from_str(&json).unwrap();
        let r = ProducedStore::reopen(&path, &back).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 101 + 102);
        assert_eq!((r.len(), r.contains("c")), (2, false));
        let b = r.get("b").unwrap().unwrap();
        assert_eq!(b.bytes, vec![2; 102]);
        assert_eq!(b.errors, Some((1.0 / 3.0, Some(f64::MIN_POSITIVE))));
        // A file shorter than its checkpoint says is refused.
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(ProducedStore::reopen(&path, &back).is_err());
    }
}
