//! Language-model distillation on the real SmolLM2 keeps a checkpoint after every epoch, and a
//! run stopped after its first epoch and resumed ends with exactly the weights and records of an
//! uninterrupted one; a checkpoint made with other settings is refused.

use frugal_compress::distill::Checkpointing;
use frugal_compress::lm_distill::{distill_lm, teacher_top_k, LmDistillOptions};
use frugal_formats::{assets, gguf::GgufFile};
use frugal_models::llama::{Llama, LoadOptions};

#[test]
fn resumed_lm_distillation_is_bit_identical() {
    let Some(p) = assets::require_or_skip(assets::smollm2_gguf(), "SmolLM2") else {
        return;
    };
    let f = GgufFile::open(&p).unwrap();
    let dev = candle_core::Device::Cpu;
    let seqs: Vec<Vec<u32>> = (0..3u32)
        .map(|s| {
            (0..10u32)
                .map(|k| 200 + (s * 811 + k * 97) % 9000)
                .collect()
        })
        .collect();
    let cache = {
        let teacher = Llama::load(&f, LoadOptions::EXACT, &dev).unwrap();
        teacher_top_k(&teacher, seqs, 8, &|_, _| {}).unwrap()
    };
    let opts = LmDistillOptions {
        epochs: 2,
        lr: 1e-4,
        ..Default::default()
    };
    let run = |opts: &LmDistillOptions, ck: Option<&Checkpointing>| {
        let mut student = Llama::load(&f, LoadOptions::EXACT, &dev).unwrap();
        let r = distill_lm(&mut student, "smollm2", &cache, opts, ck, &|_, _, _| {});
        let weights: Vec<Vec<f32>> = student
            .blocks
            .iter()
            .flat_map(|b| [&b.gate, &b.up, &b.down])
            .map(|l| {
                l.weight_f32()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        r.map(|r| (weights, r))
    };
    let (straight, rs) = run(&opts, None).unwrap();
    assert_eq!(rs.len(), 6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.gguf.checkpoint");
    let first = Checkpointing {
        path: &path,
        resume: true,
        stop_after: Some(1),
    };
    let (stopped, r1) = run(&opts, Some(&first)).unwrap();
    assert_eq!(r1.len(), 3, "one epoch of three sequences");
    assert_ne!(stopped, straight, "one epoch cannot equal two");
    assert!(path.exists());
    let rest = Checkpointing {
        stop_after: None,
        ..first.clone()
    };
    let (resumed, r2) = run(&opts, Some(&rest)).unwrap();
    assert_eq!(r2.len(), 6);
    assert!(resumed == straight, "weights differ after resuming");
    for (a, b) in rs.iter().zip(&r2) {
        assert_eq!((a.step, a.loss, a.kl_top_k), (b.step, b.loss, b.kl_top_k));
    }
    let other = LmDistillOptions {
        lr: 2e-4,
        ..opts.clone()
    };
    let e = run(&other, Some(&rest)).unwrap_err();
    assert!(e.to_string().contains("other settings"), "{e}");
    // Another student's checkpoint is told apart before anything is loaded.
    use frugal_compress::lm_distill::checkpoint_matches;
    assert!(checkpoint_matches(&path, &cache, &opts, "smollm2").unwrap());
    assert!(!checkpoint_matches(&path, &cache, &opts, "another student").unwrap());
    assert!(!checkpoint_matches(&path, &cache, &other, "smollm2").unwrap());
}
