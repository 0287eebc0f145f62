//! Serving a [`Cnn`] classifier: the weights prepared once — F32 ones reordered for the
//! channels-last patches, int8 ones kept as integers and packed for integer products
//! ([`crate::int8_kernels`]: activations rounded to int8 per group of 32, exact 32-bit sums,
//! VNNI where the CPU has it) — then every query one forward pass on the caller's thread with
//! no allocation after the first. What a model stores is what runs: an int8 file is served with
//! integer products, an F32 one in F32 (`gemm` on the caller's thread).
//!
//! A layer runs integer products when it has at least 32 inputs per output, a multiple of 32
//! outputs (the packed kernel's panels) and at least [`MIN_INTEGER_MACS`] multiply-adds per
//! image; its rows of patches or features are padded with zeros to a multiple of 32 columns
//! (zeros change no sum). Padding a layer's outputs to 32 instead (the student's conv2, 16
//! outputs) cost 1.10–1.23× its F32 product on an AVX2 machine: not done. Smaller int8 layers multiply their decoded weights in F32: rounding
//! the activations costs more than a small integer product saves. Measured on the embedded
//! run's models (`bench/classifier-serving.sh`, BENCHMARKS.md "Classifiers served as stored"):
//! the teacher's conv1 (295 k multiply-adds) and fc1 (33 k) gain, the student's fc1 (2 k) lost.

use crate::cnn::{Cnn, CnnConfig};
use crate::int8_kernels::{PackedI8, QuantizedActs, GROUP};
use crate::kernels::matmul_on_caller;

/// How a layer multiplies.
#[derive(Debug, Clone)]
enum Product {
    /// `[o, k]` in the patch order of the channels-last input.
    F32(Vec<f32>),
    /// `[o_pad, k_pad]` integers with per-output scales.
    Int8(PackedI8),
}

/// One layer with a weight: a convolution (as a product of patches) or a dense layer.
#[derive(Debug, Clone)]
struct Layer {
    product: Product,
    bias: Vec<f32>,
    /// Inputs per output (the patch or feature length) and the padded length of a row.
    k: usize,
    kp: usize,
    /// Outputs, and the row length of the product's result (`o`, or padded for int8).
    o: usize,
    op: usize,
}

/// Layers with fewer inputs per output multiply their decoded int8 weights in F32.
const MIN_INTEGER_INPUTS: usize = GROUP;
/// … and so do layers with fewer multiply-adds per image.
pub const MIN_INTEGER_MACS: usize = 1 << 14;

fn pad32(n: usize) -> usize {
    n.div_ceil(GROUP) * GROUP
}

impl Layer {
    /// `w` `[o, k]` already in input order; `int8` the stored integers and scales in the same
    /// order when the weight is int8.
    /// `rows` is the rows per image (pixels of a convolution, 1 for a dense layer).
    fn new(
        w: Vec<f32>,
        bias: Vec<f32>,
        k: usize,
        rows: usize,
        int8: Option<(Vec<i8>, Vec<f32>)>,
    ) -> Layer {
        let o = bias.len();
        let kp = pad32(k);
        let integer =
            k >= MIN_INTEGER_INPUTS && o.is_multiple_of(GROUP) && rows * o * k >= MIN_INTEGER_MACS;
        match int8.filter(|_| integer) {
            Some((q, scale)) => {
                let op = pad32(o);
                let mut qp = vec![0i8; op * kp];
                for (dst, src) in qp.chunks_exact_mut(kp).zip(q.chunks_exact(k)) {
                    dst[..k].copy_from_slice(src);
                }
                let mut sp = scale;
                sp.resize(op, 0.0);
                Layer {
                    product: Product::Int8(PackedI8::new(qp, sp, kp)),
                    bias,
                    k,
                    kp,
                    o,
                    op,
                }
            }
            None => Layer {
                product: Product::F32(w),
                bias,
                k,
                kp,
                o,
                op: o,
            },
        }
    }

    /// `y[m, op] = x[m, kp] · Wᵀ` then `+ bias` on the first `o` columns.
    fn apply(&self, x: &[f32], m: usize, acts: &mut QuantizedActs, y: &mut Vec<f32>) {
        y.clear();
        y.resize(m * self.op, 0.0);
        match &self.product {
            Product::F32(w) => matmul_on_caller(
                (m, self.o, self.k),
                y,
                false,
                x,
                (self.kp, 1),
                w,
                (1, self.k),
            ),
            Product::Int8(p) => {
                crate::int8_kernels::quantize_acts_on_caller(&x[..m * self.kp], self.kp, acts);
                crate::int8_kernels::matmul_i8_on_caller(acts, p, y);
            }
        }
        for row in y.chunks_exact_mut(self.op) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
        }
    }
}

/// Scratch buffers, kept between queries.
#[derive(Debug, Clone, Default)]
struct Buffers {
    input: Vec<f32>,
    cols: Vec<f32>,
    y: Vec<f32>,
    pooled: Vec<f32>,
    flat: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    acts: QuantizedActs,
}

/// A classifier ready to serve.
#[derive(Debug, Clone)]
pub struct CnnInference {
    pub config: CnnConfig,
    convs: Vec<Layer>,
    fc1: Layer,
    fc2: Layer,
    buf: Buffers,
}

/// PyTorch's conv weight row (`[c, ky, kx]`) in the patch order of channels-last input
/// (`[ky, kx, c]`).
fn patch_order<T: Copy + Default>(row: &[T], c: usize) -> Vec<T> {
    let mut out = vec![T::default(); row.len()];
    for ci in 0..c {
        for k in 0..9 {
            out[k * c + ci] = row[ci * 9 + k];
        }
    }
    out
}

impl CnnInference {
    /// Prepares `model`: a weight the model still holds as int8 integers
    /// ([`Cnn::stored_int8`], checked to decode to its current F32 values) is served with
    /// integer products, every other in F32.
    pub fn new(model: &Cnn) -> crate::error::Result<CnnInference> {
        let params = model.flat_parameters()?;
        let cfg = &model.config;
        let int8 = |name: &str, w: &[f32]| -> Option<(Vec<i8>, Vec<f32>)> {
            let (q, s) = model.stored_int8(name)?;
            let k = w.len() / s.len();
            // Only integers that still are this weight (a model changed after loading is F32).
            let same = q
                .chunks_exact(k)
                .zip(s)
                .zip(w.chunks_exact(k))
                .all(|((qr, &sc), wr)| {
                    qr.iter().zip(wr).all(|(&qi, &wi)| f32::from(qi) * sc == wi)
                });
            same.then(|| (q.to_vec(), s.to_vec()))
        };
        let mut convs = Vec::new();
        let (mut c, mut pixels) = (cfg.in_channels, cfg.height * cfg.width);
        for (l, &o) in cfg.conv_channels.iter().enumerate() {
            let w = &params[2 * l];
            let k = 9 * c;
            let reorder = |w: &[f32]| -> Vec<f32> {
                w.chunks_exact(k).flat_map(|r| patch_order(r, c)).collect()
            };
            let q = int8(&format!("conv{l}.weight"), w).map(|(q, s)| {
                (
                    q.chunks_exact(k).flat_map(|r| patch_order(r, c)).collect(),
                    s,
                )
            });
            convs.push(Layer::new(
                reorder(w),
                params[2 * l + 1].clone(),
                k,
                pixels,
                q,
            ));
            (c, pixels) = (o, pixels / 4);
        }
        let f = 2 * cfg.conv_channels.len();
        let dense = |i: usize, name: &str| {
            let w = &params[f + 2 * i];
            let b = params[f + 2 * i + 1].clone();
            let k = w.len() / b.len();
            Layer::new(w.clone(), b, k, 1, int8(name, w))
        };
        Ok(CnnInference {
            config: cfg.clone(),
            convs,
            fc1: dense(0, "fc1.weight"),
            fc2: dense(1, "fc2.weight"),
            buf: Buffers::default(),
        })
    }

    /// Whether any product is an integer one.
    pub fn is_integer(&self) -> bool {
        self.convs
            .iter()
            .chain([&self.fc1, &self.fc2])
            .any(|l| matches!(l.product, Product::Int8(_)))
    }

    /// Logits `[batch, classes]` for images `x` `[batch, C, H, W]` (channel-major, as stored).
    pub fn forward(&mut self, x: &[f32], batch: usize) -> &[f32] {
        let cfg = &self.config;
        let b = &mut self.buf;
        let (mut h, mut w, mut c) = (cfg.height, cfg.width, cfg.in_channels);
        assert_eq!(x.len(), batch * c * h * w, "input size");
        // Channel-major → channels-last.
        b.input.clear();
        b.input.resize(x.len(), 0.0);
        let hw = h * w;
        for (dst, src) in b.input.chunks_exact_mut(c * hw).zip(x.chunks_exact(c * hw)) {
            for ci in 0..c {
                for p in 0..hw {
                    dst[p * c + ci] = src[ci * hw + p];
                }
            }
        }
        let mut input = std::mem::take(&mut b.input);
        for layer in &self.convs {
            let (k, kp, o) = (layer.k, layer.kp, layer.o);
            debug_assert_eq!(k, 9 * c);
            // 3×3 patches with zero padding 1, rows of `kp` (zero tail).
            b.cols.clear();
            b.cols.resize(batch * h * w * kp, 0.0);
            for (img, cols) in input
                .chunks_exact(h * w * c)
                .zip(b.cols.chunks_exact_mut(h * w * kp))
            {
                for y in 0..h {
                    for xx in 0..w {
                        let row = &mut cols[(y * w + xx) * kp..][..k];
                        for ky in 0..3 {
                            let sy = y as isize + ky as isize - 1;
                            if sy < 0 || sy >= h as isize {
                                continue;
                            }
                            for kx in 0..3 {
                                let sx = xx as isize + kx as isize - 1;
                                if sx < 0 || sx >= w as isize {
                                    continue;
                                }
                                let src = &img[(sy as usize * w + sx as usize) * c..][..c];
                                row[(ky * 3 + kx) * c..][..c].copy_from_slice(src);
                            }
                        }
                    }
                }
            }
            layer.apply(&b.cols, batch * h * w, &mut b.acts, &mut b.y);
            // ReLU and the 2×2 max-pool (channels-last out).
            let (ph, pw, op) = (h / 2, w / 2, layer.op);
            b.pooled.clear();
            b.pooled.resize(batch * ph * pw * o, 0.0);
            for (a, p) in
                b.y.chunks_exact(h * w * op)
                    .zip(b.pooled.chunks_exact_mut(ph * pw * o))
            {
                for py in 0..ph {
                    for px in 0..pw {
                        let at = |dy: usize, dx: usize| {
                            &a[((2 * py + dy) * w + 2 * px + dx) * op..][..o]
                        };
                        let (v0, v1, v2, v3) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                        let dst = &mut p[(py * pw + px) * o..][..o];
                        for ci in 0..o {
                            dst[ci] = v0[ci].max(v1[ci]).max(v2[ci]).max(v3[ci]).max(0.0);
                        }
                    }
                }
            }
            std::mem::swap(&mut input, &mut b.pooled);
            (h, w, c) = (h / 2, w / 2, o);
        }
        // Flatten in PyTorch's channel-major order, rows padded for fc1.
        let (nf, kp1) = (h * w * c, self.fc1.kp);
        debug_assert_eq!(nf, self.fc1.k);
        b.flat.clear();
        b.flat.resize(batch * kp1, 0.0);
        for (dst, src) in b.flat.chunks_exact_mut(kp1).zip(input.chunks_exact(nf)) {
            for p in 0..h * w {
                for ci in 0..c {
                    dst[ci * h * w + p] = src[p * c + ci];
                }
            }
        }
        b.input = input;
        self.fc1.apply(&b.flat, batch, &mut b.acts, &mut b.y);
        let (n1, op1, kp2) = (self.fc1.o, self.fc1.op, self.fc2.kp);
        b.hidden.clear();
        b.hidden.resize(batch * kp2, 0.0);
        for (dst, src) in b.hidden.chunks_exact_mut(kp2).zip(b.y.chunks_exact(op1)) {
            for (d, s) in dst[..n1].iter_mut().zip(src) {
                *d = s.max(0.0);
            }
        }
        self.fc2.apply(&b.hidden, batch, &mut b.acts, &mut b.y);
        let (n2, op2) = (self.fc2.o, self.fc2.op);
        b.logits.clear();
        for row in b.y.chunks_exact(op2) {
            b.logits.extend_from_slice(&row[..n2]);
        }
        &b.logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The F32 serving path gives the training forward pass's logits (to float rounding), and
    /// the int8 one stays close to the decoded model's.
    #[test]
    fn served_logits_match_the_model() {
        let dev = Device::Cpu;
        let cfg = CnnConfig {
            in_channels: 1,
            height: 8,
            width: 8,
            conv_channels: vec![32, 64],
            hidden: 128,
            n_classes: 10,
        };
        let (model, _) = Cnn::init(cfg, 7, &dev).unwrap();
        let mut rng = frugal_formats::rng::SplitMix64(3);
        let x: Vec<f32> = (0..5 * 64).map(|_| rng.next_f64() as f32).collect();
        let want = model
            .forward(&Tensor::from_vec(x.clone(), (5, 1, 8, 8), &dev).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut f = CnnInference::new(&model).unwrap();
        assert!(!f.is_integer());
        let got = f.forward(&x, 5).to_vec();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // One image at a time gives the same rows (to the products' rounding).
        for i in 0..5 {
            let one = f.forward(&x[i * 64..(i + 1) * 64], 1).to_vec();
            for (a, b) in one.iter().zip(&got[i * 10..(i + 1) * 10]) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        // int8 weights: served as integers, within rounding of the decoded model.
        // Each weight rounded to int8 per output row, the model holding the decoded values and
        // the integers (as `Cnn::load` of an int8 file does).
        let mut int8 = Vec::new();
        let params: std::collections::BTreeMap<String, Tensor> =
            model.parameters().unwrap().into_iter().collect();
        let q = Cnn::from_tensors(model.config.clone(), |name, shape| {
            let t = &params[name];
            if !name.ends_with(".weight") {
                return Ok(t.clone());
            }
            let w = t.flatten_all()?.to_vec1::<f32>()?;
            let k = w.len() / shape[0];
            let (mut qs, mut ss, mut dec) = (Vec::new(), Vec::new(), Vec::new());
            for row in w.chunks_exact(k) {
                let s = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                ss.push(s);
                for v in row {
                    let qi = (v / s).round().clamp(-127.0, 127.0) as i8;
                    qs.push(qi);
                    dec.push(f32::from(qi) * s);
                }
            }
            int8.push((name.to_string(), qs, ss));
            Ok(Tensor::from_vec(dec, shape, &dev)?)
        })
        .unwrap();
        let q = Cnn { int8, ..q };
        let mut i8 = CnnInference::new(&q).unwrap();
        assert!(i8.is_integer());
        let decoded = CnnInference::new(&Cnn {
            int8: Vec::new(),
            ..q.clone()
        })
        .unwrap()
        .forward(&x, 5)
        .to_vec();
        let served = i8.forward(&x, 5).to_vec();
        let scale = decoded.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in served.iter().zip(&decoded) {
            assert!((a - b).abs() <= 0.02 * scale, "{a} vs {b} (scale {scale})");
        }
        assert_ne!(served, decoded, "the integer path ran");
    }
}
