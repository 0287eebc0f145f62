//! `remove_unfinished_outputs` deletes every pending temporary file of the process, so it is
//! tested in its own test binary, where no other test writes files at the same time.

use frugal_formats::output::{remove_unfinished_outputs, AtomicFile};
use std::io::Write;

#[test]
fn remove_unfinished_outputs_deletes_pending_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("y.gguf");
    let mut f = AtomicFile::create(&p, &[]).unwrap();
    f.write_all(b"data").unwrap();
    f.flush().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "the temporary exists"
    );
    remove_unfinished_outputs();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the temporary is gone"
    );
    // As after a signal: the process exits without running destructors.
    std::mem::forget(f);
    assert!(!p.exists());
}
