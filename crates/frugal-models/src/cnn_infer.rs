//! Serving a [`Cnn`] classifier: the weights prepared once — F32 ones reordered for the
//! channels-last patches, int8 ones kept as integers and packed for integer products
//! ([`crate::relu_int8`]: every layer's input is nonnegative — pixels in 0..1, then ReLU
//! outputs — so it is rounded to 0..=127 with one scale per image, and each output is an exact
//! 32-bit sum scaled once; VNNI or AVX2 where the CPU has them) — then every query one forward
//! pass on the caller's thread with no allocation after the first. What a model stores is what
//! runs: an int8 file is served with integer products in every layer (the patches built from
//! the rounded bytes), an F32 one in F32 (`gemm` on the caller's thread). An input with a
//! negative value (not an image scaled to 0..1) runs the decoded weights in F32 instead.
//!
//! Measured on the embedded run's models (`bench/classifier-serving.sh`, BENCHMARKS.md
//! "Every layer in integers"). An earlier design rounded activations in groups of 32
//! with a scale each and converted every group's sum to f32; its rounding and conversions cost
//! more than small products saved, so it served layers under 16,384 multiply-adds in F32 and
//! the int8 student (3,592 weights) cost what its F32 source did.

use crate::cnn::{Cnn, CnnConfig};
use crate::kernels::matmul_on_caller;
use crate::relu_int8::{round_nonneg, PackedRelu};

/// One layer with a weight: a convolution (as a product of patches) or a dense layer.
#[derive(Debug, Clone)]
struct Layer {
    /// `[o, k]` in the patch order of the channels-last input (decoded, for int8 weights).
    w: Vec<f32>,
    /// The stored integers, packed, when the weight is int8.
    int8: Option<PackedRelu>,
    bias: Vec<f32>,
    /// Inputs per output (the patch or feature length), and outputs.
    k: usize,
    o: usize,
}

impl Layer {
    /// `w` `[o, k]` already in input order; `int8` the stored integers and scales in the same
    /// order when the weight is int8.
    fn new(w: Vec<f32>, bias: Vec<f32>, k: usize, int8: Option<(Vec<i8>, Vec<f32>)>) -> Layer {
        let o = bias.len();
        Layer {
            int8: int8.map(|(q, s)| PackedRelu::new(&q, &s, &bias, k)),
            w,
            bias,
            k,
            o,
        }
    }

    /// `y[m, o] = x[m, k] · Wᵀ + bias` in F32.
    fn apply_f32(&self, x: &[f32], m: usize, y: &mut Vec<f32>) {
        y.clear();
        y.resize(m * self.o, 0.0);
        matmul_on_caller(
            (m, self.o, self.k),
            y,
            false,
            x,
            (self.k, 1),
            &self.w,
            (1, self.k),
        );
        for row in y.chunks_exact_mut(self.o) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
        }
    }

    /// A dense layer on rows `x` `[m, k]`: integer products when its weight is int8 and its
    /// input nonnegative.
    fn dense(
        &self,
        nonneg: bool,
        x: &[f32],
        q: &mut Vec<u8>,
        scales: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        match self.int8.as_ref().filter(|_| nonneg) {
            Some(p) => {
                round_rows(x, self.k, p.kp, q, scales);
                self.apply_int8(p, q, scales, y);
            }
            None => self.apply_f32(x, x.len() / self.k, y),
        }
    }

    /// `y[m, o]` from rows of rounded inputs `q` `[m, kp]` with a scale per row.
    fn apply_int8(&self, p: &PackedRelu, q: &[u8], scales: &[f32], y: &mut Vec<f32>) {
        y.clear();
        y.resize(scales.len() * self.o, 0.0);
        crate::relu_int8::matmul(q, scales, p, y);
    }
}

/// 3×3 patches with zero padding 1 of channels-last images `input` `[batch, h, w, c]`, rows of
/// `row` values (zero beyond `9c`).
fn patches<T: Copy + Default>(
    input: &[T],
    (h, w, c): (usize, usize, usize),
    row: usize,
    cols: &mut Vec<T>,
) {
    let batch = input.len() / (h * w * c);
    cols.clear();
    cols.resize(batch * h * w * row, T::default());
    for (img, cols) in input
        .chunks_exact(h * w * c)
        .zip(cols.chunks_exact_mut(h * w * row))
    {
        for y in 0..h {
            for xx in 0..w {
                let dst = &mut cols[(y * w + xx) * row..][..9 * c];
                // The three pixels of a patch row are consecutive in the image (channels-last),
                // so each of the three rows is one copy of up to 3c values.
                let (x0, x1) = (xx.saturating_sub(1), (xx + 2).min(w));
                let skip = (x0 + 1 - xx) * c;
                for ky in 0..3 {
                    let sy = y + ky;
                    if sy == 0 || sy > h {
                        continue;
                    }
                    let src = &img[((sy - 1) * w + x0) * c..((sy - 1) * w + x1) * c];
                    dst[ky * 3 * c + skip..][..src.len()].copy_from_slice(src);
                }
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
    /// Rounded inputs of an integer layer, their patches, and a scale per row.
    q: Vec<u8>,
    qcols: Vec<u8>,
    scales: Vec<f32>,
}

/// Rounds rows `x` of `n` nonnegative values each to bytes in `q`, rows of `row` (zero beyond
/// `n`), one scale per row in `scales`.
fn round_rows(x: &[f32], n: usize, row: usize, q: &mut Vec<u8>, scales: &mut Vec<f32>) {
    let rows = x.len() / n;
    q.clear();
    q.resize(rows * row, 0);
    scales.clear();
    scales.extend(
        x.chunks_exact(n)
            .zip(q.chunks_exact_mut(row))
            .map(|(x, q)| round_nonneg(x, &mut q[..n])),
    );
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
        let mut c = cfg.in_channels;
        for (l, &o) in cfg.conv_channels.iter().enumerate() {
            let w = &params[2 * l];
            let k = 9 * c;
            let q = int8(&format!("conv{l}.weight"), w).map(|(q, s)| {
                (
                    q.chunks_exact(k).flat_map(|r| patch_order(r, c)).collect(),
                    s,
                )
            });
            let reordered = w.chunks_exact(k).flat_map(|r| patch_order(r, c)).collect();
            convs.push(Layer::new(reordered, params[2 * l + 1].clone(), k, q));
            c = o;
        }
        let f = 2 * cfg.conv_channels.len();
        let dense = |i: usize, name: &str| {
            let w = &params[f + 2 * i];
            let b = params[f + 2 * i + 1].clone();
            let k = w.len() / b.len();
            Layer::new(w.clone(), b, k, int8(name, w))
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
            .any(|l| l.int8.is_some())
    }

    /// Logits `[batch, classes]` for images `x` `[batch, C, H, W]` (channel-major, as stored).
    pub fn forward(&mut self, x: &[f32], batch: usize) -> &[f32] {
        let cfg = &self.config;
        let b = &mut self.buf;
        let (mut h, mut w, mut c) = (cfg.height, cfg.width, cfg.in_channels);
        assert_eq!(x.len(), batch * c * h * w, "input size");
        // Integer products need nonnegative inputs: pixels in 0..1, then ReLU outputs.
        let nonneg = x.iter().all(|&v| v >= 0.0);
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
            let o = layer.o;
            debug_assert_eq!(layer.k, 9 * c);
            match layer.int8.as_ref().filter(|_| nonneg) {
                Some(p) => {
                    // Each image rounded once, its patches built from the bytes; every patch
                    // row carries its image's scale.
                    let n = h * w * c;
                    round_rows(&input, n, n, &mut b.q, &mut b.scales);
                    patches(&b.q, (h, w, c), p.kp, &mut b.qcols);
                    b.scales.resize(batch * h * w, 0.0);
                    for i in (0..batch).rev() {
                        let s = b.scales[i];
                        b.scales[i * h * w..(i + 1) * h * w].fill(s);
                    }
                    layer.apply_int8(p, &b.qcols, &b.scales, &mut b.y);
                }
                None => {
                    patches(&input, (h, w, c), layer.k, &mut b.cols);
                    layer.apply_f32(&b.cols, batch * h * w, &mut b.y);
                }
            }
            // ReLU and the 2×2 max-pool (channels-last out).
            let (ph, pw) = (h / 2, w / 2);
            b.pooled.clear();
            b.pooled.resize(batch * ph * pw * o, 0.0);
            for (a, p) in
                b.y.chunks_exact(h * w * o)
                    .zip(b.pooled.chunks_exact_mut(ph * pw * o))
            {
                for py in 0..ph {
                    for px in 0..pw {
                        let at =
                            |dy: usize, dx: usize| &a[((2 * py + dy) * w + 2 * px + dx) * o..][..o];
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
        // Flatten in PyTorch's channel-major order.
        let nf = h * w * c;
        debug_assert_eq!(nf, self.fc1.k);
        b.flat.clear();
        b.flat.resize(batch * nf, 0.0);
        for (dst, src) in b.flat.chunks_exact_mut(nf).zip(input.chunks_exact(nf)) {
            for p in 0..h * w {
                for ci in 0..c {
                    dst[ci * h * w + p] = src[p * c + ci];
                }
            }
        }
        b.input = input;
        // fc1, its ReLU, fc2.
        self.fc1
            .dense(nonneg, &b.flat, &mut b.q, &mut b.scales, &mut b.hidden);
        for v in &mut b.hidden {
            *v = v.max(0.0);
        }
        self.fc2
            .dense(nonneg, &b.hidden, &mut b.q, &mut b.scales, &mut b.logits);
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
