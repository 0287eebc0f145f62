//! Hand-written forward and backward passes of the [`Cnn`](crate::cnn::Cnn) family on flat `f32`
//! buffers, for training. candle's autograd builds a graph of small tensors per step and its
//! convolution gradients go through generic kernels; for these networks a step is a handful of
//! matrix products, so this module does exactly those (with `gemm`, the kernels candle's own
//! matmul uses) plus the cheap per-sample work (patch gathering, ReLU, pooling) spread over the
//! cores with rayon.
//!
//! Layout: activations are kept channels-last (`[B, H, W, C]`), so a 3×3 patch is nine
//! contiguous runs of `C` values; convolution weights are reordered internally to
//! `[out, ky, kx, in]` and their gradients reordered back, so parameters and gradients are in
//! the model's own layout ([`CnnConfig::parameter_shapes`], PyTorch's). The flatten before `fc1`
//! uses PyTorch's channel-major order. Results match [`Cnn::forward`](crate::cnn::Cnn::forward)
//! and candle's autograd to float rounding (tested).

use crate::cnn::CnnConfig;
use crate::kernels::matmul;
use rayon::prelude::*;

/// The shapes of one conv block: input `h×w×c`, output channels `o`.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    h: usize,
    w: usize,
    c: usize,
    o: usize,
}

impl ConvShape {
    fn pixels(&self) -> usize {
        self.h * self.w
    }
    fn patch(&self) -> usize {
        9 * self.c
    }
    fn pooled(&self) -> usize {
        (self.h / 2) * (self.w / 2) * self.o
    }
}

fn conv_shapes(cfg: &CnnConfig) -> Vec<ConvShape> {
    let (mut h, mut w, mut c) = (cfg.height, cfg.width, cfg.in_channels);
    let mut v = Vec::new();
    for &o in &cfg.conv_channels {
        v.push(ConvShape { h, w, c, o });
        (h, w, c) = (h / 2, w / 2, o);
    }
    v
}

/// PyTorch's `[o, c, ky, kx]` conv weight as `[o, ky, kx, c]`.
fn weight_to_internal(w: &[f32], s: ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..s.o {
        for c in 0..s.c {
            for k in 0..9 {
                out[o * s.patch() + k * s.c + c] = w[o * s.patch() + c * 9 + k];
            }
        }
    }
    out
}

/// The inverse of [`weight_to_internal`].
fn weight_from_internal(w: &[f32], s: ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..s.o {
        for c in 0..s.c {
            for k in 0..9 {
                out[o * s.patch() + c * 9 + k] = w[o * s.patch() + k * s.c + c];
            }
        }
    }
    out
}

/// Gathers the 3×3 patches (zero padding 1) of one channels-last image into rows of
/// `[ky, kx, c]`.
fn im2col(x: &[f32], s: ConvShape, cols: &mut [f32]) {
    let (h, w, c) = (s.h as isize, s.w as isize, s.c);
    for y in 0..h {
        for xx in 0..w {
            let row = &mut cols[((y * w + xx) as usize) * s.patch()..][..s.patch()];
            let inside_x = xx >= 1 && xx + 1 < w;
            for ky in 0..3isize {
                let sy = y + ky - 1;
                let dst = &mut row[(ky * 3) as usize * c..][..3 * c];
                if sy < 0 || sy >= h {
                    dst.fill(0.0);
                } else if inside_x {
                    // The three pixels of a patch row are contiguous in a channels-last image.
                    copy_run(dst, &x[((sy * w + xx - 1) as usize) * c..][..3 * c]);
                } else {
                    for kx in 0..3isize {
                        let sx = xx + kx - 1;
                        let d = &mut dst[kx as usize * c..][..c];
                        if sx < 0 || sx >= w {
                            d.fill(0.0);
                        } else {
                            copy_run(d, &x[((sy * w + sx) as usize) * c..][..c]);
                        }
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, with the short runs of few-channel layers (a grey image's single
/// channel: 1 or 3 values) as plain moves instead of a `memcpy` call each.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    match dst.len() {
        1 => dst[0] = src[0],
        3 => {
            let s: &[f32; 3] = src.try_into().expect("same length");
            let d: &mut [f32; 3] = dst.try_into().expect("same length");
            *d = *s;
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Adds the patch gradients of one image back onto its pixels (the adjoint of [`im2col`]).
fn col2im(dcols: &[f32], s: ConvShape, dx: &mut [f32]) {
    dx.fill(0.0);
    let (h, w, c) = (s.h as isize, s.w as isize, s.c);
    for y in 0..h {
        for xx in 0..w {
            let row = &dcols[((y * w + xx) as usize) * s.patch()..][..s.patch()];
            for ky in 0..3isize {
                for kx in 0..3isize {
                    let (sy, sx) = (y + ky - 1, xx + kx - 1);
                    if sy < 0 || sx < 0 || sy >= h || sx >= w {
                        continue;
                    }
                    let src = &row[((ky * 3 + kx) as usize) * c..][..c];
                    let dst = &mut dx[((sy * w + sx) as usize) * c..][..c];
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// Everything a forward pass keeps for the backward one, reused from step to step.
#[derive(Debug, Default)]
pub struct Workspace {
    batch: usize,
    /// Per conv block: its input's patches, its ReLU output, the pooled output and which of
    /// the four pooled pixels won.
    cols: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    pooled: Vec<Vec<f32>>,
    argmax: Vec<Vec<u8>>,
    /// The conv weights in the internal `[out, ky, kx, in]` order, for the backward pass.
    weights: Vec<Vec<f32>>,
    input: Vec<f32>,
    flat: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    /// Backward scratch.
    dz: Vec<f32>,
    dcols: Vec<f32>,
    dpooled: Vec<f32>,
    dflat: Vec<f32>,
    dhidden: Vec<f32>,
}

impl Workspace {
    /// Each conv block's output (after ReLU and the pool) from the last [`forward`],
    /// channels-last `[batch, H/2, W/2, channels]` (sizes from [`block_shapes`]).
    pub fn block_outputs(&self) -> &[Vec<f32>] {
        &self.pooled
    }
}

/// Per conv block, the `(pixels, channels)` of its output, `pixels` = (H/2)·(W/2).
pub fn block_shapes(cfg: &CnnConfig) -> Vec<(usize, usize)> {
    conv_shapes(cfg)
        .iter()
        .map(|s| ((s.h / 2) * (s.w / 2), s.o))
        .collect()
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// Checks that `params` has the model's shapes; a mismatch is a programming error.
fn check_params(cfg: &CnnConfig, params: &[Vec<f32>]) {
    let shapes = cfg.parameter_shapes();
    assert_eq!(params.len(), shapes.len(), "one buffer per parameter");
    for (p, (name, shape)) in params.iter().zip(&shapes) {
        assert_eq!(
            p.len(),
            shape.iter().product::<usize>(),
            "{name}: wrong size"
        );
    }
}

/// Logits `[batch, classes]` for images `x` `[batch, C, H, W]` (channel-major, as stored), with
/// parameters in [`CnnConfig::parameter_shapes`] order. Keeps what [`backward`] needs in `ws`.
pub fn forward<'w>(
    cfg: &CnnConfig,
    params: &[Vec<f32>],
    x: &[f32],
    batch: usize,
    ws: &'w mut Workspace,
) -> &'w [f32] {
    check_params(cfg, params);
    let shapes = conv_shapes(cfg);
    let n_in = cfg.in_channels * cfg.height * cfg.width;
    assert_eq!(x.len(), batch * n_in, "input size");
    ws.batch = batch;
    let nl = shapes.len();
    ws.cols.resize_with(nl, Vec::new);
    ws.act.resize_with(nl, Vec::new);
    ws.pooled.resize_with(nl, Vec::new);
    ws.argmax.resize_with(nl, Vec::new);
    ws.weights.clear();
    // Channel-major → channels-last.
    resize(&mut ws.input, x.len());
    let (c0, hw) = (cfg.in_channels, cfg.height * cfg.width);
    ws.input
        .par_chunks_mut(n_in)
        .zip(x.par_chunks(n_in))
        .for_each(|(dst, src)| {
            for c in 0..c0 {
                for p in 0..hw {
                    dst[p * c0 + c] = src[c * hw + p];
                }
            }
        });
    for (l, &s) in shapes.iter().enumerate() {
        ws.weights.push(weight_to_internal(&params[2 * l], s));
        let w = &ws.weights[l];
        let bias = &params[2 * l + 1];
        let input: &[f32] = if l == 0 { &ws.input } else { &ws.pooled[l - 1] };
        let cols = &mut ws.cols[l];
        resize(cols, batch * s.pixels() * s.patch());
        cols.par_chunks_mut(s.pixels() * s.patch())
            .zip(input.par_chunks(s.pixels() * s.c))
            .for_each(|(cols, x)| im2col(x, s, cols));
        let act = &mut ws.act[l];
        resize(act, batch * s.pixels() * s.o);
        matmul(
            (batch * s.pixels(), s.o, s.patch()),
            act,
            false,
            cols,
            (s.patch(), 1),
            w,
            (1, s.patch()),
        );
        let (ph, pw) = (s.h / 2, s.w / 2);
        let pooled = &mut ws.pooled[l];
        resize(pooled, batch * s.pooled());
        let argmax = &mut ws.argmax[l];
        argmax.resize(batch * s.pooled(), 0);
        // Bias and ReLU, then the 2×2 max-pool (the first maximum wins), in one pass per image.
        let o = s.o;
        pooled
            .par_chunks_mut(s.pooled())
            .zip(argmax.par_chunks_mut(s.pooled()))
            .zip(act.par_chunks_mut(s.pixels() * o))
            .for_each(|((pooled, argmax), a)| {
                for row in a.chunks_exact_mut(o) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v = (*v + b).max(0.0);
                    }
                }
                for y in 0..ph {
                    let top = &a[(2 * y * s.w) * o..][..s.w * o];
                    let bottom = &a[((2 * y + 1) * s.w) * o..][..s.w * o];
                    for x in 0..pw {
                        let (v0, v1) = (&top[2 * x * o..][..o], &top[(2 * x + 1) * o..][..o]);
                        let (v2, v3) = (&bottom[2 * x * o..][..o], &bottom[(2 * x + 1) * o..][..o]);
                        let i = (y * pw + x) * o;
                        let (p, g) = (&mut pooled[i..i + o], &mut argmax[i..i + o]);
                        for c in 0..o {
                            let (mut best, mut arg) = (v0[c], 0u8);
                            if v1[c] > best {
                                (best, arg) = (v1[c], 1);
                            }
                            if v2[c] > best {
                                (best, arg) = (v2[c], 2);
                            }
                            if v3[c] > best {
                                (best, arg) = (v3[c], 3);
                            }
                            p[c] = best;
                            g[c] = arg;
                        }
                    }
                }
            });
    }
    // Flatten in PyTorch's channel-major order.
    let last = *shapes.last().expect("validated: at least one conv block");
    let (ph, pw, pc) = (last.h / 2, last.w / 2, last.o);
    let nf = cfg.flat_features();
    resize(&mut ws.flat, batch * nf);
    ws.flat
        .par_chunks_mut(nf)
        .zip(ws.pooled[nl - 1].par_chunks(nf))
        .for_each(|(dst, src)| {
            for p in 0..ph * pw {
                for c in 0..pc {
                    dst[c * ph * pw + p] = src[p * pc + c];
                }
            }
        });
    let fc1 = 2 * nl;
    resize(&mut ws.hidden, batch * cfg.hidden);
    linear(
        &ws.flat,
        batch,
        &params[fc1],
        &params[fc1 + 1],
        &mut ws.hidden,
    );
    ws.hidden.iter_mut().for_each(|v| *v = v.max(0.0));
    resize(&mut ws.logits, batch * cfg.n_classes);
    linear(
        &ws.hidden,
        batch,
        &params[fc1 + 2],
        &params[fc1 + 3],
        &mut ws.logits,
    );
    &ws.logits
}

/// `y[b×out] = x[b×in] · wᵀ + bias`, `w` `[out, in]`.
fn linear(x: &[f32], batch: usize, w: &[f32], bias: &[f32], y: &mut [f32]) {
    let (n_out, n_in) = (bias.len(), w.len() / bias.len());
    matmul((batch, n_out, n_in), y, false, x, (n_in, 1), w, (1, n_in));
    for row in y.chunks_mut(n_out) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Column sums of `m` `[rows, n]` into `out` `[n]`.
fn column_sums(m: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks(n) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Gradients of the loss with respect to every parameter (model layout, overwritten in
/// `grads`), given `dlogits` = ∂loss/∂logits of the batch the last [`forward`] on `ws` saw.
/// `dblocks` adds gradients of loss terms on the conv blocks' outputs
/// ([`Workspace::block_outputs`], same layout): empty, or one buffer per block, each empty
/// (no term) or of that block's output size.
pub fn backward(
    cfg: &CnnConfig,
    params: &[Vec<f32>],
    ws: &mut Workspace,
    dlogits: &[f32],
    dblocks: &[Vec<f32>],
    grads: &mut [Vec<f32>],
) {
    check_params(cfg, params);
    check_params(cfg, grads);
    let batch = ws.batch;
    assert_eq!(dlogits.len(), batch * cfg.n_classes, "dlogits size");
    let shapes = conv_shapes(cfg);
    let nl = shapes.len();
    assert!(
        dblocks.is_empty() || dblocks.len() == nl,
        "one dblocks buffer per block"
    );
    let fc1 = 2 * nl;
    let (hid, ncls, nf) = (cfg.hidden, cfg.n_classes, cfg.flat_features());
    // fc2
    matmul(
        (ncls, hid, batch),
        &mut grads[fc1 + 2],
        false,
        dlogits,
        (1, ncls),
        &ws.hidden,
        (hid, 1),
    );
    column_sums(dlogits, ncls, &mut grads[fc1 + 3]);
    resize(&mut ws.dhidden, batch * hid);
    matmul(
        (batch, hid, ncls),
        &mut ws.dhidden,
        false,
        dlogits,
        (ncls, 1),
        &params[fc1 + 2],
        (hid, 1),
    );
    for (d, h) in ws.dhidden.iter_mut().zip(&ws.hidden) {
        if *h <= 0.0 {
            *d = 0.0;
        }
    }
    // fc1
    matmul(
        (hid, nf, batch),
        &mut grads[fc1],
        false,
        &ws.dhidden,
        (1, hid),
        &ws.flat,
        (nf, 1),
    );
    column_sums(&ws.dhidden, hid, &mut grads[fc1 + 1]);
    resize(&mut ws.dflat, batch * nf);
    matmul(
        (batch, nf, hid),
        &mut ws.dflat,
        false,
        &ws.dhidden,
        (hid, 1),
        &params[fc1],
        (nf, 1),
    );
    // Unflatten into channels-last.
    let last = shapes[nl - 1];
    let (pp, pc) = ((last.h / 2) * (last.w / 2), last.o);
    resize(&mut ws.dpooled, batch * nf);
    ws.dpooled
        .par_chunks_mut(nf)
        .zip(ws.dflat.par_chunks(nf))
        .for_each(|(dst, src)| {
            for p in 0..pp {
                for c in 0..pc {
                    dst[p * pc + c] = src[c * pp + p];
                }
            }
        });
    for l in (0..nl).rev() {
        let s = shapes[l];
        let (ph, pw) = (s.h / 2, s.w / 2);
        // `dpooled` holds ∂loss/∂(this block's output): add the block's own loss terms.
        if let Some(extra) = dblocks.get(l).filter(|d| !d.is_empty()) {
            assert_eq!(extra.len(), batch * s.pooled(), "dblocks[{l}] size");
            ws.dpooled.iter_mut().zip(extra).for_each(|(d, e)| *d += e);
        }
        // Through the pool and the ReLU.
        resize(&mut ws.dz, batch * s.pixels() * s.o);
        ws.dz
            .par_chunks_mut(s.pixels() * s.o)
            .zip(ws.dpooled.par_chunks(s.pooled()))
            .zip(ws.argmax[l].par_chunks(s.pooled()))
            .zip(ws.act[l].par_chunks(s.pixels() * s.o))
            .for_each(|(((dz, dp), arg), a)| {
                dz.fill(0.0);
                let o = s.o;
                for y in 0..ph {
                    for x in 0..pw {
                        let i = (y * pw + x) * o;
                        let (dp, arg) = (&dp[i..i + o], &arg[i..i + o]);
                        // The four pooled pixels' offsets; the winner takes the gradient where
                        // its ReLU was active.
                        let base = [
                            (2 * y * s.w + 2 * x) * o,
                            (2 * y * s.w + 2 * x + 1) * o,
                            ((2 * y + 1) * s.w + 2 * x) * o,
                            ((2 * y + 1) * s.w + 2 * x + 1) * o,
                        ];
                        for c in 0..o {
                            let j = base[usize::from(arg[c])] + c;
                            if a[j] > 0.0 {
                                dz[j] = dp[c];
                            }
                        }
                    }
                }
            });
        let rows = batch * s.pixels();
        let mut dw = vec![0f32; s.o * s.patch()];
        matmul(
            (s.o, s.patch(), rows),
            &mut dw,
            false,
            &ws.dz,
            (1, s.o),
            &ws.cols[l],
            (s.patch(), 1),
        );
        grads[2 * l] = weight_from_internal(&dw, s);
        column_sums(&ws.dz, s.o, &mut grads[2 * l + 1]);
        if l == 0 {
            break;
        }
        resize(&mut ws.dcols, rows * s.patch());
        matmul(
            (rows, s.patch(), s.o),
            &mut ws.dcols,
            false,
            &ws.dz,
            (s.o, 1),
            &ws.weights[l],
            (s.patch(), 1),
        );
        resize(&mut ws.dpooled, batch * s.pixels() * s.c);
        ws.dpooled
            .par_chunks_mut(s.pixels() * s.c)
            .zip(ws.dcols.par_chunks(s.pixels() * s.patch()))
            .for_each(|(dx, dcols)| col2im(dcols, s, dx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnn::Cnn;
    use candle_core::{Device, Tensor};

    /// [`Cnn::forward`] with its 2×2 max-pool written as a maximum over a reshaped tensor.
    /// candle 0.11's `max_pool2d` backward scales the gradient of a unique maximum by ¼ (it
    /// multiplies by the share of maxima in the window instead of dividing by their count), so
    /// the reference gradients come from this form, whose `max` backward is exact.
    /// Also returns each block's output (`[B, C, H/2, W/2]`).
    fn reference_logits(model: &Cnn, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut x = x.clone();
        let mut blocks = Vec::new();
        for conv in &model.convs {
            let (b, _, h, w) = x.dims4().unwrap();
            let y = conv
                .forward(&crate::cnn::im2col3x3(&x).unwrap())
                .unwrap()
                .reshape((b, h, w, conv.n_out()))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap()
                .relu()
                .unwrap();
            let c = conv.n_out();
            x = y
                .narrow(2, 0, h / 2 * 2)
                .unwrap()
                .narrow(3, 0, w / 2 * 2)
                .unwrap()
                .reshape((b, c, h / 2, 2, w / 2, 2))
                .unwrap()
                .max(5)
                .unwrap()
                .max(3)
                .unwrap();
            blocks.push(x.clone());
        }
        let h = model
            .fc1
            .forward(&x.flatten_from(1).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        (model.fc2.forward(&h).unwrap(), blocks)
    }

    /// The hand-written passes against candle: the same logits as [`Cnn::forward`] and the
    /// same gradients as candle's autograd, on real digits through a two-block network.
    #[test]
    fn forward_and_gradients_match_candle_autograd() {
        let set = frugal_formats::digits::embedded_digits();
        let cfg = CnnConfig {
            conv_channels: vec![4, 6],
            hidden: 12,
            ..CnnConfig::classic(8, 8, 10)
        };
        let (model, vars) = Cnn::init(cfg.clone(), 3, &Device::Cpu).unwrap();
        let idx: Vec<usize> = (0..37).collect();
        let (x, _) = crate::cnn::batch_tensors(&set, &idx, &Device::Cpu).unwrap();
        // Faint deterministic noise on the blank background, so that no pooling window holds
        // tied maxima (where the two passes may pick different, equally valid subgradients).
        let noise: Vec<f32> = (0..x.elem_count())
            .map(|i| ((i * 2654435761) % 1000) as f32 * 1e-5)
            .collect();
        let noise = Tensor::from_vec(noise, x.dims(), &Device::Cpu).unwrap();
        let x = (x + noise).unwrap();
        let logits = model.forward(&x).unwrap();
        let (reference, blocks) = reference_logits(&model, &x);
        // A loss with a non-trivial gradient: Σ logits ⊙ r for fixed r, plus Σ block ⊙ r_l on
        // each block's output (the `dblocks` terms), r_l given channels-last to `backward`.
        let r: Vec<f32> = (0..37 * 10)
            .map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0)
            .collect();
        let rt = Tensor::from_vec(r.clone(), (37, 10), &Device::Cpu).unwrap();
        let mut loss = (&reference * &rt).unwrap().sum_all().unwrap();
        let mut dblocks = Vec::new();
        for (l, b) in blocks.iter().enumerate() {
            let rb: Vec<f32> = (0..b.elem_count())
                .map(|i| ((i * 31 + l * 7) % 11) as f32 / 5.0 - 1.0)
                .collect();
            let rb = Tensor::from_vec(rb, b.dims(), &Device::Cpu).unwrap();
            loss = (loss + (b * &rb).unwrap().sum_all().unwrap()).unwrap();
            let last = rb.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            dblocks.push(last.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        let g = loss.backward().unwrap();

        let params: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let mut ws = Workspace::default();
        let got = forward(&cfg, &params, &xs, 37, &mut ws).to_vec();
        let want: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "logit {a} vs candle {b}");
        }
        let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        for (b, mine) in blocks.iter().zip(ws.block_outputs()) {
            let theirs = b.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap();
            for (a, b) in mine.iter().zip(theirs.to_vec1::<f32>().unwrap()) {
                assert!((a - b).abs() < 1e-4, "block output {a} vs candle {b}");
            }
        }
        backward(&cfg, &params, &mut ws, &r, &dblocks, &mut grads);
        for ((var, mine), (name, _)) in vars.iter().zip(&grads).zip(cfg.parameter_shapes()) {
            let theirs: Vec<f32> = g
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = theirs.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (a, b) in mine.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() <= 1e-4 * scale,
                    "{name}: gradient {a} vs candle {b}"
                );
            }
        }
    }

    #[test]
    fn conv_weight_reordering_round_trips() {
        let s = ConvShape {
            h: 4,
            w: 4,
            c: 3,
            o: 2,
        };
        let w: Vec<f32> = (0..2 * 27).map(|i| i as f32).collect();
        assert_eq!(weight_from_internal(&weight_to_internal(&w, s), s), w);
        assert_ne!(weight_to_internal(&w, s), w);
    }
}
