//! The CNN classifier end to end on real data: trained briefly (AdamW, seeded) on the bundled
//! digits and on Fashion-MNIST, evaluated on held-out images, saved and reloaded. Training proper
//! (teachers, distillation, schedules) belongs to the distillation work; this checks that the
//! forward pass, its gradients through im2col and the evaluation are right.

use candle_core::{Device, Tensor};
use candle_nn::{loss::cross_entropy, AdamW, Optimizer, ParamsAdamW};
use frugal_formats::{assets, digits::embedded_digits, idx::ImageSet};
use frugal_models::cnn::{batch_tensors, im2col3x3, Cnn, CnnConfig};

fn train(config: CnnConfig, set: &ImageSet, train_idx: &[usize], epochs: usize, lr: f64) -> Cnn {
    let dev = Device::Cpu;
    let (model, vars) = Cnn::init(config, 7, &dev).unwrap();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..epochs {
        for b in train_idx.chunks(64) {
            let (x, y) = batch_tensors(set, b, &dev).unwrap();
            let loss = cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            opt.backward_step(&loss).unwrap();
        }
    }
    model
}

#[test]
fn im2col_matches_a_direct_convolution() {
    let dev = Device::Cpu;
    let (b, c, h, w, o) = (2, 3, 5, 4, 2);
    let x: Vec<f32> = (0..b * c * h * w)
        .map(|i| ((i * 37 % 17) as f32) - 8.0)
        .collect();
    let wt: Vec<f32> = (0..o * c * 9)
        .map(|i| ((i * 11 % 7) as f32) - 3.0)
        .collect();
    let xt = Tensor::from_vec(x.clone(), (b, c, h, w), &dev).unwrap();
    let y = im2col3x3(&xt)
        .unwrap()
        .matmul(
            &Tensor::from_vec(wt.clone(), (o, c * 9), &dev)
                .unwrap()
                .t()
                .unwrap(),
        )
        .unwrap();
    let y: Vec<Vec<f32>> = y.to_vec2().unwrap();
    // Reference: the definition of a 3×3 convolution with zero padding 1.
    for bi in 0..b {
        for i in 0..h {
            for j in 0..w {
                for oc in 0..o {
                    let mut s = 0.0;
                    for ci in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yy, xx) =
                                    (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                    s += x[((bi * c + ci) * h + yy as usize) * w + xx as usize]
                                        * wt[oc * c * 9 + ci * 9 + ky * 3 + kx];
                                }
                            }
                        }
                    }
                    assert_eq!(y[(bi * h + i) * w + j][oc], s);
                }
            }
        }
    }
}

#[test]
fn digits_classifier_learns_and_survives_save_and_load() {
    let d = embedded_digits();
    let test_idx = frugal_pipeline_split(&d.labels);
    let train_idx: Vec<usize> = (0..d.len())
        .filter(|i| test_idx.binary_search(i).is_err())
        .collect();
    let model = train(
        CnnConfig {
            in_channels: 1,
            height: 8,
            width: 8,
            conv_channels: vec![16, 32],
            hidden: 64,
            n_classes: 10,
        },
        &d,
        &train_idx,
        8,
        3e-3,
    );
    let r = frugal_eval::classifier::eval_classifier(&model, &d, Some(&test_idx)).unwrap();
    assert!(r.accuracy_pct > 90.0, "{r:?}");
    assert!(r.ci95_pct.0 < r.accuracy_pct && r.accuracy_pct < r.ci95_pct.1);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("digits-cnn.safetensors");
    model.save(&p, &[]).unwrap();
    let back = Cnn::load(&p, &Device::Cpu).unwrap();
    assert_eq!(back.config, model.config);
    let again = frugal_eval::classifier::eval_classifier(&back, &d, Some(&test_idx)).unwrap();
    // The same predictions (the speed reading may differ from run to run).
    assert_eq!(
        (again.n_correct, &again.per_class_accuracy_pct),
        (r.n_correct, &r.per_class_accuracy_pct)
    );
}

/// A stratified 20 % test split (every fifth image of each class).
fn frugal_pipeline_split(labels: &[u8]) -> Vec<usize> {
    let mut seen = [0usize; 10];
    let mut v = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        if seen[l as usize] % 5 == 0 {
            v.push(i);
        }
        seen[l as usize] += 1;
    }
    v
}

#[test]
fn fashion_mnist_accuracy_on_the_full_test_set() {
    let Some(dir) = assets::require_or_skip(assets::fashion_mnist_dir(), "Fashion-MNIST") else {
        return;
    };
    let (train_set, test_set) = frugal_formats::idx::read_fashion_mnist(&dir).unwrap();
    // One pass over 12,000 training images keeps the test short; accuracy is far above chance.
    let idx: Vec<usize> = (0..12_000).collect();
    let model = train(
        CnnConfig {
            in_channels: 1,
            height: 28,
            width: 28,
            conv_channels: vec![8, 16],
            hidden: 64,
            n_classes: 10,
        },
        &train_set,
        &idx,
        1,
        3e-3,
    );
    let r = frugal_eval::classifier::eval_classifier(&model, &test_set, None).unwrap();
    assert_eq!(r.n_images, 10_000);
    assert!(r.accuracy_pct > 70.0, "{r:?}");
    eprintln!(
        "Fashion-MNIST test accuracy {:.2} % (95 % CI {:.2}–{:.2})",
        r.accuracy_pct, r.ci95_pct.0, r.ci95_pct.1
    );
}
