//! The `frugal` binary end to end: output, exit codes, and safe output.

mod common;
use common::{brown_calib_and_eval, smollm2};
use std::path::Path;
use std::process::{Command, Output};

fn frugal(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("frugal runs")
}

/// Asserts that `frugal` refused its input: exit code 2 and `needle` in the message.
fn assert_bad_input(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Runs `frugal ARGS --json`-style commands that must succeed, and parses their output.
fn frugal_json(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = frugal(args, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::report(&out.stdout)
}

/// The joules of every source of a report's `energy` block.
fn joules(report: &serde_json::Value) -> f64 {
    report["energy"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["joules"].as_f64().unwrap())
        .sum()
}

#[test]
fn inspect_json_on_smollm2() {
    let Some(p) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = frugal(&["inspect", "--json", p.to_str().unwrap()], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = common::report(&out.stdout);
    assert_eq!(j["n_tensors"], 272);
    assert_eq!(j["n_parameters"], 134_515_008u64);
    assert_eq!(j["architecture"], "llama");
    assert_eq!(
        j["metadata"]["llama.attention.layer_norm_rms_epsilon"],
        1e-5
    );
    assert_eq!(j["tensors"].as_array().unwrap().len(), 272);
}

#[test]
fn inspect_text_on_smollm2() {
    let Some(p) = smollm2() else { return };
    let out = frugal(&["inspect", p.to_str().unwrap()], Path::new("."));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("tensors       272"), "{text}");
    assert!(text.contains("parameters    134.5 M"), "{text}");
    assert!(text.contains("… 260 more (use --all)"), "{text}");
}

#[test]
fn bad_input_exits_2_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(
        &bad,
        b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    let out = frugal(&["inspect", "bad.gguf"], dir.path());
    assert_bad_input(&out, "bad.gguf");
    assert_bad_input(&out, "header.tensor_count");

    let out = frugal(&["inspect", "missing.gguf"], dir.path());
    assert_bad_input(&out, "missing.gguf");

    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let out = frugal(&["inspect", "notes.txt"], dir.path());
    assert_bad_input(&out, "not a recognised model file");

    let out = frugal(&["no-such-command"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_writes_the_default_report_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let out = frugal(&["run", "--out", "o"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The report and every model, nothing temporary.
    assert_eq!(
        names,
        [
            "report.html",
            "report.json",
            "report.md",
            "student-distilled.safetensors",
            "student-int8.safetensors",
            "student-labels.safetensors",
            "student-pruned.safetensors",
            "teacher-int8.safetensors",
            "teacher.safetensors"
        ]
    );
    let j: serde_json::Value =
        common::report(&std::fs::read(dir.path().join("o/report.json")).unwrap());
    assert_eq!(j["data"]["n_images"], 1797);
    // The int8 model is a valid classifier file `frugal eval` scores like the run did.
    let out = frugal(
        &[
            "eval",
            "o/student-int8.safetensors",
            "--data",
            "digits",
            "--json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = common::report(&out.stdout);
    let int8 = &j["classifier"]["models"][4];
    assert_eq!(int8["name"], "student-int8");
    assert_eq!(e["n_correct"], int8["eval"]["n_correct"], "{e}");
    let t8 = frugal_json(
        &[
            "eval",
            "o/teacher-int8.safetensors",
            "--data",
            "digits",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(j["classifier"]["models"][5]["name"], "teacher-int8");
    assert_eq!(
        t8["n_correct"], j["classifier"]["models"][5]["eval"]["n_correct"],
        "{t8}"
    );
    // Each model made from another is compared with its source (significance stated), and
    // the model recommended is one that passes the policy.
    let vs = j["versus_source"].as_array().unwrap();
    assert_eq!(vs.len(), 3, "{vs:?}");
    for v in vs {
        let c = &v["saving_joules_per_query"];
        let significant = c["significant"].as_bool().unwrap();
        let lo = c["ci95"][0].as_f64().unwrap();
        let hi = c["ci95"][1].as_f64().unwrap();
        assert_eq!(significant, lo > 0.0 || hi < 0.0, "{v}");
        assert_eq!(
            v["verdict"].as_str().unwrap().starts_with("no significant"),
            !significant,
            "{v}"
        );
    }
    if let Some(best) = j["recommended"]["model"].as_str() {
        let verdict = j["check"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["model"] == best)
            .unwrap();
        assert_eq!(verdict["pass"], true);
    }
    // Every model measured on the same workload, each figure labelled; the page is one
    // self-contained file with its charts inline.
    let measure = j["measure"].as_array().unwrap();
    assert_eq!(measure.len(), 6);
    for e in measure {
        let w = &e["wh_per_1k_queries"];
        assert!(w["mean"].as_f64().unwrap() > 0.0, "{e}");
        assert!(w["ci95"][0].as_f64() <= w["mean"].as_f64());
        assert!(!e["method"].as_str().unwrap().is_empty());
    }
    let page = std::fs::read_to_string(dir.path().join("o/report.html")).unwrap();
    assert!(
        page.contains("id=\"quality-size\"><svg") && page.contains("id=\"quality-energy\"><svg")
    );
    assert!(page.contains("id=\"label\"><svg") && !page.contains("<script"));
    render_in_chromium(&dir.path().join("o/report.html"), 6);
    let md = std::fs::read_to_string(dir.path().join("o/report.md")).unwrap();
    assert!(md.contains("| student-int8 | "), "{md}");
    // The pruned student is stored sparse: fewer bytes than the same network dense.
    let models = &j["classifier"]["models"];
    assert_eq!(models[3]["name"], "student-pruned");
    assert!(
        models[3]["file_bytes"].as_u64() < models[1]["file_bytes"].as_u64(),
        "{} vs {}",
        models[3]["file_bytes"],
        models[1]["file_bytes"]
    );

    std::fs::write(
        dir.path().join("recipe.toml"),
        "name = \"x\"\n[[step]]\nkind = \"eval\"\n",
    )
    .unwrap();
    let out = frugal(&["run", "recipe.toml"], dir.path());
    assert_bad_input(&out, "missing field `model`");
}

/// `frugal distill` trains a classifier on digits (labels, then distilled from that model as a
/// teacher, and from an ensemble), writes a model `frugal eval` scores the same, and leaves no
/// checkpoint behind.
#[test]
fn distill_trains_and_distils_a_digits_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let train = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "distill", "--data", "digits", "--epochs", "4", "--batch", "32", "--lr", "3e-3",
            "--json",
        ];
        args.extend_from_slice(extra);
        frugal_json(&args, dir.path())
    };
    let t = train(&["--arch", "teacher", "--out", "t.safetensors"]);
    assert!(
        t["eval"]["accuracy_pct"].as_f64().unwrap() > 90.0,
        "{}",
        t["eval"]
    );
    let s = train(&["--teacher", "t.safetensors", "--out", "s.safetensors"]);
    assert_eq!(s["epochs"].as_array().unwrap().len(), 4);
    assert!(
        s["eval"]["accuracy_pct"].as_f64().unwrap() > 70.0,
        "{}",
        s["eval"]
    );
    assert!(!dir.path().join("s.safetensors.checkpoint").exists());
    // The teacher's accuracy is reported next to the student's.
    assert_eq!(s["teacher_eval"]["n_correct"], t["eval"]["n_correct"]);
    // An ensemble distils from the mean of its members' logits: the same teacher twice is that
    // teacher (bit for bit), a second teacher changes the targets.
    let losses = |v: &serde_json::Value| -> Vec<f64> {
        let e = v["epochs"].as_array().unwrap();
        e.iter().map(|e| e["loss"].as_f64().unwrap()).collect()
    };
    let twice = train(&[
        "--teacher",
        "t.safetensors",
        "--teacher",
        "t.safetensors",
        "--out",
        "s2.safetensors",
    ]);
    assert_eq!(losses(&twice), losses(&s));
    assert_eq!(twice["teachers"].as_array().unwrap().len(), 2);
    train(&[
        "--arch",
        "teacher",
        "--seed",
        "1",
        "--out",
        "t1.safetensors",
    ]);
    let pair = train(&[
        "--teacher",
        "t.safetensors",
        "--teacher",
        "t1.safetensors",
        "--out",
        "s3.safetensors",
    ]);
    assert_ne!(losses(&pair), losses(&s));
    assert!(
        pair["teacher_eval"]["accuracy_pct"].as_f64().unwrap() > 90.0,
        "{}",
        pair["teacher_eval"]
    );
    // A language model: one teacher, no classifier options (the files exist, so the guard
    // passes and the options are judged).
    for f in ["s.gguf", "a.gguf", "b.gguf", "x.txt"] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    let lm = |extra: &[&str]| {
        let mut args = vec!["distill", "--student", "s.gguf", "--teacher", "a.gguf"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--text", "x.txt", "--out", "x.gguf"]);
        frugal(&args, dir.path())
    };
    assert_bad_input(&lm(&["--teacher", "b.gguf"]), "one --teacher");
    assert_bad_input(&lm(&["--attention-weight", "1000"]), "are for classifiers");
    // Attention transfer and decoupled KD change the targets, and still train (attention at a
    // weight for digits' 4×4 and 2×2 maps; decoupled KD at the paper's β = 8 learns slower
    // than these four epochs show in accuracy, so its loss is checked to fall).
    for extra in [["--attention-weight", "10"], ["--nckd-weight", "8"]] {
        let mut args = vec!["--teacher", "t.safetensors", "--out", "s4.safetensors"];
        args.extend_from_slice(&extra);
        let v = train(&args);
        let l = losses(&v);
        assert_ne!(l, losses(&s), "{extra:?}");
        assert!(l.windows(2).all(|w| w[1] < w[0]), "{extra:?}: {l:?}");
        if extra[0] == "--attention-weight" {
            let acc = v["eval"]["accuracy_pct"].as_f64().unwrap();
            assert!(acc > 70.0, "{}", v["eval"]);
        }
    }
    let out = frugal(
        &["eval", "s.safetensors", "--data", "digits", "--json"],
        dir.path(),
    );
    let e = common::report(&out.stdout);
    assert_eq!(e["n_correct"], s["eval"]["n_correct"]);
    let bad = frugal(
        &["distill", "--data", "cifar", "--out", "x.safetensors"],
        dir.path(),
    );
    assert_bad_input(&bad, "unknown data set");
    let bad = frugal(
        &[
            "distill",
            "--data",
            "digits",
            "--arch",
            "vgg",
            "--out",
            "x.safetensors",
        ],
        dir.path(),
    );
    assert_bad_input(&bad, "unknown architecture `vgg`");
    assert!(!dir.path().join("x.safetensors").exists());

    // The teacher pruned to 80 % by global magnitude, recovered by distillation from itself:
    // the file holds exactly that many zero weights, the input is untouched, and the recovered
    // model classifies better than the unrecovered one.
    // Stored sparse (values + bitmask) by default, decoded exactly: the same predictions as the
    // dense file of the same run, in under a third of its bytes.
    let before = std::fs::read(dir.path().join("t.safetensors")).unwrap();
    let prune = |out: &str, epochs: &str, storage: &str| {
        frugal_json(
            &[
                "prune",
                "t.safetensors",
                out,
                "--method",
                "magnitude",
                "--sparsity",
                "0.8",
                "--data",
                "digits",
                "--recover-epochs",
                epochs,
                "--storage",
                storage,
                "--json",
            ],
            dir.path(),
        )
    };
    let raw = prune("p0.safetensors", "0", "sparse");
    let rec = prune("p.safetensors", "3", "sparse");
    let dense = prune("pd.safetensors", "3", "dense");
    assert_eq!(
        std::fs::read(dir.path().join("t.safetensors")).unwrap(),
        before
    );
    assert_eq!(rec["epochs"].as_array().unwrap().len(), 3);
    assert_eq!(
        (rec["storage"].as_str(), dense["storage"].as_str()),
        (Some("bitmask"), Some("dense"))
    );
    assert_eq!(rec["eval"]["n_correct"], dense["eval"]["n_correct"]);
    let bytes = |v: &serde_json::Value| v["output_bytes"].as_u64().unwrap();
    assert!(
        3 * bytes(&rec) < bytes(&dense),
        "sparse {} vs dense {} bytes",
        bytes(&rec),
        bytes(&dense)
    );
    let load = |name: &str| {
        frugal_models::cnn::Cnn::load(&dir.path().join(name), &candle_core::Device::Cpu).unwrap()
    };
    let (sparse_model, dense_model) = (load("p.safetensors"), load("pd.safetensors"));
    let (mut zeros, mut total) = (0usize, 0usize);
    for ((n, a), (_, b)) in sparse_model
        .parameters()
        .unwrap()
        .iter()
        .zip(&dense_model.parameters().unwrap())
    {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{n} differs between the sparse and dense files");
        if n.ends_with(".weight") {
            total += a.len();
            zeros += a.iter().filter(|&&x| x == 0.0).count();
        }
    }
    assert!(
        zeros >= total * 8 / 10,
        "{zeros} of {total} weights are zero"
    );
    // int8 of the sparse-stored model: decoded first, so the same as int8 of the dense one.
    for (src, dst) in [
        ("p.safetensors", "q.safetensors"),
        ("pd.safetensors", "qd.safetensors"),
    ] {
        frugal_json(
            &["quantize", src, dst, "--type", "int8", "--json"],
            dir.path(),
        );
    }
    assert_eq!(
        load("q.safetensors").parameters().unwrap().len(),
        load("qd.safetensors").parameters().unwrap().len()
    );
    for (a, b) in load("q.safetensors")
        .parameters()
        .unwrap()
        .iter()
        .zip(&load("qd.safetensors").parameters().unwrap())
    {
        let a: Vec<f32> = a.1.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.1.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{}", a.len());
    }
    let acc = |v: &serde_json::Value| v["eval"]["accuracy_pct"].as_f64().unwrap();
    assert!(
        acc(&rec) > acc(&raw) && acc(&rec) > 85.0,
        "recovered {} vs unrecovered {}",
        rec["eval"],
        raw["eval"]
    );
    assert_eq!(rec["input_eval"]["n_correct"], t["eval"]["n_correct"]);
    for (args, msg) in [
        (
            vec![
                "prune",
                "t.safetensors",
                "x.safetensors",
                "--method",
                "magnitude",
            ],
            "--data",
        ),
        (
            vec![
                "prune",
                "t.safetensors",
                "x.safetensors",
                "--method",
                "wanda",
                "--data",
                "digits",
            ],
            "global magnitude",
        ),
        (
            vec![
                "prune",
                "t.safetensors",
                "x.safetensors",
                "--method",
                "magnitude",
                "--structure",
                "attn-heads",
                "--data",
                "digits",
            ],
            "--structure channels",
        ),
        (
            vec![
                "prune",
                "t.safetensors",
                "x.safetensors",
                "--method",
                "magnitude",
                "--structure",
                "channels",
                "--pattern",
                "2:4",
                "--data",
                "digits",
            ],
            "takes no --pattern",
        ),
    ] {
        assert_bad_input(&frugal(&args, dir.path()), msg);
    }
    assert!(!dir.path().join("x.safetensors").exists());

    // Half of every conv block's channels removed: a smaller dense model (half the filters,
    // fc1 reading half the features) that loads, evaluates as the run reported, and recovers
    // by distillation from the unpruned teacher.
    let ch = |out: &str, epochs: &str| {
        frugal_json(
            &[
                "prune",
                "t.safetensors",
                out,
                "--structure",
                "channels",
                "--method",
                "magnitude",
                "--sparsity",
                "0.5",
                "--data",
                "digits",
                "--recover-epochs",
                epochs,
                "--json",
            ],
            dir.path(),
        )
    };
    let (c0, c3) = (ch("c0.safetensors", "0"), ch("c3.safetensors", "4"));
    assert_eq!(
        c3["channels"]["conv_channels_after"],
        serde_json::json!([16, 32])
    );
    assert!(
        c3["channels"]["parameters_after"].as_u64() < c3["channels"]["parameters_before"].as_u64()
    );
    assert!(
        acc(&c3) > acc(&c0) && acc(&c3) > 85.0,
        "recovered {} vs unrecovered {}",
        c3["eval"],
        c0["eval"]
    );
    let small = load("c3.safetensors");
    assert_eq!(small.config.conv_channels, vec![16, 32]);
    let out = frugal(
        &["eval", "c3.safetensors", "--data", "digits", "--json"],
        dir.path(),
    );
    let e = common::report(&out.stdout);
    assert_eq!(e["n_correct"], c3["eval"]["n_correct"]);
}

/// Ctrl-C during a write: the process exits with 130 and leaves no partial file behind.
#[test]
fn interrupt_during_a_write_leaves_nothing() {
    let Some(model) = smollm2() else { return };
    for attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f32.gguf");
        let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args(["dequantize", model.to_str().unwrap(), out.to_str().unwrap()])
            .spawn()
            .unwrap();
        // Wait until the temporary output exists, then interrupt.
        let t0 = std::time::Instant::now();
        let seen = loop {
            let partial = std::fs::read_dir(dir.path()).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            });
            if partial || t0.elapsed().as_secs() > 60 {
                break partial;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if !seen {
            // The write finished before we could see it; try again.
            let _ = child.wait();
            eprintln!("attempt {attempt}: write finished first");
            continue;
        }
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        if status.success() {
            eprintln!("attempt {attempt}: write finished before the signal");
            continue;
        }
        assert_eq!(status.code(), Some(130));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        return;
    }
    panic!("could not interrupt a write in 5 attempts");
}

/// Review finding: `brown-text` must not write over one of the corpus files it reads.
#[test]
fn brown_text_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ca01");
    std::fs::write(&src, "\tThe/at jury/nn said/vbd ./.\n").unwrap();
    let out = frugal(
        &["brown-text", "--dir", ".", "--files", "ca01", "-o", "ca01"],
        dir.path(),
    );
    assert_bad_input(&out, "refusing");
    assert_eq!(
        std::fs::read_to_string(&src).unwrap(),
        "\tThe/at jury/nn said/vbd ./.\n"
    );
    let ok = frugal(
        &[
            "brown-text",
            "--dir",
            ".",
            "--files",
            "ca01",
            "-o",
            "text.txt",
        ],
        dir.path(),
    );
    assert!(ok.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("text.txt")).unwrap(),
        "The jury said.\n"
    );
}

/// Review finding: `--chunks 0` is an input error, not a NaN perplexity.
#[test]
fn eval_rejects_zero_chunks() {
    let Some(p) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), "word ".repeat(3000)).unwrap();
    let out = frugal(
        &[
            "eval",
            p.to_str().unwrap(),
            "--text",
            "t.txt",
            "--ctx",
            "64",
            "--chunks",
            "0",
        ],
        dir.path(),
    );
    assert_bad_input(&out, "--chunks");
}

/// `frugal quantize` writes the file and judges it against its input.
#[test]
fn quantize_reports_the_quality_of_its_output() {
    let Some(p) = smollm2() else { return };
    let Some(brown) = frugal_formats::assets::require_or_skip(
        frugal_formats::assets::brown_dir(),
        "Brown corpus",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = frugal_formats::brown::select_ids(&brown, "cj13-cj20").unwrap();
    std::fs::write(
        dir.path().join("t.txt"),
        frugal_formats::brown::plain_text(&brown, &ids).unwrap(),
    )
    .unwrap();
    let out = frugal(
        &[
            "quantize",
            p.to_str().unwrap(),
            "q8.gguf",
            "--type",
            "Q8_0",
            "--eval-text",
            "t.txt",
            "--eval-chunks",
            "2",
            "--json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = common::report(&out.stdout);
    assert_eq!(j["quantize"]["target"], "Q8_0");
    let kld = j["quality"]["kld"]["mean"].as_f64().unwrap();
    // Q8_0 of a Q4_1 model is nearly lossless against it.
    assert!(kld > 0.0 && kld < 0.01, "mean KLD {kld}");
    assert!(j["quality"]["kld"]["same_top1_pct"].as_f64().unwrap() > 90.0);
    assert!(dir.path().join("q8.gguf").exists());
    // The policy gate on the real report: Q8_0 of a Q4_1 model is not 2× smaller (fails the
    // default policy's size clause), and passes its quality clauses.
    std::fs::write(dir.path().join("q8.json"), &out.stdout).unwrap();
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
    let c = frugal(
        &[
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "q8.json",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(c.status.code(), Some(1));
    let c = common::report(&c.stdout);
    for clause in c["models"][0]["clauses"].as_array().unwrap() {
        let want = clause["key"] != "min_size_reduction";
        assert_eq!(clause["pass"], want, "{clause}");
    }

    let out = frugal(
        &["quantize", p.to_str().unwrap(), "x.gguf", "--type", "Q3_XL"],
        dir.path(),
    );
    assert_bad_input(&out, "unknown type `Q3_XL`");
}

/// An IQ4_NL file of the real model (its tied embedding IQ4_NL too) evaluates both ways: with
/// the weights decoded (quantize's own judgement) and read in place by the IQ4 kernels
/// (`--quantized-kernels`), to nearly the same KLD (the paths round the output layer's input
/// alike but sum in another order); before, the streamed evaluation refused the IQ4 embedding.
#[test]
fn an_iq4_nl_file_evaluates_decoded_and_in_place() {
    let Some(p) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let p = p.to_str().unwrap();
    let kld = |j: &serde_json::Value| j["kld"]["mean"].as_f64().unwrap();
    let q = frugal_json(
        &[
            "quantize",
            p,
            "iq4.gguf",
            "--type",
            "IQ4_NL",
            "--pure",
            "--eval-text",
            "eval.txt",
            "--eval-chunks",
            "1",
            "--json",
        ],
        dir.path(),
    );
    let decoded = kld(&q["quality"]);
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "iq4.gguf",
            "--reference",
            p,
            "--text",
            "eval.txt",
            "--chunks",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        frugal_json(&args, dir.path())
    };
    assert_eq!(kld(&eval(&[])), decoded);
    let in_place = kld(&eval(&["--quantized-kernels"]));
    eprintln!("IQ4_NL mean KLD: decoded {decoded}, in place {in_place}");
    assert!(decoded > 0.01, "{decoded}");
    assert!(
        (in_place - decoded).abs() < 0.03 * decoded,
        "{in_place} vs {decoded}"
    );
}

/// GPTQ and AWQ end to end on the real model, with a small calibration budget: each must write
/// a file that evaluates closer to the input than plain rounding to the same type; AWQ's scales
/// are reported per group and folded into the norms written to the file; given no text, AWQ
/// calibrates on Brown's multi-genre mix.
#[test]
fn gptq_and_awq_beat_rounding_on_smollm2() {
    let Some(p) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "quantize",
            p.to_str().unwrap(),
            "out.gguf",
            "--type",
            "Q4_0",
            "--eval-text",
            "eval.txt",
            "--eval-chunks",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        frugal_json(&args, dir.path())
    };
    let kld = |j: &serde_json::Value| j["quality"]["kld"]["mean"].as_f64().unwrap();
    let calibrated = |method: &str, extra: &[&str]| {
        let mut args = vec![
            "--calib",
            "calib.txt",
            "--calib-ctx",
            "256",
            "--calib-tokens",
            "512",
            "--method",
            method,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let rtn = kld(&run(&[]));
    let gptq = kld(&calibrated("gptq", &[]));
    assert!(gptq < 0.85 * rtn, "GPTQ mean KLD {gptq} vs rounding {rtn}");
    // A float type among GPTQ's choices (an override here, a size budget's F16 alike) is not
    // rounded: written as the input's values in F16, every column kept.
    calibrated(
        "gptq",
        &["--tensor-type", "^blk\\.0\\.attn_q\\.weight$=F16"],
    );
    let input = frugal_formats::gguf::GgufFile::open(&p).unwrap();
    let written = frugal_formats::gguf::GgufFile::open(dir.path().join("out.gguf")).unwrap();
    let tensor = |f: &frugal_formats::gguf::GgufFile, name: &str| {
        let t = f.header.tensors.iter().find(|t| t.name == name).unwrap();
        (
            t.ggml_type,
            frugal_compress::quant::tensor_f32(f, t).unwrap(),
        )
    };
    let (_, w) = tensor(&input, "blk.0.attn_q.weight");
    let (ty, back) = tensor(&written, "blk.0.attn_q.weight");
    assert_eq!(ty, frugal_formats::gguf::GgmlType::F16);
    assert_eq!(w.len(), back.len());
    for (a, b) in w.iter().zip(&back) {
        assert!(
            (a - b).abs() <= a.abs() / 1024.0 + 1e-7,
            "{a} written as {b}"
        );
    }
    assert_eq!(
        tensor(&written, "blk.0.attn_k.weight").0,
        frugal_formats::gguf::GgmlType::Q4_0
    );
    // AWQ without --calib: Brown's multi-genre mix (none of it the evaluation's cj13-cj16),
    // named in the report.
    let j = run(&[
        "--calib-ctx",
        "256",
        "--calib-tokens",
        "512",
        "--method",
        "awq",
    ]);
    let awq = kld(&j);
    eprintln!("mean KLD: rounding {rtn}, GPTQ {gptq}, AWQ (Brown mix) {awq}");
    assert!(awq < 0.85 * rtn, "AWQ mean KLD {awq} vs rounding {rtn}");
    let q = &j["quantize"];
    assert_eq!(q["method"], "awq");
    assert_eq!(q["imatrix"], "Brown `mix`");
    // One choice per block and input group; some scaled, their norms rewritten.
    let groups = q["awq"].as_array().unwrap();
    assert_eq!(groups.len(), 30 * 4);
    assert!(groups.iter().any(|g| g["alpha"].as_f64().unwrap() > 0.0));
    assert!(q["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "blk.0.attn_norm.weight" && t["reason"] == "awq-scaled"));
}

/// Pruning the real model: every decoder weight at exactly 50 %, the file loads and
/// evaluates, and the calibrated methods keep far more of the model than magnitude.
#[test]
fn prune_smollm2_magnitude_wanda_sparsegpt() {
    let Some(p) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let run = |method: &str, pattern: &str| -> serde_json::Value {
        let args = [
            "prune",
            p.to_str().unwrap(),
            "out.gguf",
            "--method",
            method,
            "--pattern",
            pattern,
            "--calib",
            "calib.txt",
            "--calib-ctx",
            "256",
            "--calib-tokens",
            "512",
            "--eval-text",
            "eval.txt",
            "--eval-chunks",
            "2",
            "--json",
        ];
        frugal_json(&args, dir.path())
    };
    let kld = |j: &serde_json::Value| j["quality"]["kld"]["mean"].as_f64().unwrap();
    let magnitude = run("magnitude", "unstructured");
    let layers = magnitude["prune"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30 * 7);
    // Half of each layer pruned (a kept weight may itself be an exact zero of the input).
    for l in layers {
        let (z, n) = (
            l["n_zero"].as_u64().unwrap(),
            l["n_weights"].as_u64().unwrap(),
        );
        assert!(2 * z >= n && z - n / 2 <= n / 1000, "{l}");
    }
    let wanda = run("wanda", "unstructured");
    let sparsegpt = run("sparsegpt", "unstructured");
    let sp = sparsegpt["prune"]["sparsity"].as_f64().unwrap();
    assert!((0.5..0.5001).contains(&sp), "{sp}");
    let (m, w, s) = (kld(&magnitude), kld(&wanda), kld(&sparsegpt));
    eprintln!("mean KLD at 50 %: magnitude {m}, Wanda {w}, SparseGPT {s}");
    assert!(
        w < m / 2.0 && s < m / 2.0,
        "magnitude {m}, Wanda {w}, SparseGPT {s}"
    );
    // Bad input: no calibration for Wanda, a bad pattern, an impossible sparsity.
    let bad = |extra: &[&str]| {
        let mut args = vec!["prune", p.to_str().unwrap(), "o.gguf", "--no-eval"];
        args.extend_from_slice(extra);
        frugal(&args, dir.path())
    };
    assert_bad_input(&bad(&["--method", "wanda"]), "calibration");
    assert_bad_input(
        &bad(&["--pattern", "4:2", "--method", "magnitude"]),
        "N < M",
    );
    assert_bad_input(
        &bad(&[
            "--pattern",
            "2:7",
            "--method",
            "sparsegpt",
            "--calib",
            "calib.txt",
        ]),
        "not a multiple of 7",
    );
    assert_bad_input(
        &bad(&["--sparsity", "1.5", "--method", "magnitude"]),
        "sparsity",
    );
    assert!(!dir.path().join("o.gguf").exists());
}

#[test]
fn quantize_rejects_bad_overrides_and_calibration() {
    let Some(p) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = p.to_str().unwrap();
    let q = |extra: &[&str]| {
        let mut args = vec!["quantize", m, "o.gguf", "--type", "Q4_K_M", "--no-eval"];
        args.extend_from_slice(extra);
        frugal(&args, dir.path())
    };
    assert_bad_input(&q(&["--tensor-type", "ffn_(=Q4_K"]), "bad regex");
    assert_bad_input(
        &q(&["--tensor-type", "ffn_down=Q9_K"]),
        "unknown type `Q9_K`",
    );
    assert_bad_input(&q(&["--tensor-type", "ffn_down"]), "REGEX=TYPE");
    assert_bad_input(&q(&["--target-bpw", "1"]), "bits per weight");
    // (`--method gptq` without --calib calibrates on Brown's mix: gptq_and_awq_beat_rounding…)
    assert_bad_input(&q(&["--resume"]), "--resume continues a block-wise method");
    assert_bad_input(&q(&["--calib", "missing.txt"]), "missing.txt");
    std::fs::write(dir.path().join("tiny.txt"), "Too short to calibrate on.").unwrap();
    assert_bad_input(&q(&["--calib", "tiny.txt"]), "fewer than one chunk");
    std::fs::write(dir.path().join("bin.txt"), [0xffu8, 0xfe, 0x00, 0x81]).unwrap();
    assert_bad_input(&q(&["--calib", "bin.txt"]), "not UTF-8");
    assert!(!dir.path().join("o.gguf").exists());
}

/// `frugal imatrix` writes llama.cpp's importance-matrix file; `frugal quantize --imatrix` reads
/// it into an IQ4_XS mix whose output records it as llama-quantize does; the IQ4 file evaluates
/// (decoded, inputs rounded as ggml rounds them) with a chunk-level bound on its mean KLD; a
/// file that is not an importance matrix is refused before any work; with `--gains`, the file
/// gives a size budget the same output as calibrating on the text.
#[test]
fn imatrix_files_feed_quantize_and_iq_files_evaluate() {
    let Some(brown) = frugal_formats::assets::require_or_skip(
        frugal_formats::assets::brown_dir(),
        "Brown corpus",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = common::smollm2_first_blocks(dir.path(), 4) else {
        return;
    };
    let m = p.to_str().unwrap();
    let ids = frugal_formats::brown::select_ids(&brown, "cj13-cj16").unwrap();
    std::fs::write(
        dir.path().join("t.txt"),
        frugal_formats::brown::plain_text(&brown, &ids).unwrap(),
    )
    .unwrap();
    // `frugal imatrix` on the text's first two chunks into `out`; its stdout.
    let imatrix = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "imatrix",
            m,
            "--calib",
            "t.txt",
            "--calib-tokens",
            "1024",
            "-o",
            out,
        ];
        args.extend_from_slice(extra);
        let o = frugal(&args, dir.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(imatrix("m.imatrix.gguf", &[]).contains("2 chunks of 512 tokens"));
    let im = frugal_formats::gguf::GgufFile::open(dir.path().join("m.imatrix.gguf")).unwrap();
    assert_eq!(
        im.header.get("general.type").and_then(|v| v.as_str()),
        Some("imatrix")
    );
    assert_eq!(
        im.header
            .get("imatrix.chunk_count")
            .and_then(|v| v.as_u64()),
        Some(2)
    );
    let r = frugal_json(
        &[
            "quantize",
            m,
            "a.gguf",
            "--type",
            "IQ4_XS",
            "--imatrix",
            "m.imatrix.gguf",
            "--no-eval",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(r["quantize"]["imatrix"], "m.imatrix.gguf", "{r}");
    let counts = &r["quantize"]["type_counts"];
    assert!(counts["IQ4_NL"].as_u64().unwrap() > 0, "{counts}");
    let a = frugal_formats::gguf::GgufFile::open(dir.path().join("a.gguf")).unwrap();
    let key = |k: &str| a.header.get(k).cloned();
    assert_eq!(
        key("quantize.imatrix.file").and_then(|v| v.as_str().map(String::from)),
        Some("m.imatrix.gguf".into())
    );
    assert_eq!(key("general.file_type").and_then(|v| v.as_u64()), Some(30));
    let e = frugal_json(
        &[
            "eval",
            "a.gguf",
            "--reference",
            m,
            "--text",
            "t.txt",
            "--chunks",
            "3",
            "--json",
        ],
        dir.path(),
    );
    let k = &e["kld"];
    let (mean, upper) = (
        k["mean"].as_f64().unwrap(),
        k["mean_upper95"].as_f64().unwrap(),
    );
    assert!(mean > 0.0 && mean < 0.2 && upper > mean, "{k}");
    assert!(k["p99_9"].as_f64().unwrap() > mean, "{k}");
    let out = frugal(
        &[
            "quantize",
            m,
            "b.gguf",
            "--type",
            "IQ4_NL",
            "--imatrix",
            "t.txt",
            "--no-eval",
        ],
        dir.path(),
    );
    assert_bad_input(&out, "not an importance matrix");
    assert!(!dir.path().join("b.gguf").exists());

    // A size budget from a file with Frugal's statistics (`--gains`) plans and rounds exactly as
    // calibrating on the text again, measuring nothing; from a file without the gains and the
    // text, the gains are measured on it: the same file again.
    assert!(imatrix("g.imatrix.gguf", &["--gains"]).contains("KL gains"));
    let budget = |out: &str, how: &[&str]| {
        let mut args = vec![
            "quantize",
            m,
            out,
            "--type",
            "Q4_K_M",
            "--target-bpw",
            "5.0",
            "--no-eval",
            "--json",
        ];
        args.extend_from_slice(how);
        frugal_json(&args, dir.path())
    };
    let calibrated = budget("c.gguf", &["--calib", "t.txt", "--calib-tokens", "1024"]);
    let from_file = budget("g.gguf", &["--imatrix", "g.imatrix.gguf"]);
    let filled = budget(
        "p.gguf",
        &[
            "--imatrix",
            "m.imatrix.gguf",
            "--calib",
            "t.txt",
            "--calib-tokens",
            "1024",
        ],
    );
    assert!(
        from_file["quantize"]["imatrix_seconds"].is_null(),
        "{from_file}"
    );
    assert!(
        filled["quantize"]["imatrix_seconds"].as_f64().is_some(),
        "{filled}"
    );
    // Norms in F32 and at least two types among the weights: a mix, not one type.
    let counts = calibrated["quantize"]["type_counts"].as_object().unwrap();
    assert!(counts.len() >= 3, "{counts:?}");
    let c = frugal_formats::gguf::GgufFile::open(dir.path().join("c.gguf")).unwrap();
    for other in ["g.gguf", "p.gguf"] {
        let o = frugal_formats::gguf::GgufFile::open(dir.path().join(other)).unwrap();
        assert_eq!(c.header.tensors.len(), o.header.tensors.len());
        for (a, b) in c.header.tensors.iter().zip(&o.header.tensors) {
            assert_eq!((&a.name, a.ggml_type), (&b.name, b.ggml_type), "{other}");
            assert!(c.tensor_data(a) == o.tensor_data(b), "{other}: {}", a.name);
        }
    }
}

/// all-MiniLM-L6-v2 to int8 and int4 (GPTQ on Brown passages): the quantized folder loads and
/// stays close to the original.
#[test]
fn encoder_int8_and_int4_keep_the_embeddings() {
    let Some(m) = frugal_formats::assets::require_or_skip(
        frugal_formats::assets::minilm_dir(),
        "all-MiniLM-L6-v2",
    ) else {
        return;
    };
    if frugal_formats::assets::require_or_skip(frugal_formats::assets::brown_dir(), "Brown corpus")
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cos = |out: &str, extra: &[&str]| -> (f64, serde_json::Value) {
        let mut args = vec![
            "quantize",
            m.to_str().unwrap(),
            out,
            "--eval-passages",
            "60",
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = frugal(&args, dir.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j = common::report(&o.stdout);
        (j["quality"]["cosine_mean"].as_f64().unwrap(), j)
    };
    let (c8, j) = cos("int8", &["--type", "int8"]);
    assert!(c8 > 0.999, "int8 cosine mean {c8}");
    assert_eq!(j["quantize"]["n_quantized"], 37);
    let (rtn, _) = cos("int4", &["--type", "int4-g32"]);
    let (gptq, j) = cos(
        "int4-gptq",
        &[
            "--type",
            "int4-g32",
            "--calib",
            "brown",
            "--calib-tokens",
            "8192",
        ],
    );
    assert!(
        j["quantize"]["method"]
            .as_str()
            .unwrap()
            .starts_with("gptq"),
        "{j}"
    );
    assert!(
        gptq > rtn && gptq > 0.98,
        "int4 GPTQ cosine {gptq} vs rounding {rtn}"
    );
    // The folder is whole: configuration and tokenizer came along; nothing half-written.
    assert!(dir.path().join("int8/tokenizer.json").exists());
    let out = frugal(
        &[
            "quantize",
            m.to_str().unwrap(),
            "int8",
            "--type",
            "int8",
            "--no-eval",
        ],
        dir.path(),
    );
    assert_bad_input(&out, "already exists");
    let out = frugal(
        &[
            "quantize",
            m.to_str().unwrap(),
            "x",
            "--type",
            "Q4_K_M",
            "--no-eval",
        ],
        dir.path(),
    );
    assert_bad_input(&out, "is a folder");
}

/// Attention heads and whole blocks removed from the real model: smaller GGUFs with the new
/// head count (and explicit head width) or block count that load and evaluate; the
/// activation-aware head choice with the least-squares `attn_output` refit keeps far more of the
/// model than weight norms; blocks renumber without gaps.
#[test]
fn attention_heads_and_blocks_removed_from_smollm2() {
    let Some(p) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let model = p.to_str().unwrap();
    let prune = |structure: &str, method: &str, fraction: &str, out: &str| {
        frugal_json(
            &[
                "prune",
                model,
                out,
                "--structure",
                structure,
                "--sparsity",
                fraction,
                "--method",
                method,
                "--calib",
                "calib.txt",
                "--calib-ctx",
                "256",
                "--calib-tokens",
                "512",
                "--eval-text",
                "eval.txt",
                "--eval-chunks",
                "1",
                "--json",
            ],
            dir.path(),
        )
    };
    let kld = |j: &serde_json::Value| j["quality"]["kld"]["mean"].as_f64().unwrap();
    let m = prune("attn-heads", "magnitude", "0.3", "hm.gguf");
    let s = prune("attn-heads", "sparsegpt", "0.3", "hs.gguf");
    for j in [&m, &s] {
        assert_eq!(j["prune"]["unit"], "attn-heads");
        assert_eq!(j["prune"]["n_head_after"], 6, "{}", j["prune"]);
        assert_eq!(
            j["prune"]["layers"][0]["removed"].as_array().unwrap().len(),
            3
        );
    }
    assert!(
        kld(&s) < kld(&m) / 2.0,
        "sparsegpt {} magnitude {}",
        kld(&s),
        kld(&m)
    );
    // Each F32 GGUF is ~0.5 GB: CI's disk holds few at a time.
    std::fs::remove_file(dir.path().join("hm.gguf")).unwrap();
    let f = frugal_formats::gguf::GgufFile::open(dir.path().join("hs.gguf")).unwrap();
    let c = frugal_models::llama::LlamaConfig::from_gguf(&f).unwrap();
    assert_eq!((c.n_head, c.n_head_kv, c.head_dim()), (6, 3, 64));
    assert_eq!(
        f.tensor("blk.4.attn_q.weight").unwrap().dims,
        vec![576, 384]
    );
    assert_eq!(
        f.tensor("blk.4.attn_output.weight").unwrap().dims,
        vec![384, 576]
    );
    drop(f);
    std::fs::remove_file(dir.path().join("hs.gguf")).unwrap();

    let l = prune("layers", "wanda", "0.1", "l.gguf");
    assert_eq!(
        (
            l["prune"]["n_layer_before"].as_u64(),
            l["prune"]["n_layer_after"].as_u64()
        ),
        (Some(30), Some(27))
    );
    let removed: Vec<u64> = l["prune"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(removed.len(), 3);
    assert!(
        !removed.contains(&0) && !removed.contains(&29),
        "{removed:?}: the first and last blocks matter most"
    );
    assert!(kld(&l).is_finite() && kld(&l) < 2.0, "{}", l["quality"]);
    let f = frugal_formats::gguf::GgufFile::open(dir.path().join("l.gguf")).unwrap();
    assert_eq!(
        frugal_models::llama::LlamaConfig::from_gguf(&f)
            .unwrap()
            .n_layer,
        27
    );
    assert!(
        f.tensor("blk.26.ffn_down.weight").is_some() && f.tensor("blk.27.attn_q.weight").is_none()
    );
    assert_bad_input(
        &frugal(
            &[
                "prune",
                model,
                "x.gguf",
                "--structure",
                "layers",
                "--method",
                "magnitude",
                "--no-eval",
            ],
            dir.path(),
        ),
        "--calib",
    );
    assert!(!dir.path().join("x.gguf").exists());
}

/// Structured pruning of the real model: every block's MLP shrinks from 1,536 to 1,216 neurons
/// in a smaller GGUF that loads and evaluates, activation-aware scores keep far more of the model
/// than weight norms, and logit distillation from the unpruned model then lowers the student's
/// divergence on its training text.
#[test]
fn mlp_neurons_removed_then_recovered_by_distillation_on_smollm2() {
    let Some(p) = smollm2() else { return };
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let model = p.to_str().unwrap();
    let prune = |method: &str, out: &str| {
        frugal_json(
            &[
                "prune",
                model,
                out,
                "--structure",
                "mlp-neurons",
                "--sparsity",
                "0.2",
                "--method",
                method,
                "--calib",
                "calib.txt",
                "--calib-ctx",
                "256",
                "--calib-tokens",
                "512",
                "--eval-text",
                "eval.txt",
                "--eval-chunks",
                "1",
                "--json",
            ],
            dir.path(),
        )
    };
    let kld = |j: &serde_json::Value| j["quality"]["kld"]["mean"].as_f64().unwrap();
    let m = prune("magnitude", "m.gguf");
    let w = prune("wanda", "w.gguf");
    for j in [&m, &w] {
        assert_eq!(j["prune"]["n_ff_after"], 1216, "{}", j["prune"]);
        assert_eq!(j["prune"]["layers"].as_array().unwrap().len(), 30);
    }
    assert!(
        kld(&w) < kld(&m) / 2.0,
        "wanda {} magnitude {}",
        kld(&w),
        kld(&m)
    );
    // Each F32 GGUF is ~0.5 GB: CI's disk holds few at a time.
    std::fs::remove_file(dir.path().join("m.gguf")).unwrap();
    let f = frugal_formats::gguf::GgufFile::open(dir.path().join("w.gguf")).unwrap();
    let ff = frugal_models::llama::LlamaConfig::from_gguf(&f)
        .unwrap()
        .n_ff;
    assert_eq!(ff, 1216);
    assert_eq!(
        f.tensor("blk.7.ffn_down.weight").unwrap().dims,
        vec![1216, 576]
    );
    assert_eq!(
        f.tensor("blk.7.ffn_up.weight").unwrap().dims,
        vec![576, 1216]
    );

    // Four passes over one 64-token sequence: the divergence from the teacher falls.
    let d = frugal_json(
        &[
            "distill",
            "--student",
            "w.gguf",
            "--teacher",
            model,
            "--text",
            "calib.txt",
            "--out",
            "d.gguf",
            "--ctx",
            "64",
            "--max-tokens",
            "64",
            "--epochs",
            "4",
            "--lr",
            "1e-4",
            "--eval-text",
            "eval.txt",
            "--eval-chunks",
            "1",
            "--json",
        ],
        dir.path(),
    );
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    let kl = |i: usize| steps[i]["kl_top_k"].as_f64().unwrap();
    assert!(kl(3) < 0.9 * kl(0), "top-k KL {} → {}", kl(0), kl(3));
    assert!(kld(&d).is_finite(), "{}", d["quality"]);
    // Bad input.
    assert_bad_input(
        &frugal(
            &[
                "prune",
                model,
                "x.gguf",
                "--structure",
                "mlp-neurons",
                "--method",
                "magnitude",
                "--pattern",
                "2:4",
            ],
            dir.path(),
        ),
        "no --pattern",
    );
    assert_bad_input(
        &frugal(
            &[
                "prune",
                model,
                "x.gguf",
                "--structure",
                "mlp-neurons",
                "--method",
                "magnitude",
                "--sparsity",
                "0.999",
                "--no-eval",
            ],
            dir.path(),
        ),
        "leaves 0",
    );
    assert!(!dir.path().join("x.gguf").exists());
}

/// A recipe on the real model's first six blocks ([`common::smollm2_first_blocks`]):
/// structured pruning, quantization and evaluation chained, each output the next step's input;
/// run again it keeps every step; with the last settings changed it keeps the steps before and
/// redoes the rest.
#[test]
fn recipe_chains_steps_and_resumes_on_smollm2() {
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let Some(p) = common::smollm2_first_blocks(dir.path(), 6) else {
        return;
    };
    let recipe = |ty: &str| {
        format!(
            "name = \"smollm2-small\"\nmodel = \"{}\"\n[eval]\ntext = {{ file = \"eval.txt\" }}\nchunks = 1\n\
             [[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.1\nstructure = \"mlp-neurons\"\n\
             [[step]]\nkind = \"quantize\"\ntype = \"{ty}\"\n\
             [[step]]\nkind = \"eval\"\n",
            p.display()
        )
    };
    let run = |ty: &str| {
        std::fs::write(dir.path().join("r.toml"), recipe(ty)).unwrap();
        frugal_json(&["run", "r.toml", "--out", "out", "--json"], dir.path())
    };
    let first = run("Q8_0");
    let steps = first["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["result"]["prune"]["n_ff_after"], 1376);
    assert_eq!(steps[1]["input"], steps[0]["output"]);
    assert_eq!(steps[2]["input"], steps[1]["output"]);
    assert!(steps.iter().all(|s| s["resumed"] == false));
    let kld8 = steps[2]["result"]["kld"]["mean"].as_f64().unwrap();
    assert!(kld8 > 0.0 && kld8.is_finite());
    let f = frugal_formats::gguf::GgufFile::open(dir.path().join("out/02-quantize.gguf")).unwrap();
    assert_eq!(
        f.tensor("blk.3.ffn_down.weight").unwrap().ggml_type,
        frugal_formats::gguf::GgmlType::Q8_0
    );
    let again = run("Q8_0");
    assert!(again["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["resumed"] == true));
    let changed = run("Q4_0");
    let s = changed["steps"].as_array().unwrap();
    assert_eq!(s[0]["resumed"], true);
    assert_eq!(s[1]["resumed"], false);
    assert!(s[2]["result"]["kld"]["mean"].as_f64().unwrap() > kld8);
    // Issue #22: a kept output is checked against the size and SHA-256 recorded when it was
    // written: one byte changed in place (same size) and the step runs again.
    let q = dir.path().join("out/02-quantize.gguf");
    let mut bytes = std::fs::read(&q).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&q, &bytes).unwrap();
    drop(bytes);
    let tampered = run("Q4_0");
    let s = tampered["steps"].as_array().unwrap();
    assert_eq!(
        (&s[0]["resumed"], &s[1]["resumed"]),
        (&true.into(), &false.into())
    );
    assert_eq!(s[1]["output_id"], changed["steps"][1]["output_id"]);
    // Measure and check steps: the compressed model's energy per token, the break-even of the
    // steps before it against the recipe's model, then the report so far against a policy (a
    // failed clause fails the run with exit 1, after the report is written).
    let gated = |policy: &str| {
        std::fs::write(
            dir.path().join("r.toml"),
            recipe("Q4_0")
                + "[[step]]\nkind = \"measure\"\nprompts = 2\ntokens = 2\nrepeats = 2\nbaseline = true\nregion = \"FRA\"\n\
                   [[step]]\nkind = \"check\"\n"
                + &format!("policy = \"{policy}\"\n"),
        )
        .unwrap();
        frugal(&["run", "r.toml", "--out", "out", "--json"], dir.path())
    };
    std::fs::write(
        dir.path().join("pass.toml"),
        "max_kld = 10\nmax_wh_per_1k_queries = \"1 MWh\"\nmax_sci = \"1 kg\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("fail.toml"), "max_kld = 1e-9\n").unwrap();
    let out = gated("pass.toml");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = common::report(&out.stdout);
    let s = r["steps"].as_array().unwrap();
    assert_eq!(s.len(), 5);
    assert!(s[..3].iter().all(|s| s["resumed"] == true));
    let m = &s[3]["result"];
    assert_eq!(m["kind"], "language-model");
    assert!(m["per_1k_queries"]["sci_gco2e"].as_f64().unwrap() > 0.0);
    // The cost is the two compression steps' metered energy (as first run), not the eval's.
    assert_eq!(
        (s[0]["kind"].as_str(), s[1]["kind"].as_str()),
        (Some("prune"), Some("quantize"))
    );
    let cost: f64 = s[..2].iter().map(joules).sum();
    assert!(cost > 0.0);
    let be = m["break_even"]["compression_joules"].as_f64().unwrap();
    assert!((be - cost).abs() <= 1e-9 * cost, "{be} vs {cost}");
    assert_eq!(s[4]["result"]["pass"], true, "{}", s[4]["result"]);
    // `frugal check` on the recipe's report.json: one verdict per model written; the
    // quantized one (the model the check step followed) gets the step's own verdict, the
    // pruned one fails (nothing measured its energy).
    let q = s[1]["output"].as_str().unwrap();
    let all = frugal(
        &[
            "check",
            "--policy",
            "pass.toml",
            "out/report.json",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(all.status.code(), Some(1));
    let all = common::report(&all.stdout);
    let models: Vec<&str> = all["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, [s[0]["output"].as_str().unwrap(), q]);
    let one = frugal(
        &[
            "check",
            "--policy",
            "pass.toml",
            "out/report.json",
            "--model",
            q,
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(one.status.code(), Some(0));
    assert_eq!(
        common::report(&one.stdout)["models"][0],
        s[4]["result"]["verdict"]
    );
    let out = gated("fail.toml");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("step 5: policy")
            && String::from_utf8_lossy(&out.stderr).contains("fails: max_kld"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = common::report(&std::fs::read(dir.path().join("out/report.json")).unwrap());
    assert_eq!(
        written["steps"][3]["resumed"], true,
        "the measure step is kept"
    );
    assert_eq!(written["steps"][4]["result"]["pass"], false);
    // A bad recipe names the line (of the step whose value is wrong) and the problem.
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"x\"\nmodel = \"m.gguf\"\n[[step]]\nkind = \"prune\"\nmethod = \"wanda\"\nsparsity = \"half\"\n",
    )
    .unwrap();
    assert_bad_input(
        &frugal(&["run", "bad.toml", "--out", "o2"], dir.path()),
        "line 3",
    );
}

/// SmolLM2's first six blocks ([`common::smollm2_first_blocks`]: `tune`'s search, verification
/// and recipe are the same on them at a third of the arithmetic) and a folder with the
/// calibration, search (Brown cj17–cj20) and held-out texts.
fn tune_inputs() -> Option<(std::path::PathBuf, tempfile::TempDir)> {
    let dir = brown_calib_and_eval()?;
    let p = common::smollm2_first_blocks(dir.path(), 6)?;
    assert!(frugal(
        &["brown-text", "--files", "cj17-cj20", "-o", "search.txt"],
        dir.path()
    )
    .status
    .success());
    Some((p, dir))
}

/// `frugal tune MODEL -o OUT --max-kld 0.05 --max-evals N` on [`tune_inputs`]'s texts, small
/// settings.
fn tune_json(
    dir: &tempfile::TempDir,
    model: &str,
    out: &str,
    max_evals: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "tune",
        model,
        "-o",
        out,
        "--max-kld",
        "0.05",
        "--calib",
        "calib.txt",
        "--calib-tokens",
        "512",
        "--eval",
        "search.txt",
        "--heldout",
        "eval.txt",
        "--eval-chunks",
        "2",
        "--max-evals",
        max_evals,
        "--json",
    ];
    args.extend_from_slice(extra);
    frugal_json(&args, dir.path())
}

/// `frugal tune --objective energy` on the real model: every candidate priced by its kernel
/// time per token and its energy measured on the measure workload (with its provenance); the
/// chosen one is the fastest verified candidate, meets the limit on held-out text, and its
/// recipe (every budget tensor's type pinned) rebuilds the same file.
#[test]
fn tune_for_energy_picks_the_fastest_verified_plan_and_its_recipe_rebuilds_it() {
    let Some((p, dir)) = tune_inputs() else {
        return;
    };
    let model = p.to_str().unwrap();
    let limit = 0.05;
    // Three candidates: the fastest types, one step of the search, one held in reserve.
    let r = tune_json(&dir, model, "e.gguf", "3", &["--objective", "energy"]);
    assert_eq!(r["objective"], "energy");
    // The phases' times are parts of the total (pricing is not counted in the search).
    let secs = |k: &str| r["seconds"][k].as_f64().unwrap();
    let parts = ["imatrix", "sensitivity", "pricing", "search"].map(secs);
    assert!(
        parts.iter().all(|&p| p >= 0.0)
            && parts.iter().sum::<f64>() <= secs("total")
            && secs("energy") <= secs("total"),
        "{}",
        r["seconds"]
    );
    assert_eq!(r["meets_heldout"], true, "{r}");
    let cands = r["candidates"].as_array().unwrap();
    let chosen = &cands[r["chosen"].as_u64().unwrap() as usize];
    let us = |c: &serde_json::Value| c["kernel_us_per_token"].as_f64().unwrap();
    for c in cands {
        assert!(us(c) > 0.0, "{c}");
        let e = &c["energy"];
        assert!(e["joules_per_token"]["mean"].as_f64().unwrap() > 0.0, "{c}");
        assert!(!e["provenance"].as_str().unwrap().is_empty(), "{c}");
        // No faster candidate met the limit on both texts.
        if us(c) < us(chosen) {
            assert!(
                c["meets_search"] == false
                    || c["heldout"][0]["kld_upper95"].as_f64().unwrap() > limit,
                "{c}"
            );
        }
    }
    assert!(
        chosen["heldout"][0]["kld_upper95"].as_f64().unwrap() <= limit,
        "{chosen}"
    );
    assert!(us(chosen) <= us(&cands[0]), "{r}");
    let recipe = std::fs::read_to_string(dir.path().join("e.gguf.recipe.toml")).unwrap();
    assert!(
        recipe.contains("tensor_types") && !recipe.contains("target_bpw"),
        "{recipe}"
    );
    let rr = frugal_json(
        &["run", "e.gguf.recipe.toml", "--out", "rr", "--json"],
        dir.path(),
    );
    assert_eq!(rr["steps"][0]["kind"], "quantize");
    assert!(
        std::fs::read(dir.path().join("rr/01-quantize.gguf")).unwrap()
            == std::fs::read(dir.path().join("e.gguf")).unwrap(),
        "the recipe's file differs from the tuned one"
    );
    let html = std::fs::read_to_string(dir.path().join("e.gguf.report.html")).unwrap();
    assert!(html.contains("Quality against energy per query") && html.contains("kernels/token"));
    // A pinned type that does not exist: a clear error naming the key.
    let bad = recipe.replacen("$=", "$=NOT", 1);
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    assert_bad_input(
        &frugal(&["run", "bad.toml", "--out", "rb"], dir.path()),
        "tensor_types",
    );
    // Classifiers are not tuned for energy (their workload decodes every weight to f32).
    assert_bad_input(
        &frugal(
            &[
                "tune",
                model,
                "-o",
                "x",
                "--data",
                "digits",
                "--max-accuracy-drop-pt",
                "1",
                "--objective",
                "energy",
            ],
            dir.path(),
        ),
        "--objective energy",
    );
    assert_bad_input(
        &frugal(
            &[
                "tune",
                model,
                "-o",
                "x",
                "--max-kld",
                "0.1",
                "--objective",
                "speed",
                "--calib",
                "calib.txt",
                "--eval",
                "search.txt",
                "--heldout",
                "eval.txt",
            ],
            dir.path(),
        ),
        "size or energy",
    );
}

/// `frugal tune` on the real model: the smallest candidate that keeps the mean KLD within the
/// limit on the search text, verified on different (held-out) text — where an independent
/// `frugal eval` gives the same figure — and a recipe that rebuilds the very same file.
#[test]
fn tune_meets_a_kld_limit_on_held_out_text_and_its_recipe_rebuilds_it() {
    let Some((p, dir)) = tune_inputs() else {
        return;
    };
    let model = p.to_str().unwrap();
    let limit = 0.05;
    // The energy objective's test measures candidates' energy; this one skips it.
    // Two held-out texts: the limit must hold on each.
    let r = tune_json(
        &dir,
        model,
        "t.gguf",
        "4",
        &["--no-energy", "--heldout", "calib.txt"],
    );
    assert_eq!(r["meets_heldout"], true, "{r}");
    assert_eq!(r["heldout_texts"].as_array().unwrap().len(), 2, "{r}");
    let g = r["guarantee"].as_str().unwrap();
    assert!(
        g.contains("upper 95 %") && g.contains("eval.txt") && g.contains("calib.txt"),
        "{g}"
    );
    let cands = r["candidates"].as_array().unwrap();
    let chosen = &cands[r["chosen"].as_u64().unwrap() as usize];
    let judged = |c: &serde_json::Value, set: &str| -> serde_json::Value {
        if set == "search" {
            c[set].clone()
        } else {
            c["heldout"][set.parse::<usize>().unwrap()].clone()
        }
    };
    let kld = |c: &serde_json::Value, set: &str| judged(c, set)["kld"].as_f64().unwrap();
    let bound = |c: &serde_json::Value, set: &str| judged(c, set)["kld_upper95"].as_f64().unwrap();
    for set in ["search", "0", "1"] {
        assert!(
            kld(chosen, set) <= bound(chosen, set) && bound(chosen, set) <= limit,
            "{set}: {chosen}"
        );
    }
    let bytes = |c: &serde_json::Value| c["bytes"].as_u64().unwrap();
    // Nothing smaller was found to meet the limit on both texts; the largest types' candidate
    // came first and the chosen one is smaller.
    for c in cands {
        if bytes(c) < bytes(chosen) {
            assert!(
                c["meets_search"] == false || bound(c, "0") > limit || bound(c, "1") > limit,
                "{c}"
            );
        }
    }
    assert!(bytes(chosen) < bytes(&cands[0]), "{r}");
    assert!(cands.iter().all(|c| c["energy"].is_null()), "{r}");
    // The input's logits were computed once per chunk and reused for later candidates (and
    // the held-out figure below, computed afresh by `frugal eval`, is the same to the bit).
    assert!(
        r["reference_chunks_reused"].as_u64().unwrap() >= cands.len() as u64 - 1,
        "{r}"
    );
    let out = dir.path().join("t.gguf");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes(chosen));
    // The held-out figure is what `frugal eval` says of the file.
    let e = frugal_json(
        &[
            "eval",
            "t.gguf",
            "--reference",
            model,
            "--text",
            "eval.txt",
            "--chunks",
            "2",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(e["kld"]["mean"].as_f64().unwrap(), kld(chosen, "0"));
    assert_eq!(
        e["kld"]["mean_upper95"].as_f64().unwrap(),
        bound(chosen, "0")
    );
    let worst = if bound(chosen, "0") >= bound(chosen, "1") {
        "0"
    } else {
        "1"
    };
    assert_eq!(
        r["quality"]["kld"]["mean"].as_f64().unwrap(),
        kld(chosen, worst)
    );
    // The recipe rebuilds the same bytes.
    let rr = frugal_json(
        &["run", "t.gguf.recipe.toml", "--out", "rr", "--json"],
        dir.path(),
    );
    assert_eq!(rr["steps"][0]["kind"], "quantize");
    assert!(
        std::fs::read(dir.path().join("rr/01-quantize.gguf")).unwrap()
            == std::fs::read(&out).unwrap(),
        "the recipe's file differs from the tuned one"
    );
    let html = std::fs::read_to_string(dir.path().join("t.gguf.report.html")).unwrap();
    assert!(html.contains("Pareto front") && html.contains("chosen"));
    // One calibration for many limits: `frugal imatrix --gains` on the same text, then tune
    // with `--imatrix`: nothing measured on the text, the same tensors as the tune that
    // calibrated itself, and a recipe that names the file and rebuilds them.
    assert_eq!(r["calibration_measured"], true, "{r}");
    let o = frugal(
        &[
            "imatrix",
            model,
            "--calib",
            "calib.txt",
            "--calib-tokens",
            "512",
            "--gains",
            "-o",
            "m.imatrix.gguf",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ri = tune_json(
        &dir,
        model,
        "ti.gguf",
        "4",
        &[
            "--no-energy",
            "--heldout",
            "calib.txt",
            "--imatrix",
            "m.imatrix.gguf",
        ],
    );
    assert_eq!(ri["calibration_measured"], false, "{ri}");
    assert!(ri["imatrix_file"]
        .as_str()
        .unwrap()
        .ends_with("m.imatrix.gguf"));
    let same_tensors = |a: &std::path::Path, b: &std::path::Path| {
        let (a, b) = (
            frugal_formats::gguf::GgufFile::open(a).unwrap(),
            frugal_formats::gguf::GgufFile::open(b).unwrap(),
        );
        assert_eq!(a.header.tensors.len(), b.header.tensors.len());
        for (x, y) in a.header.tensors.iter().zip(&b.header.tensors) {
            assert_eq!((&x.name, x.ggml_type), (&y.name, y.ggml_type));
            assert!(a.tensor_data(x) == b.tensor_data(y), "{}", x.name);
        }
    };
    same_tensors(&out, &dir.path().join("ti.gguf"));
    let recipe = std::fs::read_to_string(dir.path().join("ti.gguf.recipe.toml")).unwrap();
    assert!(recipe.contains("imatrix = "), "{recipe}");
    frugal_json(
        &["run", "ti.gguf.recipe.toml", "--out", "ri", "--json"],
        dir.path(),
    );
    assert!(
        std::fs::read(dir.path().join("ri/01-quantize.gguf")).unwrap()
            == std::fs::read(dir.path().join("ti.gguf")).unwrap(),
        "the recipe's file differs from the one tuned with --imatrix"
    );
    for f in ["ti.gguf", "ri/01-quantize.gguf"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    // No candidate or scratch folder is left behind.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tune") || n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for f in ["t.gguf", "rr/01-quantize.gguf"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    // Bad input.
    let tune = |extra: &[&str]| {
        let mut a = vec![
            "tune",
            model,
            "-o",
            "x.gguf",
            "--calib",
            "calib.txt",
            "--eval",
            "search.txt",
        ];
        a.extend_from_slice(extra);
        frugal(&a, dir.path())
    };
    // Each refused before any work (the limit, when given, after `--heldout eval.txt`).
    let limit: &[&str] = &["--heldout", "eval.txt", "--max-kld", "0.1"];
    let refused: [(&[&str], &[&str], &str); 7] = [
        (&["--heldout", "eval.txt"], &[], "give one limit"),
        (
            limit,
            &["--imatrix", "eval.txt"],
            "not an importance matrix",
        ),
        (
            &["--heldout", "search.txt", "--max-kld", "0.1"],
            &[],
            "held-out text must differ",
        ),
        (limit, &["--heldout", "eval.txt"], "given twice"),
        (limit, &["--eval-chunks", "1"], "at least 2 for --max-kld"),
        (limit, &["--type", "F16"], "not a quantized GGUF type"),
        (limit, &["--bpw-tolerance", "0"], "must be at least 0.001"),
    ];
    for (base, extra, why) in refused {
        assert_bad_input(&tune(&[base, extra].concat()), why);
    }
    let search = std::fs::read(dir.path().join("search.txt")).unwrap();
    assert_bad_input(
        &frugal(
            &[
                "tune",
                model,
                "-o",
                "eval.txt",
                "--calib",
                "calib.txt",
                "--eval",
                "search.txt",
                "--heldout",
                "eval.txt",
                "--max-kld",
                "0.1",
            ],
            dir.path(),
        ),
        "refusing to write over an input (--heldout",
    );
    assert_eq!(
        std::fs::read(dir.path().join("search.txt")).unwrap(),
        search
    );
    assert!(!dir.path().join("x.gguf").exists());
}

/// `frugal measure -- CMD`: on this machine (no readable RAPL counter in CI containers) every
/// figure is an estimate that says so with its constants; a command that cannot start is bad
/// input (2), one that fails is a failure (1).
#[test]
fn measure_labels_its_figures_and_passes_on_failures() {
    let dir = tempfile::tempdir().unwrap();
    let j = frugal_json(
        &[
            "measure",
            "--json",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ],
        dir.path(),
    );
    assert_eq!(j["exit_status"], 0);
    let sources = j["energy"]["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    for s in sources {
        let kind = s["provenance"]["kind"].as_str().unwrap();
        if kind == "estimated" {
            assert!(
                s["provenance"]["constants"]["tdp_watts"].as_f64().is_some()
                    || s["source"] == "ram-estimate",
                "{s}"
            );
        } else {
            assert!(
                s["provenance"]["counter"]
                    .as_str()
                    .unwrap()
                    .contains("RAPL")
                    || s["source"].as_str().unwrap().starts_with("gpu")
            );
        }
    }
    assert!(j["energy"]["sources"][0]["joules"].as_f64().unwrap() > 0.0);
    // Emissions from the shipped grid table: energy × PUE × the region's intensity.
    let c = frugal_json(
        &[
            "measure", "--json", "--region", "FRA", "--pue", "1.5", "--", "true",
        ],
        dir.path(),
    );
    let kwh = joules(&c) / 3.6e6;
    assert_eq!(c["carbon"]["grid"]["g_per_kwh"].as_f64(), Some(56.039));
    // The exports of the same record.
    let e = frugal_json(
        &[
            "measure", "--json", "--region", "FRA", "--flops", "1e12", "--export", "ex", "--",
            "true",
        ],
        dir.path(),
    );
    let card = std::fs::read_to_string(dir.path().join("ex/model-card.md")).unwrap();
    assert!(
        card.starts_with("---\nco2_eq_emissions:\n  emissions: "),
        "{card}"
    );
    assert!(
        card.contains("(estimated: ") || card.contains("(measured: "),
        "{card}"
    );
    assert!(card.contains("geographical_location: \"France\""));
    let eu: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ex/eu-ai-act.json")).unwrap())
            .unwrap();
    assert_eq!(eu, e["eu_ai_act"]);
    assert_eq!(eu["training_compute_flops"].as_f64(), Some(1e12));
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ex/boamps.json")).unwrap()).unwrap();
    assert!(b["measures"][0]["powerConsumption"].as_f64().unwrap() > 0.0);
    // SPDX 3.0.1 and CycloneDX 1.6 records of the same measurement, valid against the
    // official schemas; their energy is the record's, in kWh, under the activity's name.
    let ekwh = joules(&e) / 3.6e6;
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(p)).unwrap()).unwrap()
    };
    for (kind, file) in [("spdx", "ex/spdx.json"), ("cyclonedx", "ex/cyclonedx.json")] {
        let valid = common::validate_standard(kind, &dir.path().join(file));
        assert!(valid.is_ok(), "{file}: {}", valid.unwrap_err());
    }
    let s = read("ex/spdx.json");
    let q: f64 = s["@graph"][5]["ai_energyConsumption"]["ai_finetuningEnergyConsumption"][0]
        ["ai_energyQuantity"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((q - ekwh).abs() <= 1e-12 + 1e-9 * ekwh, "{q} vs {ekwh}");
    let cdx = read("ex/cyclonedx.json");
    let ec = &cdx["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]
        ["energyConsumptions"][0];
    assert_eq!(ec["activity"], "fine-tuning");
    assert!(
        (ec["activityEnergyCost"]["value"].as_f64().unwrap() - ekwh).abs()
            <= 1e-9 * ekwh.max(1e-12)
    );
    let g = e["carbon"]["operational_g"].as_f64().unwrap();
    assert!(
        (ec["co2CostEquivalent"]["value"].as_f64().unwrap() - g / 1e6).abs()
            <= 1e-9 * g.max(1e-12) / 1e6 + 1e-18
    );
    // A quantization under a model name: SPDX's fine-tuning list, CycloneDX's `other`.
    frugal_json(
        &[
            "measure",
            "--json",
            "--training-type",
            "quantization",
            "--model-name",
            "q.gguf",
            "--model-version",
            "2",
            "--supplier",
            "Frugal tests",
            "--export",
            "ex2",
            "--",
            "true",
        ],
        dir.path(),
    );
    for (kind, file) in [
        ("spdx", "ex2/spdx.json"),
        ("cyclonedx", "ex2/cyclonedx.json"),
    ] {
        let valid = common::validate_standard(kind, &dir.path().join(file));
        assert!(valid.is_ok(), "{file}: {}", valid.unwrap_err());
    }
    let c2 = read("ex2/cyclonedx.json");
    assert_eq!(c2["components"][0]["name"], "q.gguf");
    assert_eq!(c2["components"][0]["version"], "2");
    assert_eq!(
        c2["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]
            ["energyConsumptions"][0]["activity"],
        "other"
    );
    // The validators can fail: a unit SPDX does not know, an activity CycloneDX does not.
    let mut bad = read("ex2/spdx.json");
    bad["@graph"][5]["ai_energyConsumption"]["ai_finetuningEnergyConsumption"][0]
        ["ai_energyUnit"] = "kWh".into();
    std::fs::write(dir.path().join("bad-spdx.json"), bad.to_string()).unwrap();
    let mut bad = c2.clone();
    bad["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]
        ["energyConsumptions"][0]["activity"] = "quantization".into();
    std::fs::write(dir.path().join("bad-cdx.json"), bad.to_string()).unwrap();
    for (kind, file, needle) in [
        ("spdx", "bad-spdx.json", "kilowattHour"),
        ("cyclonedx", "bad-cdx.json", "quantization"),
    ] {
        match common::validate_standard(kind, &dir.path().join(file)) {
            Err(why) => assert!(why.contains(needle), "{why}"),
            Ok(ran) => assert!(!ran, "{file} validated"),
        }
    }
    assert_bad_input(
        &frugal(
            &["measure", "--training-type", "baking", "--", "true"],
            dir.path(),
        ),
        "baking",
    );
    // The EU AI Act profile passes on a record with every field, fails without the FLOPs.
    std::fs::write(dir.path().join("e.json"), e.to_string()).unwrap();
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/eu-ai-act.toml");
    let pol = policy.to_str().unwrap();
    assert_eq!(
        frugal(&["check", "--policy", pol, "e.json"], dir.path())
            .status
            .code(),
        Some(0)
    );
    std::fs::write(dir.path().join("c.json"), c.to_string()).unwrap();
    let out = frugal(&["check", "--policy", pol, "c.json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing training_compute_flops"));
    let g = c["carbon"]["operational_g"].as_f64().unwrap();
    let want = kwh * 1.5 * 56.039;
    assert!((g - want).abs() <= 1e-9 * want.max(1e-12), "{g} vs {want}");
    for (args, msg) in [
        (
            vec!["measure", "--region", "Atlantis", "--", "true"],
            "Atlantis",
        ),
        (
            vec!["measure", "--region", "FRA", "--pue", "0.5", "--", "true"],
            "PUE",
        ),
        (vec!["measure", "--", "/nonexistent/cmd"], "cannot run"),
    ] {
        assert_bad_input(&frugal(&args, dir.path()), msg);
    }
    assert_eq!(
        frugal(&["measure", "--", "false"], dir.path())
            .status
            .code(),
        Some(1)
    );
}

/// `frugal measure MODEL`: the built-in workload on a real (freshly trained digits) classifier
/// and on MiniLM: per-unit energy with a 95 % interval over the runs, latency percentiles,
/// labelled provenance, and per-1,000-query figures a policy can gate on.
#[test]
fn measure_runs_the_built_in_workloads() {
    let dir = tempfile::tempdir().unwrap();
    frugal_json(
        &[
            "distill",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--out",
            "s.safetensors",
            "--json",
        ],
        dir.path(),
    );
    let w = frugal_json(
        &[
            "measure",
            "s.safetensors",
            "--data",
            "digits",
            "--queries",
            "100",
            "--repeats",
            "3",
            "--region",
            "DEU",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(w["kind"], "classifier");
    assert_eq!(w["runs"].as_array().unwrap().len(), 3);
    let j = &w["joules_per_unit"];
    let (mean, lo, hi) = (
        j["mean"].as_f64().unwrap(),
        j["ci95"][0].as_f64().unwrap(),
        j["ci95"][1].as_f64().unwrap(),
    );
    assert!(mean > 0.0 && lo <= mean && mean <= hi, "{j}");
    let l = &w["latency_ms"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64());
    let wh = w["per_1k_queries"]["wh"].as_f64().unwrap();
    assert!((wh - w["wh_per_1k_queries"]["mean"].as_f64().unwrap()).abs() < 1e-12);
    // SCI = (operational + embodied share) per 1,000 queries; embodied: 1,000 kg over 4 years
    // for each run's mean wall time, spread over its 100 queries.
    let sci = &w["per_1k_queries"]["sci"];
    let hours = sci["reserved_hours_per_run"].as_f64().unwrap();
    let runs: Vec<f64> = w["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seconds"].as_f64().unwrap())
        .collect();
    assert!((hours - runs.iter().sum::<f64>() / 3.0 / 3600.0).abs() < 1e-12);
    let m_per_1k = 1e6 * hours / (4.0 * 8760.0) / 100.0 * 1000.0;
    assert!((sci["embodied_g_per_1k"].as_f64().unwrap() - m_per_1k).abs() <= 1e-9 * m_per_1k);
    let want = sci["operational_g_per_1k"].as_f64().unwrap() + m_per_1k;
    let got = w["per_1k_queries"]["sci_gco2e"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    std::fs::write(dir.path().join("s.json"), w.to_string()).unwrap();
    // Break-even of compressing s to int8: the quantize command meters itself, and the int8
    // model's measure, given s's as the baseline, sets that cost against the saving per query.
    let q = frugal_json(
        &[
            "quantize",
            "s.safetensors",
            "q.safetensors",
            "--type",
            "int8",
            "--json",
        ],
        dir.path(),
    );
    let cost = joules(&q);
    assert!(cost > 0.0, "{}", q["energy"]);
    std::fs::write(dir.path().join("q-cost.json"), q.to_string()).unwrap();
    let b = frugal_json(
        &[
            "measure",
            "q.safetensors",
            "--data",
            "digits",
            "--queries",
            "100",
            "--repeats",
            "3",
            "--baseline",
            "s.json",
            "--cost",
            "q-cost.json",
            "--json",
        ],
        dir.path(),
    );
    let be = &b["break_even"];
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12);
    assert!(
        close(be["compression_joules"].as_f64().unwrap(), cost),
        "{be}"
    );
    let saving = w["joules_per_unit"]["mean"].as_f64().unwrap()
        - b["joules_per_unit"]["mean"].as_f64().unwrap();
    let sv = &be["saving_joules_per_query"];
    assert!(close(sv["difference"].as_f64().unwrap(), saving), "{be}");
    // The saving's interval: the two runs' half-widths in quadrature around the difference;
    // a break-even only where it excludes zero (and the saving is positive).
    let half = |e: &serde_json::Value| {
        (e["ci95"][1].as_f64().unwrap() - e["ci95"][0].as_f64().unwrap()) / 2.0
    };
    let h = half(&w["joules_per_unit"]).hypot(half(&b["joules_per_unit"]));
    assert!(close(sv["ci95"][0].as_f64().unwrap(), saving - h), "{be}");
    let significant = saving - h > 0.0 || saving + h < 0.0;
    assert_eq!(sv["significant"].as_bool(), Some(significant), "{be}");
    match be["queries"].as_f64() {
        Some(n) => assert!(
            significant && saving > 0.0 && close(n, cost / saving),
            "{be}"
        ),
        None => {
            assert!(!significant || saving <= 0.0, "{be}");
            let v = be["verdict"].as_str().unwrap();
            assert!(
                significant || v.starts_with("no significant saving per query"),
                "{v}"
            );
        }
    }
    assert_bad_input(
        &frugal(
            &[
                "measure",
                "q.safetensors",
                "--data",
                "digits",
                "--baseline",
                "q-cost.json",
                "--cost",
                "q-cost.json",
            ],
            dir.path(),
        ),
        "baseline report has no joules_per_unit",
    );
    std::fs::write(dir.path().join("sci.toml"), "max_sci = \"1 kg\"\n").unwrap();
    assert_eq!(
        frugal(&["check", "--policy", "sci.toml", "s.json"], dir.path())
            .status
            .code(),
        Some(0)
    );
    let g = w["per_1k_queries"]["gco2e"].as_f64().unwrap();
    assert!(
        (g - wh / 1000.0 * 380.95).abs() < 1e-9 * g.max(1e-12),
        "{g}"
    );
    for s in w["energy"]["sources"].as_array().unwrap() {
        assert!(["measured", "estimated"].contains(&s["provenance"]["kind"].as_str().unwrap()));
    }
    std::fs::write(dir.path().join("w.json"), w.to_string()).unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "max_wh_per_1k_queries = \"1 kWh\"\n",
    )
    .unwrap();
    assert_eq!(
        frugal(&["check", "--policy", "p.toml", "w.json"], dir.path())
            .status
            .code(),
        Some(0)
    );
    assert_bad_input(
        &frugal(&["measure", "s.safetensors", "--queries", "5"], dir.path()),
        "--data",
    );
    assert_bad_input(
        &frugal(
            &["measure", "s.safetensors", "--data", "digits", "--", "true"],
            dir.path(),
        ),
        "not both",
    );
    assert_bad_input(
        &frugal(
            &[
                "measure",
                "s.safetensors",
                "--data",
                "digits",
                "--export",
                "ex",
            ],
            dir.path(),
        ),
        "--export, --flops, --model-name and --supplier",
    );
    let Some(minilm) =
        frugal_formats::assets::require_or_skip(frugal_formats::assets::minilm_dir(), "MiniLM")
    else {
        return;
    };
    if frugal_formats::assets::require_or_skip(frugal_formats::assets::brown_dir(), "Brown corpus")
        .is_none()
    {
        return;
    }
    let e = frugal_json(
        &[
            "measure",
            minilm.to_str().unwrap(),
            "--queries",
            "8",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(
        (e["kind"].as_str(), e["unit"].as_str()),
        (Some("encoder"), Some("sentence"))
    );
    assert!(e["joules_per_unit"]["mean"].as_f64().unwrap() > 0.0);
}

/// `frugal check` on real reports — the embedded run's (one verdict per student, the same as
/// the run printed), a classifier prune's, a measured workload's and a measured command's —
/// with exit codes (0 pass, 1 a model fails, 2 bad input) and messages naming the line, the
/// key or the missing figure; policies scoped by kind of model; reports refused unless they
/// are exactly what Frugal writes.
#[test]
fn policy_gate_reads_every_report_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The embedded run: its printed verdicts, then `frugal check` on its report.json.
    let run = frugal(&["run", "--out", "o"], d);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed: Vec<(String, bool)> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("policy")?.trim();
            let (model, verdict) = l.split_once(' ')?;
            Some((model.to_string(), verdict.trim().starts_with("pass")))
        })
        .collect();
    assert_eq!(printed.len(), 5, "{}", String::from_utf8_lossy(&run.stdout));
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
    let default = default.to_str().unwrap();
    let c = frugal(
        &["check", "--policy", default, "o/report.json", "--json"],
        d,
    );
    let any_fails = printed.iter().any(|(_, pass)| !pass);
    assert_eq!(c.status.code(), Some(i32::from(any_fails)));
    let c = common::report(&c.stdout);
    let checked: Vec<(String, bool)> = c["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_string(),
                m["pass"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(checked, printed);
    std::fs::write(d.join("c.json"), c.to_string()).unwrap();
    // A classifier prune (accuracy drop and size), a workload (energy) and a command.
    frugal_json(
        &[
            "distill",
            "--data",
            "digits",
            "--arch",
            "student",
            "--epochs",
            "1",
            "--out",
            "s.safetensors",
            "--json",
        ],
        d,
    );
    let p = frugal_json(
        &[
            "prune",
            "s.safetensors",
            "p.safetensors",
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--data",
            "digits",
            "--recover-epochs",
            "1",
            "--json",
        ],
        d,
    );
    std::fs::write(d.join("p.json"), p.to_string()).unwrap();
    let w = frugal_json(
        &[
            "measure",
            "p.safetensors",
            "--data",
            "digits",
            "--queries",
            "50",
            "--repeats",
            "2",
            "--region",
            "FRA",
            "--json",
        ],
        d,
    );
    std::fs::write(d.join("w.json"), w.to_string()).unwrap();
    let m = frugal_json(&["measure", "--json", "--queries", "1000", "--", "true"], d);
    std::fs::write(d.join("m.json"), m.to_string()).unwrap();
    let estimated = w["energy"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["provenance"]["kind"] != "measured");
    // Hand-edited and foreign reports.
    let mut edited = p.clone();
    edited["accuracy_drop_pt"] = "0".into();
    std::fs::write(d.join("edited.json"), edited.to_string()).unwrap();
    let mut extra = p.clone();
    extra["quality_ok"] = true.into();
    std::fs::write(d.join("extra.json"), extra.to_string()).unwrap();
    let mut old = p.clone();
    old["schema_version"] = 2.into();
    std::fs::write(d.join("v2.json"), old.to_string()).unwrap();
    std::fs::write(d.join("bad.json"), "{not json").unwrap();
    std::fs::write(
        d.join("partial.json"),
        r#"{"schema_version": 3, "report": "prune", "accuracy_drop_pt": 0.1}"#,
    )
    .unwrap();
    let drop = p["accuracy_drop_pt"].as_f64().unwrap();
    let cases: Vec<(&str, &str, &[&str], i32, &str)> = vec![
        // Scoped tables, and a policy for another kind (exit 2, naming what it covers).
        (
            "[classifier]\nmax_accuracy_drop_pt = 100\nmin_size_reduction = 1\n",
            "p.json",
            &[],
            0,
            "1 of 1 models pass",
        ),
        (
            "[classifier]\nmin_size_reduction = 1000\n",
            "p.json",
            &[],
            1,
            "FAIL [classifier] min_size_reduction",
        ),
        (
            "[language_model]\nmax_kld = 0.1\n",
            "p.json",
            &[],
            2,
            "its clauses cover only language_model",
        ),
        (
            "[language_model]\nmax_kld = 0.1\n[encoder]\nmin_cosine_similarity = 0.9\n",
            "o/report.json",
            &[],
            2,
            "only language_model, encoder",
        ),
        (
            "[classifier]\nmax_accuracy_drop_pt = 1\n",
            "m.json",
            &[],
            2,
            "does not say what kind",
        ),
        (
            "max_accuracy_drop_pt = 0.1\n[classifier]\nmax_accuracy_drop_pt = 100\n",
            "p.json",
            &[],
            0,
            "[classifier] max_accuracy_drop_pt",
        ),
        // A figure the report lacks fails, naming it.
        (
            "max_kld = 0.1\n",
            "p.json",
            &[],
            1,
            "missing figure: mean KL divergence",
        ),
        (
            "max_wh_per_1k_queries = \"1 kWh\"\n",
            "p.json",
            &[],
            1,
            "missing figure: energy per 1,000 queries",
        ),
        (
            "max_break_even_queries = \"5 M\"\n",
            "w.json",
            &[],
            1,
            "missing figure: queries after which",
        ),
        (
            "require_eu_ai_act_fields = true\n",
            "w.json",
            &[],
            1,
            "missing figure: the report's eu_ai_act block",
        ),
        (
            "min_cosine_similarity = 0.9\n",
            "o/report.json",
            &[],
            1,
            "0 of 5 models pass",
        ),
        (
            "max_sci = \"1 kg\"\n",
            "p.json",
            &[],
            1,
            "missing figure: SCI",
        ),
        ("max_sci = \"1 kg\"\n", "w.json", &[], 0, "PASS max_sci"),
        // Figures and units.
        (
            "max_wh_per_1k_queries = \"1 kWh\"\n",
            "w.json",
            &[],
            0,
            "PASS max_wh_per_1k_queries",
        ),
        (
            "max_wh_per_1k_queries = \"1e-9 mWh\"\n",
            "w.json",
            &[],
            1,
            "FAIL max_wh_per_1k_queries",
        ),
        (
            "max_gco2e_per_1k_queries = \"1 kg\"\n",
            "w.json",
            &[],
            0,
            "PASS max_gco2e_per_1k_queries",
        ),
        (
            "region = \"FRA\"\npue = 1.5\nmax_gco2e_per_1k_queries = \"1 kg\"\n",
            "w.json",
            &[],
            0,
            "PUE 1.5",
        ),
        (
            "max_wh_per_1k_queries = \"1 kWh\"\n",
            "m.json",
            &[],
            0,
            "PASS max_wh_per_1k_queries",
        ),
        (
            "require_measured_energy = true\n",
            "w.json",
            &[],
            i32::from(estimated),
            if estimated {
                "some figures are estimates"
            } else {
                "every figure measured"
            },
        ),
        (
            "require_eu_ai_act_fields = true\n",
            "m.json",
            &[],
            1,
            "missing training_compute_flops",
        ),
        (
            "label_wh_per_1k_queries = [0.01, 0.1, 1, 10]\nmin_size_reduction = 1\n",
            "p.json",
            &[],
            0,
            "1 of 1 models pass",
        ),
        // --model picks one of several.
        (
            "[classifier]\nmin_size_reduction = 2\n",
            "o/report.json",
            &["--model", "student-int8"],
            0,
            "student-int8 (classifier): PASS",
        ),
        (
            "[classifier]\nmin_size_reduction = 2\n",
            "o/report.json",
            &["--model", "nope"],
            2,
            "holds no such model (it holds: student-labels",
        ),
        // Bad policies (line and key named).
        ("max_kld = \n", "p.json", &[], 2, "p.toml:1: (syntax)"),
        (
            "name = \"x\"\nmax_kdl = 0.1\n",
            "p.json",
            &[],
            2,
            "p.toml:2: max_kdl: unknown clause",
        ),
        (
            "\nmax_wh_per_1k_queries = \"5 g\"\n",
            "p.json",
            &[],
            2,
            "p.toml:2: max_wh_per_1k_queries: wrong unit `g`",
        ),
        (
            "max_kld = \"high\"\n",
            "p.json",
            &[],
            2,
            "p.toml:1: max_kld: `high` is not a number",
        ),
        (
            "require_measured_energy = \"yes\"\n",
            "p.json",
            &[],
            2,
            "require_measured_energy: expects true or false",
        ),
        (
            "region = \"Atlantis\"\nmax_kld = 1\n",
            "p.json",
            &[],
            2,
            "p.toml:1: region: region `Atlantis`",
        ),
        (
            "pue = 0.5\nmax_kld = 1\n",
            "p.json",
            &[],
            2,
            "p.toml:1: pue: must be a number of at least 1",
        ),
        (
            "max_kld = -1\n",
            "p.json",
            &[],
            2,
            "max_kld: limit -1 must be a finite, non-negative",
        ),
        (
            "max_break_even_queries = \"5 kWh\"\n",
            "p.json",
            &[],
            2,
            "p.toml:1: max_break_even_queries: wrong unit `kWh`",
        ),
        (
            "max_kld = 0.1\nlabel_wh_per_1k_queries = [1, 0.1, 2, 3]\n",
            "p.json",
            &[],
            2,
            "p.toml:2: label_wh_per_1k_queries: bounds",
        ),
        (
            "[classifier]\nregion = \"FRA\"\n",
            "p.json",
            &[],
            2,
            "p.toml:2: region: is a setting of the whole policy",
        ),
        ("region = \"FRA\"\n", "p.json", &[], 2, "checks nothing"),
        // Reports that are not what Frugal writes.
        (
            "min_size_reduction = 1\n",
            "edited.json",
            &[],
            2,
            "not a `prune` report as Frugal writes it",
        ),
        (
            "min_size_reduction = 1\n",
            "extra.json",
            &[],
            2,
            "`quality_ok` differs",
        ),
        (
            "min_size_reduction = 1\n",
            "v2.json",
            &[],
            2,
            "schema version 2",
        ),
        (
            "min_size_reduction = 1\n",
            "partial.json",
            &[],
            2,
            "not a `prune` report",
        ),
        (
            "min_size_reduction = 1\n",
            "bad.json",
            &[],
            2,
            "not a JSON report",
        ),
        (
            "min_size_reduction = 1\n",
            "c.json",
            &[],
            2,
            "holds verdicts, not figures",
        ),
        (
            "min_size_reduction = 1\n",
            "absent.json",
            &[],
            2,
            "absent.json",
        ),
    ];
    assert!(cases.len() >= 30);
    for (policy, report, extra, code, needle) in &cases {
        std::fs::write(d.join("p.toml"), policy).unwrap();
        let mut args = vec!["check", "--policy", "p.toml", report];
        args.extend_from_slice(extra);
        let out = frugal(&args, d);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{policy:?} on {report}: {text}"
        );
        assert!(
            text.contains(needle),
            "{policy:?} on {report}: want `{needle}` in:\n{text}"
        );
    }
    // The figure read is the report's own.
    std::fs::write(
        d.join("p.toml"),
        "[classifier]\nmax_accuracy_drop_pt = 100\n",
    )
    .unwrap();
    let v = common::report(&frugal(&["check", "--policy", "p.toml", "p.json", "--json"], d).stdout);
    assert_eq!(v["models"][0]["clauses"][0]["value"].as_f64(), Some(drop));
    // The shipped profiles: the default and strict ones serve a classifier, the EU one a
    // command's record.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for (name, report, code) in [
        // 50 % sparse storage is 1.7× smaller, not 2×.
        ("default.toml", "p.json", 1),
        ("strict.toml", "p.json", 1),
        ("eu-ai-act.toml", "m.json", 1),
    ] {
        let p = root.join(name);
        let out = frugal(&["check", "--policy", p.to_str().unwrap(), report], d);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let list = frugal(&["check", "--list"], d);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("max_sci") && list.contains("[language_model]"),
        "{list}"
    );
}

/// Renders a page in a real headless Chromium (`scripts/test` installs Debian's as root;
/// missing, the test skips with a message, or fails under `CI=true`): it must load, log no
/// console message, and leave a screenshot (kept in `target/test-artifacts/report.png`) whose
/// structure is the report's: the verdict box across the top, the Pareto front drawn, a bar
/// for every model in the bits chart, and the efficiency label.
fn render_in_chromium(page: &Path, models: usize) {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but no headless Chromium: scripts/test installs Debian's chromium as root"
        );
        eprintln!("skipped: no headless Chromium to render {}", page.display());
        return;
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--window-size=1000,3000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(
        !log.lines().any(|l| l.contains(":CONSOLE")),
        "console messages while rendering {}:\n{log}",
        page.display()
    );
    let (w, h, px) = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((w, h), (1000, 3000));
    let at = |x: usize, y: usize| &px[(y * w + x) * 3..][..3];
    let count = |rgb: [u8; 3]| (0..w * h).filter(|&i| px[i * 3..i * 3 + 3] == rgb).count();
    // The verdict box: a row of its green border across most of the page, near the top.
    let border = [26, 127, 55];
    let top = (0..h)
        .find(|&y| (0..w).filter(|&x| at(x, y) == border).count() > w / 2)
        .expect("no verdict box");
    assert!(top < 200, "the verdict box starts at {top} px, not first");
    // The Pareto front (red), a bar of each model's colour, the label's grade A.
    assert!(count([255, 0, 0]) > 100, "no Pareto front");
    let palette = [
        [0x00, 0x72, 0xB2],
        [0xE6, 0x9F, 0x00],
        [0x00, 0x9E, 0x73],
        [0xCC, 0x79, 0xA7],
        [0x56, 0xB4, 0xE9],
        [0xD5, 0x5E, 0x00],
    ];
    for (k, c) in palette.iter().take(models).enumerate() {
        assert!(count(*c) > 200, "no bars of model {k} ({c:?})");
    }
    assert!(count([0x1a, 0x96, 0x41]) > 500, "no efficiency label");
}

/// An 8-bit RGB or RGBA PNG as (width, height, RGB pixels): enough of the format for
/// Chromium's screenshots.
fn decode_png(png: &[u8]) -> (usize, usize, Vec<u8>) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (mut w, mut h, mut channels) = (0, 0, 0);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                assert_eq!(data[12], 0, "interlaced");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw).unwrap();
    let stride = w * channels;
    assert_eq!(raw.len(), h * (stride + 1), "PNG data size");
    let mut img = vec![0u8; h * stride];
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                img[y * stride + x - channels]
            } else {
                0
            } as i32;
            let b = if y > 0 { img[(y - 1) * stride + x] } else { 0 } as i32;
            let c = if x >= channels && y > 0 {
                img[(y - 1) * stride + x - channels]
            } else {
                0
            } as i32;
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            img[y * stride + x] = (line[x] as i32 + pred) as u8;
        }
    }
    let rgb = img
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (w, h, rgb)
}

/// `frugal tune` of a classifier: a per-tensor mix of integer schemes within an accuracy-drop
/// limit, judged on half of the test images and verified on the other half; its plan rebuilds
/// the same bytes with `frugal quantize --plan`; the same from a policy; bad limits and plans
/// refused.
#[test]
fn tune_a_classifier_within_an_accuracy_drop_and_rebuild_it_from_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = frugal_json(
        &[
            "distill",
            "--data",
            "digits",
            "--arch",
            "teacher",
            "--epochs",
            "6",
            "--out",
            "t.safetensors",
            "--json",
        ],
        d,
    );
    assert!(t["eval"]["accuracy_pct"].as_f64().unwrap() > 80.0, "{t}");
    let r = frugal_json(
        &[
            "tune",
            "t.safetensors",
            "-o",
            "q.safetensors",
            "--data",
            "digits",
            "--max-accuracy-drop-pt",
            "0.5",
            "--json",
        ],
        d,
    );
    let chosen = &r["candidates"][r["chosen"].as_u64().unwrap() as usize];
    assert!(
        chosen["search"]["accuracy_drop_pt"].as_f64().unwrap() <= 0.5,
        "{r}"
    );
    assert!(r["accuracy_drop_pt"].as_f64().unwrap() <= 0.5, "{r}");
    // Every weight matrix has a sensitivity for each scheme that fits it; conv0 (9 columns)
    // takes no int4 group.
    let sens = r["sensitivity"].as_array().unwrap();
    assert!(sens
        .iter()
        .any(|s| s["tensor"] == "fc1.weight" && s["scheme"] == "int4-g32"));
    assert!(!sens
        .iter()
        .any(|s| s["tensor"] == "conv0.weight" && s["scheme"] != "int8"));
    let (inb, outb) = (
        r["input_bytes"].as_u64().unwrap(),
        r["output_bytes"].as_u64().unwrap(),
    );
    assert!(outb * 3 < inb, "{outb} of {inb} bytes");
    assert_eq!(
        std::fs::metadata(d.join("q.safetensors")).unwrap().len(),
        outb
    );
    assert!(d.join("q.safetensors.report.html").exists());
    assert!(
        !d.join("q.safetensors.tune").exists(),
        "scratch folder removed"
    );
    // The plan rebuilds the same file; an independent evaluation loads it.
    frugal_json(
        &[
            "quantize",
            "t.safetensors",
            "again.safetensors",
            "--type",
            "int8",
            "--plan",
            "q.safetensors.plan.toml",
            "--json",
        ],
        d,
    );
    assert!(
        std::fs::read(d.join("q.safetensors")).unwrap()
            == std::fs::read(d.join("again.safetensors")).unwrap(),
        "the plan rebuilds the same bytes"
    );
    let e = frugal_json(&["eval", "q.safetensors", "--data", "digits", "--json"], d);
    let full = t["eval"]["accuracy_pct"].as_f64().unwrap();
    assert!(
        (full - e["accuracy_pct"].as_f64().unwrap()).abs() <= 1.0,
        "{e}"
    );
    // From the default policy (max_accuracy_drop_pt = 1).
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml");
    let p = frugal_json(
        &[
            "tune",
            "t.safetensors",
            "-o",
            "p.safetensors",
            "--data",
            "digits",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ],
        d,
    );
    assert_eq!(p["max_accuracy_drop_pt"], 1.0);
    // Refused: a negative limit, the input as output, a plan for another model.
    let bad = |args: &[&str], needle: &str| assert_bad_input(&frugal(args, d), needle);
    bad(
        &[
            "tune",
            "t.safetensors",
            "-o",
            "x.safetensors",
            "--data",
            "digits",
            "--max-accuracy-drop-pt=-1",
        ],
        "non-negative",
    );
    bad(
        &[
            "tune",
            "t.safetensors",
            "-o",
            "t.safetensors",
            "--data",
            "digits",
            "--max-accuracy-drop-pt",
            "1",
        ],
        "refusing to write over an input (input model",
    );
    std::fs::write(
        d.join("other.toml"),
        "[tensors]\n\"blk.0.ffn_up.weight\" = \"int8\"\n",
    )
    .unwrap();
    bad(
        &[
            "quantize",
            "t.safetensors",
            "y.safetensors",
            "--type",
            "int8",
            "--plan",
            "other.toml",
        ],
        "is not an F32 weight matrix",
    );
    assert!(!d.join("x.safetensors").exists() && !d.join("y.safetensors").exists());
}

/// A block-wise run killed part-way continues from its checkpoint with `--resume` and writes
/// the bytes (and AWQ's choices) of a run never interrupted; a checkpoint made by other
/// settings is refused, and a finished run leaves none behind. On SmolLM2's first six blocks
/// ([`common::smollm2_first_blocks`]), killed after the fourth.
#[test]
fn a_killed_awq_gptq_run_resumes_to_the_same_bytes() {
    let Some(dir) = brown_calib_and_eval() else {
        return;
    };
    let d = dir.path();
    let Some(p) = common::smollm2_first_blocks(d, 6) else {
        return;
    };
    let args = |out: &'static str, tokens: &'static str| {
        vec![
            "quantize",
            p.to_str().unwrap(),
            out,
            "--type",
            "Q4_0",
            "--calib",
            "calib.txt",
            "--calib-ctx",
            "256",
            "--calib-tokens",
            tokens,
            "--method",
            "awq-gptq",
            "--no-eval",
            "--json",
        ]
    };
    let whole = frugal_json(&args("whole.gguf", "512"), d);
    let bytes = |f: &str| std::fs::read(d.join(f)).unwrap();
    let killed = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args("r.gguf", "512"))
        .current_dir(d)
        .env("FRUGAL_FAULT_INJECT", "0:after-block-3:kill")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the run was killed");
    assert!(!d.join("r.gguf").exists());
    let ckpt = d.join("r.gguf.checkpoint");
    assert!(ckpt.exists() && d.join("r.gguf.checkpoint.tensors").exists());
    // The checkpoint keeps the seconds the pass had run (a safetensors header's metadata).
    let carried = {
        let raw = std::fs::read(&ckpt).unwrap();
        let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).unwrap();
        let meta = header["__metadata__"]["frugal.block_checkpoint"]
            .as_str()
            .unwrap();
        let meta: serde_json::Value = serde_json::from_str(meta).unwrap();
        meta["record"]["seconds"].as_f64().unwrap()
    };
    assert!(carried > 0.0, "{carried}");
    // Other settings: refused, the checkpoint kept.
    let mut other = args("r.gguf", "256");
    other.push("--resume");
    assert_bad_input(&frugal(&other, d), "made by another run");
    assert!(ckpt.exists());
    // Resumed with its Gram sums and factorizations in scratch files (the whole run held
    // them in memory): the same bytes.
    std::fs::create_dir(d.join("scratch")).unwrap();
    let mut resume = args("r.gguf", "512");
    resume.extend(["--resume", "--scratch-dir", "scratch"]);
    let resumed = frugal_json(&resume, d);
    assert!(
        bytes("r.gguf") == bytes("whole.gguf"),
        "the resumed run's bytes"
    );
    assert_eq!(std::fs::read_dir(d.join("scratch")).unwrap().count(), 0);
    assert_eq!(resumed["quantize"]["awq"], whole["quantize"]["awq"]);
    // The report's time is the whole pass's, the killed run's part included.
    let seconds = resumed["quantize"]["seconds"].as_f64().unwrap();
    assert!(
        seconds > carried,
        "{seconds} s reported, {carried} s carried"
    );
    assert!(!ckpt.exists() && !d.join("r.gguf.checkpoint.tensors").exists());
    // --resume is for the block-wise methods.
    assert_bad_input(
        &frugal(
            &[
                "quantize",
                p.to_str().unwrap(),
                "x.gguf",
                "--type",
                "Q8_0",
                "--resume",
            ],
            d,
        ),
        "--resume continues a block-wise method",
    );
}

#[test]
fn convert_and_export_from_the_command_line() {
    let Some(minilm) =
        frugal_formats::assets::require_or_skip(frugal_formats::assets::minilm_dir(), "MiniLM")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = frugal(
        &[
            "convert",
            minilm.to_str().unwrap(),
            "m.gguf",
            "--outtype",
            "q8_0",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(BertModel) -> m.gguf (bert, q8_0): 101 tensors"),
        "{text}"
    );
    assert!(d.join("m.gguf").is_file());
    // A folder without config.json; an export of an architecture not exported; an existing
    // output folder: each refused with exit 2, nothing written.
    std::fs::create_dir(d.join("empty")).unwrap();
    assert_bad_input(&frugal(&["convert", "empty", "e.gguf"], d), "config.json");
    assert!(!d.join("e.gguf").exists());
    assert_bad_input(
        &frugal(&["export", "m.gguf", "m-hf"], d),
        "`general.architecture`: `bert` is not exported yet",
    );
    assert!(!d.join("m-hf").exists());
    assert_bad_input(&frugal(&["export", "m.gguf", "empty"], d), "already exists");

    // A decoder's folder where a GGUF model is expected: quantized (and judged against the
    // folder) as its conversion is, the same bytes.
    let Some(smol) =
        frugal_formats::assets::require_or_skip(frugal_formats::assets::smollm2_gguf(), "SmolLM2")
    else {
        return;
    };
    let Some(brown) = frugal_formats::assets::require_or_skip(
        frugal_formats::assets::brown_dir(),
        "Brown corpus",
    ) else {
        return;
    };
    let out = frugal(&["export", smol.to_str().unwrap(), "smol-hf"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = d.join("cj.txt");
    let ids = frugal_formats::brown::select_ids(&brown, "cj01-cj02").unwrap();
    std::fs::write(
        &text,
        frugal_formats::brown::plain_text(&brown, &ids).unwrap(),
    )
    .unwrap();
    let r = frugal_json(
        &[
            "quantize",
            "smol-hf",
            "q-folder.gguf",
            "--type",
            "Q4_K_M",
            "--eval-text",
            "cj.txt",
            "--eval-chunks",
            "2",
            "--json",
        ],
        d,
    );
    let kld = r["quality"]["kld"]["mean"].as_f64().unwrap();
    assert!(kld > 0.0 && kld < 0.1, "KLD {kld}");
    let out = frugal(&["convert", "smol-hf", "smol.gguf", "--outtype", "f32"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = frugal(
        &[
            "quantize",
            "smol.gguf",
            "q-file.gguf",
            "--type",
            "Q4_K_M",
            "--no-eval",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(d.join("q-folder.gguf")).unwrap()
            == std::fs::read(d.join("q-file.gguf")).unwrap(),
        "quantizing the folder and its conversion differ"
    );
    // `inspect` of the folder: the GGUF it converts to.
    let out = frugal(&["inspect", "smol-hf"], d);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && shown.contains("Hugging Face checkpoint folder")
            && shown.contains("architecture  llama"),
        "{shown}"
    );
    // A recipe whose model is the folder: the same steps' bytes as from its conversion
    // (pruning reads the permuted Q/K the view holds; the evaluation judges against the folder).
    for (name, model) in [("folder", "smol-hf"), ("file", "smol.gguf")] {
        let recipe = format!(
            "name = \"r-{name}\"\nmodel = \"{}\"\n[eval]\ntext = {{ file = \"{}\" }}\nchunks = 1\n\
             [[step]]\nkind = \"prune\"\nmethod = \"magnitude\"\nsparsity = 0.3\n\
             [[step]]\nkind = \"eval\"\n",
            d.join(model).display(),
            text.display()
        );
        std::fs::write(d.join(format!("{name}.toml")), recipe).unwrap();
        let out = frugal(
            &[
                "run",
                &format!("{name}.toml"),
                "--out",
                &format!("run-{name}"),
            ],
            d,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        std::fs::read(d.join("run-folder/01-prune.gguf")).unwrap()
            == std::fs::read(d.join("run-file/01-prune.gguf")).unwrap(),
        "a recipe on the folder and on its conversion differ"
    );
}
