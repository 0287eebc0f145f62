//! `frugal` under `mpirun -np 2` against the same command as one process: quantization byte
//! for byte, evaluation number for number, distillation's loss curve within float tolerance,
//! and a failing or killed rank ending the job with no output left behind. Built with the
//! `mpi` feature only (`cargo test -p frugal-cli --features mpi`); needs Open MPI's `mpirun`.
//! The model is SmolLM2's first six blocks (`common::smollm2_first_blocks`): what these tests
//! check is that splitting the work changes nothing, which the real weights of six blocks show
//! as well as thirty at a third of the arithmetic.
#![cfg(feature = "mpi")]

mod common;
use common::{brown_calib_and_eval as texts, smollm2_first_blocks};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_frugal");

fn alone(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("frugal runs")
}

/// `mpirun -np 2 frugal ARGS`, one thread per rank, with `env` exported to the ranks.
fn ranks2(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = mpirun(env);
    c.args(["-np", "2", BIN]).args(args).current_dir(cwd);
    c.output()
        .expect("mpirun runs (install Open MPI: libopenmpi-dev openmpi-bin)")
}

/// Two ranks, each with its own arguments: `mpirun -np 1 frugal ARGS0 : -np 1 frugal ARGS1`.
fn ranks2_each(args: [&[&str]; 2], cwd: &Path) -> Output {
    let mut c = mpirun(&[]);
    c.args(["-np", "1", BIN])
        .args(args[0])
        .args([":", "-np", "1", BIN])
        .args(args[1])
        .current_dir(cwd);
    c.output()
        .expect("mpirun runs (install Open MPI: libopenmpi-dev openmpi-bin)")
}

/// `mpirun` with its options for the tests: one thread per rank, `env` exported, under a
/// timeout; the number of ranks and the command follow.
fn mpirun(env: &[(&str, &str)]) -> Command {
    // A hung job fails the test instead of the whole CI run.
    let mut c = Command::new("timeout");
    c.args(["600", "mpirun", "--allow-run-as-root", "--oversubscribe"])
        .args(["-x", "RAYON_NUM_THREADS=1"]);
    for (k, v) in env {
        c.args(["-x", &format!("{k}={v}")]);
    }
    for k in ["FRUGAL_CACHE", "HOME", "PATH"] {
        if std::env::var_os(k).is_some() {
            c.args(["-x", k]);
        }
    }
    c
}

fn ok_json(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::report(&out.stdout)
}

/// Removes what depends on the clock, the process or the output's name from a JSON report.
fn without_timing(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            for k in [
                "seconds",
                "eval_seconds",
                "tokens_per_second",
                "samples_per_second",
                "images_per_second",
                "threads",
                "energy",
                "output",
                "model",
            ] {
                o.remove(k);
            }
            o.values_mut().for_each(without_timing);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_timing),
        _ => {}
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Calibration (importance matrix, then GPTQ block by block) split over two ranks writes the
/// single process's file byte for byte, and the evaluation that follows (chunks split over the
/// ranks) gives the same numbers; so does `frugal eval` on its own.
#[test]
fn two_ranks_quantize_and_evaluate_exactly_as_one() {
    let Some(dir) = texts() else { return };
    let d = dir.path();
    let Some(model) = smollm2_first_blocks(d, 6) else {
        return;
    };
    let m = model.to_str().unwrap();
    for (method, ty) in [("rtn", "Q4_K_M"), ("gptq", "Q4_K_S")] {
        let run = |out: &str, two: bool| {
            let args = [
                "quantize",
                m,
                out,
                "--type",
                ty,
                "--calib",
                "calib.txt",
                "--calib-ctx",
                "128",
                "--calib-tokens",
                "384",
                "--method",
                method,
                "--eval-text",
                "eval.txt",
                "--eval-chunks",
                "3",
                "--json",
            ];
            // The evaluation after quantizing is checked once (GPTQ); `frugal eval` below.
            let args: Vec<&str> = if method == "rtn" {
                args.iter()
                    .copied()
                    .filter(|a| !["--eval-text", "eval.txt", "--eval-chunks", "3"].contains(a))
                    .chain(["--no-eval"])
                    .collect()
            } else {
                args.to_vec()
            };
            let o = if two {
                ranks2(&args, d, &[])
            } else {
                alone(&args, d)
            };
            ok_json(&o, &format!("{method} {out}"))
        };
        let mut one = run("one.gguf", false);
        let mut two = run("two.gguf", true);
        let (a, b) = (
            std::fs::read(d.join("one.gguf")).unwrap(),
            std::fs::read(d.join("two.gguf")).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{method}: file sizes");
        assert!(
            a == b,
            "{method}: the two-rank file differs from the single process's"
        );
        without_timing(&mut one);
        without_timing(&mut two);
        assert_eq!(one["quality"], two["quality"], "{method}: evaluation");
        assert_eq!(
            one["quantize"]["tensors"], two["quantize"]["tensors"],
            "{method}: per-tensor report"
        );
        if method == "gptq" {
            assert!(one["quality"]["kld"]["mean"].as_f64().unwrap() > 0.0);
        }
        std::fs::remove_file(d.join("two.gguf")).unwrap();
        if method == "rtn" {
            std::fs::remove_file(d.join("one.gguf")).unwrap();
        }
    }
    // `frugal eval` alone: five chunks (an odd number: the ranks score 2 and 3).
    let args = [
        "eval",
        "one.gguf",
        "--text",
        "eval.txt",
        "--reference",
        m,
        "--ctx",
        "256",
        "--chunks",
        "5",
        "--json",
    ];
    let mut one = ok_json(&alone(&args, d), "eval alone");
    let mut two = ok_json(&ranks2(&args, d, &[]), "eval on two ranks");
    without_timing(&mut one);
    without_timing(&mut two);
    assert_eq!(one, two);
    assert_eq!(one["n_chunks"], 5, "{one}");
}

/// A copy of the GGUF file `src` at `dst` with every tensor of the blocks `blocks` overwritten
/// by 0xFF bytes: NaN in F32 and F16, NaN scales in the block-quantized types, so that any use
/// of those blocks shows in the figures.
fn poisoned_copy(src: &Path, dst: &Path, blocks: std::ops::Range<usize>) {
    let f = frugal_formats::gguf::GgufFile::open(src).unwrap();
    let mut bytes = std::fs::read(src).unwrap();
    let mut n = 0;
    for t in &f.header.tensors {
        if frugal_compress::quant::mix::layer_of(&t.name).is_some_and(|i| blocks.contains(&i)) {
            let start = (f.header.data_offset + t.offset) as usize;
            bytes[start..start + t.n_bytes as usize].fill(0xFF);
            n += 1;
        }
    }
    assert!(
        n >= 9 * blocks.len(),
        "{n} tensors poisoned in blocks {blocks:?}"
    );
    std::fs::write(dst, bytes).unwrap();
}

/// The blocks split across two ranks (`--rank-split blocks`, issue #25): each rank reads only
/// its half of the blocks of the model and of the reference. Each rank is given copies whose
/// other half is poisoned (NaN), and the figures are still the single process's on the intact
/// files, number for number; the same poisoned copy evaluated by one process is refused (its
/// logits are not finite).
#[test]
fn two_ranks_each_holding_half_the_blocks_evaluate_exactly_as_one() {
    let Some(dir) = texts() else { return };
    let d = dir.path();
    let Some(model) = smollm2_first_blocks(d, 6) else {
        return;
    };
    let m = model.to_str().unwrap();
    let q = alone(
        &[
            "quantize",
            m,
            "q.gguf",
            "--type",
            "Q4_0",
            "--no-eval",
            "--json",
        ],
        d,
    );
    ok_json(&q, "quantize Q4_0");
    let n_layer = frugal_models::llama::LlamaConfig::from_gguf(
        &frugal_formats::gguf::GgufFile::open(&model).unwrap(),
    )
    .unwrap()
    .n_layer;
    // Rank r runs blocks shard(n_layer, r, 2): its copies poison the other rank's blocks.
    for r in 0..2 {
        let other = frugal_dist::shard(n_layer, 1 - r, 2);
        poisoned_copy(
            &d.join("q.gguf"),
            &d.join(format!("q{r}.gguf")),
            other.clone(),
        );
        poisoned_copy(&model, &d.join(format!("ref{r}.gguf")), other);
    }
    let args = |model: &str, reference: &str| -> Vec<String> {
        [
            "eval",
            model,
            "--reference",
            reference,
            "--text",
            "eval.txt",
            "--ctx",
            "128",
            "--chunks",
            "3",
            "--rank-split",
            "blocks",
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(|s| s.as_str()).collect()
    }
    let (a0, a1, a) = (
        args("q0.gguf", "ref0.gguf"),
        args("q1.gguf", "ref1.gguf"),
        args("q.gguf", m),
    );
    let mut one = ok_json(&alone(&strs(&a), d), "eval alone");
    let mut two = ok_json(
        &ranks2_each([&strs(&a0), &strs(&a1)], d),
        "eval with the blocks split over two ranks",
    );
    for j in [&mut one, &mut two] {
        without_timing(j);
        // Each rank's copy has its own name.
        j.as_object_mut().unwrap().remove("reference");
    }
    assert_eq!(one, two);
    assert_eq!(one["n_chunks"], 3, "{one}");
    assert!(one["kld"]["mean"].as_f64().unwrap() > 0.0, "{one}");
    // The poison is there: rank 0's copies, evaluated whole by one process, are refused.
    let poisoned = alone(&strs(&args("q0.gguf", "ref0.gguf")), d);
    let err = String::from_utf8_lossy(&poisoned.stderr);
    assert!(
        poisoned.status.code() == Some(2) && err.contains("not finite"),
        "the poisoned copy evaluated alone: {err}"
    );
}

/// Data-parallel training: two ranks each take half of every batch and sum their gradients;
/// the loss curve is the single process's within float tolerance, with and without a teacher.
#[test]
fn two_ranks_distill_with_the_single_process_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A fixed learning rate: the comparison is of the data-parallel arithmetic, not of the
    // default rate (a larger one amplifies the rounding differences of the gradient sums).
    let common = [
        "--data", "digits", "--epochs", "3", "--batch", "64", "--lr", "3e-3", "--json",
    ];
    let teacher = {
        let a = [
            "distill",
            "--arch",
            "teacher",
            "--out",
            "teacher.safetensors",
            "--data",
            "digits",
            "--epochs",
            "2",
            "--json",
        ];
        ok_json(&alone(&a, d), "teacher")
    };
    assert!(teacher["eval"]["accuracy_pct"].as_f64().unwrap() > 50.0);
    for with_teacher in [false, true] {
        let run = |out: &str, two: bool| {
            let mut a = vec!["distill", "--out", out];
            a.extend_from_slice(&common);
            if with_teacher {
                a.extend_from_slice(&["--teacher", "teacher.safetensors", "--alpha", "0.7"]);
            }
            let o = if two {
                ranks2(&a, d, &[])
            } else {
                alone(&a, d)
            };
            ok_json(&o, out)
        };
        let one = run("one.safetensors", false);
        let two = run("two.safetensors", true);
        let losses = |j: &serde_json::Value| -> Vec<f64> {
            j["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["loss"].as_f64().unwrap())
                .collect()
        };
        let (a, b) = (losses(&one), losses(&two));
        assert_eq!(a.len(), 3);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                "teacher {with_teacher}: loss curves {a:?} vs {b:?}"
            );
        }
        assert!(a[2] < a[0], "the loss falls: {a:?}");
        let acc = |j: &serde_json::Value| j["eval"]["accuracy_pct"].as_f64().unwrap();
        assert!(
            (acc(&one) - acc(&two)).abs() <= 1.0,
            "accuracies {} vs {}",
            acc(&one),
            acc(&two)
        );
        assert!(d.join("two.safetensors").exists());
        assert!(!d.join("two.safetensors.checkpoint").exists());
    }
}

/// Language-model distillation, data-parallel: the teacher's top-k computed on each rank's
/// share of the sequences and gathered, each step's two sequences split over the ranks, the
/// gradients summed; the loss of every step is the single process's within float tolerance.
#[test]
fn two_ranks_distill_a_language_model_with_the_single_process_losses() {
    let Some(dir) = texts() else { return };
    let d = dir.path();
    let Some(model) = smollm2_first_blocks(d, 6) else {
        return;
    };
    let m = model.to_str().unwrap();
    let run = |out: &str, two: bool| {
        let args = [
            "distill",
            "--student",
            m,
            "--teacher",
            m,
            "--text",
            "calib.txt",
            "--out",
            out,
            "--ctx",
            "64",
            "--max-tokens",
            "256",
            "--seq-batch",
            "2",
            "--lr",
            "1e-4",
            "--no-eval",
            "--json",
        ];
        let o = if two {
            ranks2(&args, d, &[])
        } else {
            alone(&args, d)
        };
        ok_json(&o, out)
    };
    let one = run("one.gguf", false);
    let two = run("two.gguf", true);
    let steps = |j: &serde_json::Value| -> Vec<(f64, f64)> {
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["loss"].as_f64().unwrap(), s["kl_top_k"].as_f64().unwrap()))
            .collect()
    };
    let (a, b) = (steps(&one), steps(&two));
    assert_eq!(a.len(), 2, "4 sequences, 2 per step: {a:?}");
    assert_eq!(b.len(), 2);
    for ((la, ka), (lb, kb)) in a.iter().zip(&b) {
        assert!((la - lb).abs() <= 1e-4 * la.abs(), "losses {a:?} vs {b:?}");
        assert!(
            (ka - kb).abs() <= 1e-4 * ka.abs().max(1e-3),
            "KL {a:?} vs {b:?}"
        );
    }
    assert_eq!(one["teacher_cache_bytes"], two["teacher_cache_bytes"]);
    for f in ["one.gguf", "two.gguf"] {
        assert!(d.join(f).exists(), "{f} written");
        std::fs::remove_file(d.join(f)).unwrap();
    }
    assert!(!d.join("two.gguf.checkpoint").exists());
}

/// A rank that fails (an error, or killed by SIGKILL before the results are gathered) ends the
/// whole job: non-zero exit, the failing rank named, no output file and nothing temporary
/// left; the same command then runs to completion. Commands that do not run distributed are
/// refused.
#[test]
fn a_failed_or_killed_rank_stops_the_job_and_leaves_nothing() {
    let Some(dir) = texts() else { return };
    let d = dir.path();
    let Some(model) = smollm2_first_blocks(d, 6) else {
        return;
    };
    let m = model.to_str().unwrap();
    let args = [
        "quantize",
        m,
        "out.gguf",
        "--type",
        "Q8_0",
        "--calib",
        "calib.txt",
        "--calib-ctx",
        "128",
        "--calib-tokens",
        "256",
        "--no-eval",
    ];
    let before = files_in(d);
    let failed = ranks2(
        &args,
        d,
        &[("FRUGAL_FAULT_INJECT", "1:quantize-gather:error")],
    );
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        err.contains("rank 1 of 2 failed") && err.contains("fault injected at quantize-gather"),
        "{err}"
    );
    assert_eq!(files_in(d), before, "nothing left behind after an error");

    let panicked = ranks2(
        &args,
        d,
        &[("FRUGAL_FAULT_INJECT", "1:quantize-gather:panic")],
    );
    let err = String::from_utf8_lossy(&panicked.stderr);
    assert!(!panicked.status.success());
    assert_ne!(
        panicked.status.code(),
        Some(124),
        "a panicking rank must not hang the job"
    );
    assert!(err.contains("rank 1 of 2 panicked"), "{err}");
    assert_eq!(files_in(d), before, "nothing left behind after a panic");

    let killed = ranks2(
        &args,
        d,
        &[("FRUGAL_FAULT_INJECT", "1:quantize-gather:kill")],
    );
    let err = String::from_utf8_lossy(&killed.stderr);
    assert!(!killed.status.success());
    assert!(
        err.contains("rank 1") && (err.contains("signal 9") || err.contains("Killed")),
        "mpirun names the killed rank and the signal: {err}"
    );
    assert_eq!(files_in(d), before, "nothing left behind after a kill");

    let again = ranks2(&args, d, &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(d.join("out.gguf").exists());

    let refused = ranks2(
        &[
            "prune",
            m,
            "p.gguf",
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
        ],
        d,
        &[],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("does not run distributed"), "{err}");
    assert!(!d.join("p.gguf").exists());
}
