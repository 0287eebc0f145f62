//! Large working buffers (a block's Gram matrices, their partial sums, the GPTQ factorization)
//! placed in memory or, when a run's memory plan would not fit its budget, in an unnamed
//! temporary file mapped into memory: the kernel keeps its pages cached while memory is free
//! and writes them back and drops them under pressure, so they cost disk, not the anonymous
//! memory a budget limits. The arithmetic is the same either way (same values, same alignment),
//! so the output bytes do not depend on the placement.

use std::path::{Path, PathBuf};

/// Where a run puts its large working buffers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Allocated memory (the default: fastest, no disk traffic).
    #[default]
    Memory,
    /// Unnamed temporary files in this folder (the output's: the system removes them when
    /// the run ends, even after a kill).
    Files(PathBuf),
}

impl Placement {
    /// One line for the user: where the scratch matrices go.
    pub fn to_text(&self) -> String {
        match self {
            Placement::Memory => "in memory".into(),
            Placement::Files(d) => format!("in unnamed scratch files in {}", d.display()),
        }
    }
}

/// A value a scratch buffer holds: any bit pattern is one, and all-zero bytes are 0.0.
pub trait Plain: Copy + Default + Send + Sync + 'static {}
impl Plain for f32 {}
impl Plain for f64 {}

/// Bytes every buffer's start is aligned to: faer's own matrices' (a cache line), so that a
/// matrix viewed in a scratch buffer is laid out as faer would lay it out.
pub const ALIGN: usize = 64;

/// `len` zeroed values of `T`, aligned to [`ALIGN`] bytes, in memory or a mapped file.
pub struct Scratch<T: Plain> {
    ptr: *mut T,
    len: usize,
    store: Store,
    _t: std::marker::PhantomData<T>,
}

enum Store {
    Heap(std::alloc::Layout),
    /// The map the values live in (unmapped when dropped; the unnamed file goes with it).
    File {
        _map: memmap2::MmapMut,
    },
    Empty,
}

// The buffer owns its values like a Vec does.
unsafe impl<T: Plain> Send for Scratch<T> {}
unsafe impl<T: Plain> Sync for Scratch<T> {}

impl<T: Plain> Scratch<T> {
    /// `len` zeros where `placement` says.
    pub fn zeroed(len: usize, placement: &Placement) -> crate::Result<Scratch<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&b| b <= isize::MAX as usize - ALIGN)
            .ok_or(crate::Error::ScratchTooLarge { len })?;
        if bytes == 0 {
            return Ok(Scratch {
                ptr: std::ptr::NonNull::<T>::dangling().as_ptr(),
                len: 0,
                store: Store::Empty,
                _t: std::marker::PhantomData,
            });
        }
        match placement {
            Placement::Memory => {
                let layout =
                    std::alloc::Layout::from_size_align(bytes, ALIGN).expect("size checked above");
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
                if ptr.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                Ok(Scratch {
                    ptr,
                    len,
                    store: Store::Heap(layout),
                    _t: std::marker::PhantomData,
                })
            }
            Placement::Files(dir) => {
                let io = |e| frugal_formats::Error::io(dir, "creating a scratch file", e);
                let file = tempfile::tempfile_in(dir).map_err(io)?;
                file.set_len(bytes as u64).map_err(io)?;
                // SAFETY: the file is unnamed and private to this process: nothing else can
                // change it under the map.
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io)?;
                Ok(Scratch {
                    ptr: map.as_mut_ptr() as *mut T,
                    len,
                    store: Store::File { _map: map },
                    _t: std::marker::PhantomData,
                })
            }
        }
    }

    /// A copy of `v` in memory.
    pub fn from_slice(v: &[T]) -> Scratch<T> {
        let mut s = Scratch::zeroed(v.len(), &Placement::Memory).expect("a slice's size fits");
        s.copy_from_slice(v);
        s
    }

    /// True when the values are in a mapped file.
    pub fn is_file(&self) -> bool {
        matches!(self.store, Store::File { .. })
    }
}

impl<T: Plain> From<Vec<T>> for Scratch<T> {
    fn from(v: Vec<T>) -> Scratch<T> {
        Scratch::from_slice(&v)
    }
}

impl<T: Plain> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialised values (zeroed at creation) owned by
        // `store`, aligned to ALIGN (heap layout, or a page-aligned map).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Plain> Drop for Scratch<T> {
    fn drop(&mut self) {
        if let Store::Heap(layout) = self.store {
            // SAFETY: allocated with this layout in `zeroed`.
            unsafe { std::alloc::dealloc(self.ptr as *mut u8, layout) };
        }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Scratch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Scratch({} values {})",
            self.len,
            if self.is_file() {
                "in a file"
            } else {
                "in memory"
            }
        )
    }
}

/// Bytes free for an unprivileged writer in the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `s` a buffer statvfs fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_zeroed_aligned_and_hold_values_in_memory_and_in_files() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            Placement::Memory,
            Placement::Files(dir.path().to_path_buf()),
        ] {
            let mut s = Scratch::<f64>::zeroed(1000, &p).unwrap();
            assert_eq!(s.is_file(), p != Placement::Memory);
            assert_eq!(s.len(), 1000);
            assert!(s.iter().all(|&x| x == 0.0));
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
            s[999] = 2.5;
            s[0] = -1.0;
            assert_eq!((s[0], s[999]), (-1.0, 2.5));
            let e = Scratch::<f32>::zeroed(0, &p).unwrap();
            assert!(e.is_empty());
        }
        // The file is unnamed: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let missing = Placement::Files(dir.path().join("no-such-folder"));
        assert!(Scratch::<f64>::zeroed(8, &missing).is_err());
        assert!(Scratch::<f64>::zeroed(usize::MAX / 4, &Placement::Memory).is_err());
    }
}
