//! The input/output guard: every path a run reads and writes, checked together before any work.
//!
//! A command (or a recipe, all its steps at once) declares its inputs and outputs in an
//! [`IoPlan`]; [`IoPlan::check`] then refuses, before anything is read or written:
//! - an input that does not exist, or is not a regular file (a folder where one is expected):
//!   devices such as `/dev/zero`, FIFOs and sockets would be read forever or block in `open`;
//! - an output that exists and is not a regular file (Frugal replaces outputs by renaming a
//!   temporary file over them, which would turn `/dev/null` into a plain file for everyone);
//! - an output that is one of the inputs (same device and inode, so through symbolic and hard
//!   links), is an existing file inside an input folder, or is named twice.
//!
//! Files are then opened by [`open_input`] (non-blocking, checked on the open descriptor, so a
//! path swapped for a FIFO after the check is still refused) and small files read by
//! [`read_capped`], which reads at most the limit + 1 bytes whatever size the file reports.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// What a path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// Either (a model may be a file or a folder).
    FileOrDir,
}

/// A file type in words, for messages.
fn kind_of(t: &fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn invalid(path: &Path, what: &str, reason: String) -> Error {
    Error::InvalidInput {
        path: path.to_path_buf(),
        reason: format!("{what}: {reason}"),
    }
}

/// Checks that `path` exists and is what `expect` says (following links), without opening it.
pub fn check_input(path: &Path, what: &str, expect: Expect) -> Result<fs::Metadata> {
    let m = fs::metadata(path).map_err(|e| {
        invalid(
            path,
            what,
            match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_string(),
                _ => format!("cannot be read ({e})"),
            },
        )
    })?;
    let t = m.file_type();
    let ok = match expect {
        Expect::File => t.is_file(),
        Expect::Dir => t.is_dir(),
        Expect::FileOrDir => t.is_file() || t.is_dir(),
    };
    if !ok {
        let wanted = match expect {
            Expect::File => "a regular file",
            Expect::Dir => "a folder",
            Expect::FileOrDir => "a regular file or a folder",
        };
        return Err(invalid(
            path,
            what,
            format!("is {}; expected {wanted}", kind_of(&t)),
        ));
    }
    Ok(m)
}

/// Checks that `path` may be written as an output file: it does not exist, or is a regular file;
/// its folder exists.
pub fn check_output(path: &Path, what: &str) -> Result<()> {
    let out = |reason: String| Error::RefusedOutput {
        path: path.to_path_buf(),
        reason: format!("{what}: {reason}"),
    };
    match fs::metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => {
            return Err(out(format!(
                "is {}; an output must be a regular file or not exist (Frugal replaces an \
                 output by renaming a new file over it)",
                kind_of(&m.file_type())
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symbolic link would be replaced by the file, not followed: refuse it.
            if fs::symlink_metadata(path).is_ok() {
                return Err(out("is a symbolic link to nothing".into()));
            }
        }
        Err(e) => return Err(out(format!("cannot be inspected ({e})"))),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(out(format!("its folder {} does not exist", dir.display())));
    }
    Ok(())
}

/// Opens an input file for reading without blocking (a FIFO with no writer would block in
/// `open`), and refuses anything but a regular file, checked on the open descriptor.
pub fn open_input(path: &Path, what: &str) -> Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            invalid(
                path,
                what,
                match e.kind() {
                    std::io::ErrorKind::NotFound => "does not exist".to_string(),
                    _ => format!("cannot be opened ({e})"),
                },
            )
        })?;
    let m = f
        .metadata()
        .map_err(|e| invalid(path, what, format!("cannot be inspected ({e})")))?;
    if !m.file_type().is_file() {
        return Err(invalid(
            path,
            what,
            format!("is {}; expected a regular file", kind_of(&m.file_type())),
        ));
    }
    Ok(f)
}

/// Reads a whole input file of at most `limit` bytes. At most `limit + 1` bytes are read,
/// whatever size the file claims, so an endless or growing file cannot exhaust memory.
pub fn read_capped(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let f = open_input(path, what)?;
    let mut bytes = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(path, what, format!("cannot be read ({e})")))?;
    if bytes.len() as u64 > limit {
        return Err(invalid(
            path,
            what,
            format!("is larger than {} (the most read)", human_bytes(limit)),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`] for UTF-8 text.
pub fn read_text_capped(path: &Path, what: &str, limit: u64) -> Result<String> {
    let bytes = read_capped(path, what, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        invalid(
            path,
            what,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The first bytes of a file in words: as text when they are printable, else in hex.
pub fn describe_start(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!(
            "it starts with the text {:?}",
            String::from_utf8_lossy(bytes)
        )
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("it starts with the bytes {}", hex.join(" "))
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// `path` made absolute and cleaned of `.` and `..` (its existing folder resolved through
/// links), so that two spellings of one output compare equal.
fn normalized(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    if let Ok(c) = abs.canonicalize() {
        return c;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => match dir.canonicalize() {
            Ok(d) => d.join(name),
            Err(_) => abs
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect(),
        },
        _ => abs,
    }
}

#[derive(Debug, Clone)]
struct Entry {
    what: String,
    path: PathBuf,
    expect: Expect,
}

/// Every path a run reads and writes, checked together by [`IoPlan::check`] before any work.
#[derive(Debug, Clone, Default)]
pub struct IoPlan {
    inputs: Vec<Entry>,
    outputs: Vec<Entry>,
}

impl IoPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// An input file (`what` names it in messages: "model", "--calib").
    pub fn input(&mut self, what: impl Into<String>, path: impl AsRef<Path>) -> &mut Self {
        self.add_input(what, path, Expect::File)
    }

    /// An input that is a folder, or a file or a folder.
    pub fn add_input(
        &mut self,
        what: impl Into<String>,
        path: impl AsRef<Path>,
        expect: Expect,
    ) -> &mut Self {
        self.inputs.push(Entry {
            what: what.into(),
            path: path.as_ref().to_path_buf(),
            expect,
        });
        self
    }

    /// An output file.
    pub fn output(&mut self, what: impl Into<String>, path: impl AsRef<Path>) -> &mut Self {
        self.outputs.push(Entry {
            what: what.into(),
            path: path.as_ref().to_path_buf(),
            expect: Expect::File,
        });
        self
    }

    /// An output folder (written whole; it must not exist).
    pub fn output_dir(&mut self, what: impl Into<String>, path: impl AsRef<Path>) -> &mut Self {
        self.outputs.push(Entry {
            what: what.into(),
            path: path.as_ref().to_path_buf(),
            expect: Expect::Dir,
        });
        self
    }

    /// A folder the run writes `files` into, created if missing: if it exists it must be a
    /// folder, and each of its `files` is an output.
    pub fn output_into(
        &mut self,
        what: impl Into<String>,
        dir: impl AsRef<Path>,
        files: &[&str],
    ) -> &mut Self {
        let (what, dir) = (what.into(), dir.as_ref().to_path_buf());
        if fs::symlink_metadata(&dir).is_ok() {
            self.outputs.push(Entry {
                what: what.clone(),
                path: dir.clone(),
                expect: Expect::FileOrDir,
            });
            for f in files {
                self.output(what.clone(), dir.join(f));
            }
        }
        self
    }

    /// The input paths declared so far.
    pub fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.inputs.iter().map(|e| e.path.as_path())
    }

    /// Checks every input and output, and that no output is an input or another output.
    pub fn check(&self) -> Result<()> {
        let mut ids = Vec::new();
        let mut input_dirs = Vec::new();
        for i in &self.inputs {
            let m = check_input(&i.path, &i.what, i.expect)?;
            ids.push((m.dev(), m.ino(), i));
            if m.is_dir() {
                input_dirs.push((normalized(&i.path), i));
            }
        }
        let mut seen: Vec<(PathBuf, &Entry)> = Vec::new();
        for o in &self.outputs {
            match o.expect {
                Expect::Dir => {
                    if fs::symlink_metadata(&o.path).is_ok() {
                        return Err(Error::OutputExists {
                            path: o.path.clone(),
                        });
                    }
                }
                // An existing folder written into (`output_into`): it must be a folder.
                Expect::FileOrDir => {
                    if !o.path.is_dir() {
                        return Err(Error::RefusedOutput {
                            path: o.path.clone(),
                            reason: format!("{}: exists and is not a folder", o.what),
                        });
                    }
                    continue;
                }
                Expect::File => check_output(&o.path, &o.what)?,
            }
            if let Ok(m) = fs::metadata(&o.path) {
                if let Some((_, _, i)) = ids.iter().find(|(d, n, _)| *d == m.dev() && *n == m.ino())
                {
                    return Err(Error::WouldOverwriteInput {
                        path: o.path.clone(),
                        input: format!("{} {}", i.what, i.path.display()),
                    });
                }
            }
            let n = normalized(&o.path);
            // A file that exists inside an input folder may be one the run reads (an encoder's
            // weights or tokenizer); a new file there is harmless.
            if fs::symlink_metadata(&o.path).is_ok() {
                if let Some((_, i)) = input_dirs.iter().find(|(d, _)| n.starts_with(d)) {
                    return Err(Error::WouldOverwriteInput {
                        path: o.path.clone(),
                        input: format!("a file inside {} {}", i.what, i.path.display()),
                    });
                }
            }
            if let Some((_, other)) = seen.iter().find(|(p, _)| *p == n) {
                return Err(Error::RefusedOutput {
                    path: o.path.clone(),
                    reason: format!("{} and {} name the same file", other.what, o.what),
                });
            }
            seen.push((n, o));
        }
        Ok(())
    }
}

/// This machine's name as it goes into temporary file names (`.NAME.HOST.PID.partial`), so a
/// folder shared between machines never has another machine's running output taken for a
/// dead one's.
pub fn host_tag() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let name: String = String::from_utf8_lossy(&buf[..if ok { end } else { 0 }])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

/// Removes the temporary files (`.NAME.HOST.PID.partial`) that killed Frugal processes of this
/// machine left in `dir`: those whose process no longer runs (another machine's are never
/// touched). Returns how many were removed.
pub fn remove_stale_partials(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
        else {
            continue;
        };
        let host = format!(".{}", host_tag());
        let Some(pid) = stem
            .rsplit_once('.')
            .filter(|(rest, _)| rest.ends_with(&host))
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if gone.is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_folders_are_refused_as_inputs_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for p in [Path::new("/dev/zero"), &fifo, dir.path()] {
            let e = read_capped(p, "policy", 1024).unwrap_err().to_string();
            assert!(
                e.contains("policy") && e.contains("expected a regular file"),
                "{e}"
            );
            assert!(check_input(p, "text", Expect::File).is_err());
        }
        for p in [Path::new("/dev/null"), &fifo] {
            let e = check_output(p, "output").unwrap_err().to_string();
            assert!(e.contains("must be a regular file or not exist"), "{e}");
        }
        assert!(check_output(&dir.path().join("new.gguf"), "output").is_ok());
        let e = check_output(&dir.path().join("no/such/out.gguf"), "output").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn reads_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_capped(&p, "t", 100).unwrap().len(), 100);
        let e = read_capped(&p, "t", 99).unwrap_err().to_string();
        assert!(e.contains("larger than 99 bytes"), "{e}");
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_text_capped(&p, "t", 10)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }

    #[test]
    fn an_output_may_not_be_an_input_through_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        fs::write(&model, b"x").unwrap();
        let hard = dir.path().join("hard.gguf");
        fs::hard_link(&model, &hard).unwrap();
        let soft = dir.path().join("soft.gguf");
        std::os::unix::fs::symlink(&model, &soft).unwrap();
        let dotted = dir.path().join(".").join("model.gguf");
        for out in [&model, &hard, &soft, &dotted] {
            let mut plan = IoPlan::new();
            plan.input("model", &model).output("output", out);
            let e = plan.check().unwrap_err();
            assert!(matches!(e, Error::WouldOverwriteInput { .. }), "{e}");
            assert!(e.to_string().contains("model"), "{e}");
        }
        let enc = dir.path().join("encoder");
        fs::create_dir(&enc).unwrap();
        fs::write(enc.join("model.safetensors"), b"x").unwrap();
        let mut plan = IoPlan::new();
        plan.add_input("model", &enc, Expect::Dir)
            .input("weights", enc.join("model.safetensors"))
            .output("items", enc.join("model.safetensors"));
        assert!(
            plan.check().is_err(),
            "a file the run reads inside an input folder"
        );
        let mut plan = IoPlan::new();
        plan.add_input("model", &enc, Expect::Dir)
            .output("items", enc.join("model.safetensors"));
        assert!(
            plan.check().is_err(),
            "an existing file inside an input folder"
        );
        let mut plan = IoPlan::new();
        plan.add_input("model", &enc, Expect::Dir)
            .output("items", enc.join("items.json"));
        plan.check().unwrap();
        let mut plan = IoPlan::new();
        plan.input("model", &model)
            .output("output", dir.path().join("a.gguf"))
            .output("report", dir.path().join("./a.gguf"));
        assert!(plan
            .check()
            .unwrap_err()
            .to_string()
            .contains("name the same file"));
        let mut plan = IoPlan::new();
        plan.input("model", &model)
            .output("output", dir.path().join("b.gguf"));
        plan.check().unwrap();
    }

    #[test]
    fn stale_partials_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // PIDs are below 2^22 on Linux: 4194305 never runs.
        let host = host_tag();
        let stale = dir.path().join(format!(".out.gguf.{host}.4194305.partial"));
        let ours = dir
            .path()
            .join(format!(".out.gguf.{host}.{}.partial", std::process::id()));
        let elsewhere = dir.path().join(".out.gguf.other-node.4194305.partial");
        let other = dir.path().join("notes.partial");
        for p in [&stale, &ours, &elsewhere, &other] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_partials(dir.path()), 1);
        assert!(!stale.exists() && ours.exists() && elsewhere.exists() && other.exists());
    }
}
