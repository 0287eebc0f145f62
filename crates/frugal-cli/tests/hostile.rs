//! The `frugal` binary against a hostile user (issue #22): outputs that are devices, FIFOs or
//! the run's own inputs; endless and blocking inputs; recipes that would write over their own
//! model; reports and policies that would pass a gate they should fail; an interrupted
//! `frugal measure -- CMD`. Every case must end (each run has a deadline), exit 2 (or the
//! documented code), and change no file but the declared outputs.

mod common;
use common::{brown_calib_and_eval, smollm2};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `frugal ARGS` in `cwd`, killed (and the test failed) if it takes longer than `secs`.
fn frugal_within(secs: u64, args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("frugal runs");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "frugal {args:?} hung for {secs} s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit code 2 and every needle in the message.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success());
}

fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

fn is_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// Every file under `dir` with its bytes' length and modification time: what must not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `/dev/null`, `/dev/full` and a FIFO as the output of every kind of command: refused before
/// any work, the device or FIFO left as it was (it was replaced by a regular file, exit 0).
#[test]
fn devices_and_fifos_are_never_outputs() {
    let Some(model) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    for target in [Path::new("/dev/null"), Path::new("/dev/full"), &fifo] {
        for args in [
            vec!["brown-text", "--files", "cj01", "-o", s(target)],
            vec!["dequantize", s(&model), s(target)],
            vec![
                "quantize",
                s(&model),
                s(target),
                "--type",
                "Q8_0",
                "--no-eval",
            ],
            vec![
                "prune",
                s(&model),
                s(target),
                "--method",
                "magnitude",
                "--no-eval",
            ],
            vec![
                "eval",
                "--per-genre",
                "1",
                "--dump-items",
                s(target),
                s(&model),
            ],
        ] {
            let out = frugal_within(60, &args, dir.path());
            assert_refused(&out, &["must be a regular file or not exist"]);
        }
    }
    assert!(is_char_device(Path::new("/dev/null")) && is_char_device(Path::new("/dev/full")));
    assert!(is_fifo(&fifo));
    // A folder is not replaced either.
    let out = frugal_within(60, &["dequantize", s(&model), s(dir.path())], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

/// An output that is one of the run's inputs (a text, the student, a teacher), by the same
/// name, a symbolic link or a hard link: refused before any work, nothing changed.
#[test]
fn no_output_is_an_input() {
    let Some(model) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let d = dir.path();
    std::os::unix::fs::symlink(d.join("calib.txt"), d.join("calib-link.txt")).unwrap();
    std::fs::hard_link(d.join("eval.txt"), d.join("eval-hard.txt")).unwrap();
    let before = snapshot(d);
    for (args, needle) in [
        (
            vec![
                "quantize",
                s(&model),
                "calib.txt",
                "--type",
                "Q8_0",
                "--calib",
                "calib.txt",
            ],
            "--calib",
        ),
        (
            vec![
                "quantize",
                s(&model),
                "calib-link.txt",
                "--type",
                "Q8_0",
                "--calib",
                "calib.txt",
            ],
            "--calib",
        ),
        (
            vec![
                "prune",
                s(&model),
                "eval-hard.txt",
                "--method",
                "magnitude",
                "--eval-text",
                "eval.txt",
            ],
            "--eval-text",
        ),
        (
            vec![
                "quantize",
                s(&model),
                s(&model),
                "--type",
                "Q8_0",
                "--no-eval",
            ],
            "input model",
        ),
        (
            vec![
                "distill",
                "--student",
                s(&model),
                "--teacher",
                s(&model),
                "--text",
                "calib.txt",
                "--out",
                "calib.txt",
                "--no-eval",
            ],
            "--text",
        ),
        (
            vec![
                "distill",
                "--student",
                s(&model),
                "--teacher",
                s(&model),
                "--text",
                "calib.txt",
                "--out",
                s(&model),
                "--no-eval",
            ],
            "--student",
        ),
    ] {
        let out = frugal_within(60, &args, d);
        assert_refused(&out, &["refusing to write over an input", needle]);
    }
    assert_eq!(snapshot(d), before, "a file changed");
    // A file inside an encoder folder (the tokenizer the run reads) is protected too; a new
    // file there is not refused by the guard.
    std::fs::create_dir(d.join("enc")).unwrap();
    std::fs::write(d.join("enc/tokenizer.json"), "{}").unwrap();
    let out = frugal_within(
        60,
        &[
            "eval",
            "enc",
            "--per-genre",
            "1",
            "--dump-items",
            "enc/tokenizer.json",
        ],
        d,
    );
    assert_refused(
        &out,
        &["refusing to write over an input", "a file inside model"],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("enc/tokenizer.json")).unwrap(),
        "{}"
    );
}

/// `/dev/zero`, a FIFO with no writer, and a sparse 4 GiB file as recipe, policy, report and
/// text: refused at once (the FIFO never blocks, the big file is read only to its cap).
#[test]
fn endless_and_blocking_inputs_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("pipe");
    mkfifo(&fifo);
    let big = d.join("big.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    std::fs::write(d.join("p.toml"), "max_kld = 0.1\n").unwrap();
    std::fs::write(d.join("r.json"), "{\"kld\": {\"mean\": 0.01}}").unwrap();
    let zero = Path::new("/dev/zero");
    for input in [zero, &fifo] {
        for args in [
            vec!["run", s(input), "--out", "o"],
            vec!["check", "--policy", s(input), "r.json"],
            vec!["check", "--policy", "p.toml", s(input)],
            vec!["inspect", s(input)],
        ] {
            let out = frugal_within(20, &args, d);
            assert_refused(&out, &["expected a regular file"]);
        }
    }
    for args in [
        vec!["run", "big.toml", "--out", "o"],
        vec!["check", "--policy", "big.toml", "r.json"],
        vec!["check", "--policy", "p.toml", "big.toml"],
    ] {
        let out = frugal_within(20, &args, d);
        assert_refused(&out, &["is larger than"]);
    }
    assert!(
        !d.join("o").exists(),
        "no output folder for a refused recipe"
    );
    if let Some(model) = smollm2() {
        for input in [zero, &fifo] {
            let out = frugal_within(20, &["eval", s(&model), "--text", s(input)], d);
            assert_refused(&out, &["--text", "expected a regular file"]);
            let out = frugal_within(
                20,
                &[
                    "quantize",
                    s(&model),
                    "q.gguf",
                    "--type",
                    "Q8_0",
                    "--calib",
                    s(input),
                ],
                d,
            );
            assert_refused(&out, &["--calib", "expected a regular file"]);
        }
        assert!(!d.join("q.gguf").exists());
    }
}

/// A recipe whose steps would write over its own model (the teacher and the reference), one
/// whose second step has a bad value, and a folder that holds another run: all refused before
/// step 1 runs, with the step's line; nothing written, the other run's reports unchanged.
#[test]
fn recipes_are_checked_whole_before_they_run() {
    let Some(model) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let d = dir.path();
    // The model sits where step 2 would write its output.
    std::fs::create_dir(d.join("out")).unwrap();
    std::fs::copy(&model, d.join("out/02-quantize.gguf")).unwrap();
    std::fs::write(
        d.join("own.toml"),
        "name = \"own\"\nmodel = \"out/02-quantize.gguf\"\n\
         [[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.1\n\
         [[step]]\nkind = \"quantize\"\ntype = \"Q8_0\"\n",
    )
    .unwrap();
    let before = snapshot(d);
    let out = frugal_within(60, &["run", "own.toml", "--out", "out"], d);
    assert_refused(
        &out,
        &["refusing to write over an input", "the recipe's model"],
    );
    assert_eq!(snapshot(d), before, "a file changed");
    // A text file that a step would write over (the Brown text lands in the folder).
    std::fs::write(
        d.join("text.toml"),
        format!(
            "name = \"t\"\nmodel = \"{}\"\n[[step]]\nkind = \"prune\"\nmethod = \"wanda\"\n\
             sparsity = 0.1\ncalib = {{ file = \"out/brown-ca01.txt\" }}\n\
             [[step]]\nkind = \"quantize\"\ntype = \"Q8_0\"\ncalib = {{ brown = \"ca01\" }}\n",
            model.display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("out/brown-ca01.txt"), "my own notes\n").unwrap();
    let before_text = snapshot(d);
    let out = frugal_within(60, &["run", "text.toml", "--out", "out"], d);
    assert_refused(&out, &["refusing to write over an input", "calib"]);
    assert_eq!(snapshot(d), before_text);
    // Step 2's unknown type is found before step 1 runs, with its line.
    std::fs::write(
        d.join("bad.toml"),
        format!(
            "name = \"b\"\nmodel = \"{}\"\n[[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\n\
             sparsity = 0.1\n[[step]]\nkind = \"quantize\"\ntype = \"Q9_X\"\n",
            model.display()
        ),
    )
    .unwrap();
    let out = frugal_within(60, &["run", "bad.toml", "--out", "fresh"], d);
    assert_refused(&out, &["step 2 (`quantize`, line 7)", "Q9_X"]);
    assert!(!d.join("fresh").exists(), "nothing written");
    // A folder holding the embedded default's run is not taken over by a recipe.
    let out = frugal_within(300, &["run", "--out", "default"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        d.join(format!(
            "default/.report.json.{}.4194305.partial",
            frugal_formats::guard::host_tag()
        )),
        b"left by a kill",
    )
    .unwrap();
    let before = snapshot(&d.join("default"));
    let out = frugal_within(60, &["run", "bad.toml", "--out", "default"], d);
    assert_refused(&out, &["Q9_X"]);
    std::fs::write(
        d.join("ok.toml"),
        format!(
            "name = \"ok\"\nmodel = \"{}\"\n[[step]]\nkind = \"quantize\"\ntype = \"Q8_0\"\n",
            model.display()
        ),
    )
    .unwrap();
    let out = frugal_within(60, &["run", "ok.toml", "--out", "default"], d);
    assert_refused(&out, &["holds the embedded default's run", "--force"]);
    assert_eq!(
        snapshot(&d.join("default")),
        before,
        "the other run changed"
    );
    // The embedded default does not take over a recipe's folder either; its own re-run
    // removes what a killed run left.
    std::fs::create_dir(d.join("recipe-run")).unwrap();
    std::fs::write(
        d.join("recipe-run/report.json"),
        "{\"recipe\": \"ok\", \"steps\": []}",
    )
    .unwrap();
    let out = frugal_within(60, &["run", "--out", "recipe-run"], d);
    assert_refused(&out, &["holds the run of recipe `ok`"]);
    let out = frugal_within(300, &["run", "--out", "recipe-run", "--force"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("recipe-run/report.json")).unwrap()).unwrap();
    assert_eq!(
        r["recipe"], "embedded-default",
        "--force replaced the other run's report"
    );
    let out = frugal_within(300, &["run", "--out", "default"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d
        .join(format!(
            "default/.report.json.{}.4194305.partial",
            frugal_formats::guard::host_tag()
        ))
        .exists());
}

/// A write that hits the file-size limit (as a full disk would) fails the run with exit 1 and
/// leaves no partial file behind.
#[test]
fn a_failed_write_leaves_nothing() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-c", "ulimit -f 2048; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_frugal"))
        .args(["dequantize", s(&model), "f32.gguf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("f32.gguf") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a file was left"
    );
}

/// Reports whose figures are strings, nulls or negative, empty reports and empty policies are
/// bad input (they passed `max_kld = 0.1`): a report is read through its types, so a figure of
/// the wrong form is refused naming the field, and only a report Frugal wrote passes.
#[test]
fn the_gate_fails_closed_on_bad_reports_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), "max_wh_per_1k_queries = \"1 kWh\"\n").unwrap();
    let real = frugal_within(
        20,
        &["measure", "--json", "--queries", "10", "--", "true"],
        d,
    );
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let real: serde_json::Value = serde_json::from_slice(&real.stdout).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut r = real.clone();
        r["per_1k_queries"][k] = v;
        r.to_string()
    };
    for (report, needle) in [
        (with("wh", "5".into()), "not a `measure` report"),
        (
            with("wh", serde_json::Value::Null),
            "not a `measure` report",
        ),
        (
            with("wh", serde_json::json!([0.01])),
            "not a `measure` report",
        ),
        ("{\"kld\": {\"mean\": 0.01}}".into(), "no `schema_version`"),
        ("{}".into(), "no `schema_version`"),
        ("[]".into(), "expected a JSON object"),
        ("null".into(), "expected a JSON object"),
        ("".into(), "not a JSON report"),
    ] {
        std::fs::write(d.join("r.json"), &report).unwrap();
        let out = frugal_within(20, &["check", "--policy", "p.toml", "r.json"], d);
        assert_refused(&out, &["r.json", needle]);
    }
    std::fs::write(d.join("r.json"), real.to_string()).unwrap();
    let out = frugal_within(20, &["check", "--policy", "p.toml", "r.json"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for empty in ["", "region = \"FRA\"\n"] {
        std::fs::write(d.join("e.toml"), empty).unwrap();
        let out = frugal_within(20, &["check", "--policy", "e.toml", "r.json"], d);
        assert_refused(&out, &["e.toml", "checks nothing"]);
    }
}

/// Cheap checks come before any work: a zero count, a calibration context of 1, an evaluation
/// text shorter than two chunks, a `--tensor-type` that matches nothing.
#[test]
fn cheap_checks_come_first() {
    let Some(model) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let d = dir.path();
    std::fs::write(d.join("short.txt"), "Too short to judge anything.\n").unwrap();
    for (args, needles) in [
        (
            vec![
                "quantize",
                s(&model),
                "o.gguf",
                "--type",
                "Q8_0",
                "--eval-chunks",
                "0",
            ],
            vec!["--eval-chunks", "0 is not at least 1"],
        ),
        (
            vec!["eval", s(&model), "--text", "eval.txt", "--ctx", "511"],
            vec!["even number of tokens"],
        ),
        (
            vec![
                "quantize",
                s(&model),
                "o.gguf",
                "--type",
                "Q8_0",
                "--calib",
                "calib.txt",
                "--calib-ctx",
                "1",
            ],
            vec!["--calib-ctx"],
        ),
        (
            vec![
                "prune",
                s(&model),
                "o.gguf",
                "--method",
                "magnitude",
                "--damp",
                "0",
            ],
            vec!["dampening fraction"],
        ),
        (
            vec![
                "quantize",
                s(&model),
                "o.gguf",
                "--type",
                "Q4_K_M",
                "--eval-text",
                "short.txt",
            ],
            vec!["short.txt", "at least 1024 (2 × ctx) are needed"],
        ),
        (
            vec![
                "prune",
                s(&model),
                "o.gguf",
                "--method",
                "magnitude",
                "--eval-text",
                "short.txt",
            ],
            vec!["short.txt", "(2 × ctx) are needed"],
        ),
        (
            vec![
                "quantize",
                s(&model),
                "o.gguf",
                "--type",
                "Q8_0",
                "--no-eval",
                "--tensor-type",
                "blk\\.99\\..*=Q4_0",
            ],
            vec!["matches no quantizable tensor"],
        ),
    ] {
        let out = frugal_within(60, &args, d);
        let n: Vec<&str> = needles.iter().map(|s| &**s).collect();
        assert_refused(&out, &n);
    }
    assert!(!d.join("o.gguf").exists(), "no output from a refused run");
    // `--export` that is a file is refused before the measured command runs.
    std::fs::write(d.join("notes.txt"), "mine").unwrap();
    let out = frugal_within(
        60,
        &[
            "measure",
            "--export",
            "notes.txt",
            "--",
            "sh",
            "-c",
            "touch ran",
        ],
        d,
    );
    assert_refused(&out, &["--export", "is not a folder"]);
    assert!(!d.join("ran").exists(), "the command ran");
}

/// A file that is neither GGUF nor safetensors is described in words, not as a byte array.
#[test]
fn messages_say_what_the_file_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.gguf"), "//7: a text file\n").unwrap();
    let out = frugal_within(20, &["inspect", "notes.gguf"], dir.path());
    assert_refused(&out, &["notes.gguf", "starts with the text \"//7: a te\""]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("[47"), "{err}");
}

/// `frugal measure -- CMD` stopped by SIGINT, SIGTERM or SIGHUP forwards the signal to the
/// command's process group, waits, ends what is left of the group (a shell's background job
/// ignores SIGINT), and exits with the command's status: 128 + the signal.
#[test]
fn an_interrupted_measurement_leaves_no_process_behind() {
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args([
                "measure",
                "--",
                "sh",
                "-c",
                "sleep 60 & echo $! > pid; wait",
            ])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let pid = loop {
            if let Ok(p) = std::fs::read_to_string(d.join("pid")) {
                if p.ends_with('\n') {
                    break p.trim().to_string();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the command never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        while child.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(30), "frugal did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The grandchild got the signal too (it may linger a moment as a zombie of init).
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        };
        let t1 = Instant::now();
        while alive() {
            assert!(
                t1.elapsed() < Duration::from_secs(5),
                "SIG{signal}: sleep {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A command that fails gives its own code.
    let dir = tempfile::tempdir().unwrap();
    let out = frugal_within(20, &["measure", "--", "sh", "-c", "exit 7"], dir.path());
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn a_run_over_its_memory_budget_is_refused_before_any_work() {
    let Some(model) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let d = dir.path();
    let before = snapshot(d);
    let gptq = |extra: &[&str]| {
        let mut args = vec![
            "quantize",
            s(&model),
            "o.gguf",
            "--type",
            "Q4_K_M",
            "--calib",
            "calib.txt",
            "--method",
            "gptq",
        ];
        args.extend_from_slice(extra);
        frugal_within(60, &args, d)
    };
    // SmolLM2's GPTQ plan: its 1536-wide FFN input's factorization, the Gram sums' tree,
    // states and a block: about 0.3 GiB; 64 MiB cannot hold it (nor the evaluation of the
    // output, whose logits dominate, so scratch files would not help: jobs::tests).
    assert_refused(
        &gptq(&["--max-memory", "64M"]),
        &[
            "memory plan: about",
            "more than --max-memory 64 MiB",
            "--calib-tokens",
        ],
    );
    // The scratch files' folder must be a folder.
    let out = gptq(&["--scratch-dir", "calib.txt"]);
    assert_refused(&out, &["--scratch-dir", "calib.txt"]);
    let out = frugal_within(
        60,
        &[
            "eval",
            s(&model),
            "--text",
            "eval.txt",
            "--reference",
            s(&model),
            "--max-memory",
            "0.1G",
        ],
        d,
    );
    assert_refused(&out, &["output layer", "more than --max-memory 102 MiB"]);
    // tune's plan: the largest of its importance matrix, a candidate judged beside the
    // input's logits kept between candidates, and a candidate loaded to measure its energy.
    let out = frugal_within(
        60,
        &[
            "tune",
            s(&model),
            "-o",
            "t.gguf",
            "--max-kld",
            "0.05",
            "--calib",
            "calib.txt",
            "--eval",
            "eval.txt",
            "--heldout",
            "calib.txt",
            "--max-memory",
            "150M",
        ],
        d,
    );
    assert_refused(
        &out,
        &[
            "memory plan: about",
            "the input's logits kept between candidates",
            "more than --max-memory 150 MiB",
            "--reference-cache-mib",
        ],
    );
    // A prune holds its pruned weights in F32 until written: the plan says so.
    let out = frugal_within(
        60,
        &[
            "prune",
            s(&model),
            "p.gguf",
            "--method",
            "magnitude",
            "--no-eval",
            "--max-memory",
            "200M",
        ],
        d,
    );
    assert_refused(
        &out,
        &[
            "the pruned weights, held in F32",
            "more than --max-memory 200 MiB",
        ],
    );
    let out = frugal_within(
        30,
        &[
            "eval",
            s(&model),
            "--text",
            "eval.txt",
            "--max-memory",
            "6X",
        ],
        d,
    );
    assert_refused(&out, &["--max-memory", "the unit must be K, M, G or T"]);
    // measure: weights as stored are read in place (the plan is the process, the vectors and
    // the decoding); decoded to F32 they are the plan's largest part, and the remedy says so.
    let out = frugal_within(
        60,
        &[
            "measure",
            s(&model),
            "--decoded-weights",
            "--max-memory",
            "300M",
        ],
        d,
    );
    assert_refused(
        &out,
        &[
            "memory plan: about",
            "every weight decoded to F32",
            "more than --max-memory 300 MiB",
            "without --decoded-weights",
        ],
    );
    let out = frugal_within(60, &["measure", s(&model), "--max-memory", "100M"], d);
    assert_refused(
        &out,
        &[
            "the weights not read in place",
            "decoding 48 positions",
            "more than --max-memory 100 MiB",
        ],
    );
    // distill: the student trained in F32 with AdamW's moments, planned before the teacher
    // runs.
    let out = frugal_within(
        60,
        &[
            "distill",
            "--student",
            s(&model),
            "--teacher",
            s(&model),
            "--text",
            "calib.txt",
            "--out",
            "st.gguf",
            "--max-memory",
            "400M",
        ],
        d,
    );
    assert_refused(
        &out,
        &[
            "its MLP weights in F32",
            "AdamW moments",
            "more than --max-memory 400 MiB",
            "--max-tokens",
        ],
    );
    assert_eq!(snapshot(d), before, "nothing written");
    // Within the budget the same plan is printed and the run goes on.
    let out = frugal_within(
        600,
        &[
            "quantize",
            s(&model),
            "o.gguf",
            "--type",
            "Q8_0",
            "--no-eval",
            "--max-memory",
            "4G",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("memory plan: about") && err.contains("the largest tensor decoded"),
        "{err}"
    );
}
