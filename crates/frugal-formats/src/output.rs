//! Safe output: every file Frugal writes goes to a temporary file in the target folder and is
//! renamed into place only when complete, so a reader never sees a partial file, a failed or
//! interrupted run leaves nothing behind, and an input is never written over.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files not yet committed or removed, so a signal handler can delete them.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Deletes every temporary output file of this process that is still pending. Call it from a
/// Ctrl-C handler before exiting; it is safe to call at any time.
pub fn remove_unfinished_outputs() {
    let pending = match PENDING.lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for p in pending {
        if p.is_dir() {
            let _ = fs::remove_dir_all(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
}

/// Makes a write past the file-size limit (`ulimit -f`) fail with an error instead of killing
/// the process with SIGXFSZ, so the unfinished output is removed like on a full disk. Call it
/// once at start-up.
pub fn fail_oversized_writes() {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to run.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// The temporary name (`.NAME.HOST.PID.partial`, next to `path`) an output is built under,
/// registered for cleanup before it is created, so that a signal arriving in between still
/// removes it.
fn register_temporary(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| Error::InvalidOutput {
        path: path.to_path_buf(),
        reason: "has no file name".into(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}.partial",
        crate::guard::host_tag(),
        std::process::id()
    ));
    let tmp = dir.join(tmp_name);
    PENDING
        .lock()
        .map_err(|_| Error::InvalidOutput {
            path: path.to_path_buf(),
            reason: "output registry poisoned".into(),
        })?
        .push(tmp.clone());
    Ok(tmp)
}

fn unregister(p: &Path) {
    if let Ok(mut pending) = PENDING.lock() {
        pending.retain(|q| q != p);
    }
}

/// A file being written: becomes visible at its final path only on [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

/// True when `a` and `b` name the same existing file (same device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl AtomicFile {
    /// Starts writing `path`. Fails if `path` is one of `inputs` (even through another name or a
    /// link), is a folder, or its folder does not exist.
    /// An existing output must be a regular file (never a device, FIFO or folder: renaming
    /// over `/dev/null` would replace it for every program). Temporary files that killed runs
    /// left beside it are removed first.
    pub fn create(path: &Path, inputs: &[&Path]) -> Result<Self> {
        if let Some(i) = inputs.iter().find(|i| same_file(path, i)) {
            return Err(Error::WouldOverwriteInput {
                path: path.to_path_buf(),
                input: i.display().to_string(),
            });
        }
        crate::guard::check_output(path, "output")?;
        if let Some(dir) = path.parent() {
            crate::guard::remove_stale_partials(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            });
        }
        let tmp = register_temporary(path)?;
        let file = match File::create(&tmp) {
            Ok(f) => f,
            Err(e) => {
                unregister(&tmp);
                return Err(Error::write(path, "creating output", e));
            }
        };
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("AtomicFile used after commit");
        let file = out
            .into_inner()
            .map_err(|e| Error::write(&self.path, "writing output", e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::write(&self.path, "syncing output", e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::write(&self.path, "renaming output into place", e))?;
        unregister(&self.tmp);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename durable; not every file system supports syncing a folder.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out
            .as_mut()
            .expect("AtomicFile used after commit")
            .write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out
            .as_mut()
            .expect("AtomicFile used after commit")
            .write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out
            .as_mut()
            .expect("AtomicFile used after commit")
            .flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            unregister(&self.tmp);
        }
    }
}

/// A folder being written (a model made of several files): built under a temporary name next to
/// its final path and renamed into place by [`AtomicDir::commit`]. The final path must not exist
/// (Frugal does not replace folders). Dropped or interrupted, it leaves nothing behind.
pub struct AtomicDir {
    path: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl AtomicDir {
    pub fn create(path: &Path) -> Result<Self> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(Error::OutputExists {
                path: path.to_path_buf(),
            });
        }
        let tmp = register_temporary(path)?;
        if let Err(e) = fs::create_dir(&tmp) {
            unregister(&tmp);
            return Err(Error::write(path, "creating output folder", e));
        }
        Ok(AtomicDir {
            path: path.to_path_buf(),
            tmp,
            done: false,
        })
    }

    /// Where to write the folder's files before the commit.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the folder into place.
    pub fn commit(mut self) -> Result<()> {
        if self.path.exists() {
            return Err(Error::InvalidOutput {
                path: self.path.clone(),
                reason: "appeared while it was being written".into(),
            });
        }
        fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::write(&self.path, "renaming output folder into place", e))?;
        unregister(&self.tmp);
        self.done = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
            unregister(&self.tmp);
        }
    }
}

/// A streaming writer's last check: every one of the `declared` tensors was written.
pub(crate) fn check_all_written(path: &Path, written: usize, declared: usize) -> Result<()> {
    if written != declared {
        return Err(Error::InvalidOutput {
            path: path.to_path_buf(),
            reason: format!("{written} of {declared} tensors written"),
        });
    }
    Ok(())
}

/// Writes `path` atomically with the bytes `fill` produces.
pub fn write_atomic(
    path: &Path,
    inputs: &[&Path],
    fill: impl FnOnce(&mut AtomicFile) -> io::Result<()>,
) -> Result<()> {
    let mut f = AtomicFile::create(path, inputs)?;
    fill(&mut f).map_err(|e| Error::write(path, "writing output", e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn commit_makes_the_file_appear_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&p, &[]).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!p.exists(), "visible before commit");
        f.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");

        let q = dir.path().join("dropped.bin");
        let mut f = AtomicFile::create(&q, &[]).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only out.bin remains"
        );
    }

    #[test]
    fn refuses_to_overwrite_an_input_even_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.gguf");
        fs::write(&input, b"original").unwrap();
        let link = dir.path().join("alias.gguf");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        for target in [&input, &link] {
            let err = write_atomic(target, &[&input], |f| f.write_all(b"new")).unwrap_err();
            assert!(matches!(err, Error::WouldOverwriteInput { .. }), "{err}");
        }
        assert_eq!(fs::read(&input).unwrap(), b"original");
    }

    /// Issue #22: `/dev/null` was replaced by a regular file, exit 0.
    #[test]
    fn a_device_or_folder_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        for p in [Path::new("/dev/null"), dir.path()] {
            let err = write_atomic(p, &[], |f| f.write_all(b"x")).unwrap_err();
            assert!(err.is_bad_input(), "{err}");
        }
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn a_folder_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        let d = AtomicDir::create(&out).unwrap();
        fs::write(d.tmp_path().join("a.json"), b"{}").unwrap();
        assert!(!out.exists());
        d.commit().unwrap();
        assert!(out.join("a.json").exists());
        assert!(
            AtomicDir::create(&out).is_err(),
            "an existing folder is not replaced"
        );
        let other = dir.path().join("other");
        let d = AtomicDir::create(&other).unwrap();
        fs::write(d.tmp_path().join("half"), b"x").unwrap();
        drop(d);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only `model` remains"
        );
    }

    #[test]
    fn a_failing_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let err = write_atomic(&p, &[], |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
