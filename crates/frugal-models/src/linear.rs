//! The linear-layer seam. Every linear layer of every model goes through [`Linear`], which can
//! (a) record statistics of its inputs — per-column sum of x², max |x|, and optionally the Gram
//! matrix XᵀX — for calibration (imatrix, GPTQ, AWQ, Wanda, SparseGPT), and (b) have its weight
//! replaced by a quantized or sparse one. Compression methods touch models only through here.

use crate::error::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor, D};
use std::sync::{Arc, Mutex};

/// The weight of a linear layer, `[out, in]`.
#[derive(Debug, Clone)]
pub enum Weight {
    /// Dense f32 (sparse weights are dense tensors with zeros).
    Dense(Tensor),
    /// A ggml tensor as stored: block-quantized ones multiplied with Frugal's 8-bit kernels
    /// ([`crate::qmatmul`]) or candle's, whichever is the faster for the type, F16 and BF16
    /// ones with [`crate::gemm`] straight from their 16-bit values (no f32 copy).
    Quantized(Arc<QTensor>),
    /// A ggml tensor read in place from the model file's mapping (or an anonymous one):
    /// block-quantized weights multiplied by Frugal's 8-bit kernels, F16/BF16 ones by
    /// [`crate::gemm`], each unpacking a cache-sized chunk of rows at a time — the process never
    /// holds a copy of the weight.
    Mapped(MappedWeight),
}

/// A stored weight `[n_out, n_in]` read in place (see [`Weight::Mapped`]).
#[derive(Debug, Clone)]
pub struct MappedWeight {
    ty: frugal_formats::gguf::GgmlType,
    bytes: frugal_formats::gguf::MappedBytes,
    product: MappedProduct,
    n_out: usize,
    n_in: usize,
}

/// The product with a weight read in place inside a differentiable pass (training, where the
/// layer is frozen but the gradient must flow to its input): the weight decoded to f32 for the
/// product, and again for the input's gradient `∂y · W`, never kept — the arithmetic of a
/// decoded weight (f32 activations), one weight in F32 at a time.
struct InPlaceProduct(MappedWeight);

impl candle_core::CustomOp1 for InPlaceProduct {
    fn name(&self) -> &'static str {
        "frugal-in-place-product"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (n_in, n_out) = (self.0.n_in, self.0.n_out);
        let candle_core::CpuStorage::F32(all) = s else {
            candle_core::bail!("the in-place product takes f32 inputs");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("the in-place product takes a contiguous input");
        };
        let x = &all[a..b];
        if l.dims().last() != Some(&n_in) {
            candle_core::bail!("input {:?} for a weight of {n_in} columns", l.dims());
        }
        let w = self
            .0
            .decode()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut y = vec![0f32; x.len() / n_in * n_out];
        crate::gemm::matmul_t(x, n_in, crate::gemm::Rows::F32(&w), &mut y);
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked") = n_out;
        Ok((candle_core::CpuStorage::F32(y), dims.into()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = self
            .0
            .decode()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let w = Tensor::from_vec(w, (self.0.n_out, self.0.n_in), grad.device())?;
        Ok(Some(grad.broadcast_matmul(&w)?))
    }
}

/// Which kernel multiplies a mapped weight.
#[derive(Debug, Clone, Copy)]
enum MappedProduct {
    Blocks(crate::qmatmul::BlockType),
    /// [`crate::gemm`] on the stored floats (F32, F16, BF16).
    Floats(candle_core::quantized::GgmlDType),
}

impl MappedProduct {
    fn of(ty: frugal_formats::gguf::GgmlType) -> Option<MappedProduct> {
        use candle_core::quantized::GgmlDType as D;
        if let Some(b) = crate::qmatmul::BlockType::of_ggml(ty) {
            return Some(MappedProduct::Blocks(b));
        }
        match crate::gguf_load::candle_dtype(ty)? {
            d @ (D::F32 | D::F16 | D::BF16) => Some(MappedProduct::Floats(d)),
            _ => None,
        }
    }
}

/// Whether a weight stored as `ty` is multiplied in place ([`Weight::Mapped`]) when a model
/// is loaded with its weights as stored (every type but the 1- to 3-bit IQ and the ternary
/// ones).
pub fn reads_in_place(ty: frugal_formats::gguf::GgmlType) -> bool {
    MappedProduct::of(ty).is_some()
}

impl MappedWeight {
    /// `bytes` as a `[n_out, n_in]` weight of type `ty`; `None` for a type no kernel of
    /// Frugal's multiplies in place (the IQ and ternary types), or bytes not of that shape.
    pub fn new(
        ty: frugal_formats::gguf::GgmlType,
        bytes: frugal_formats::gguf::MappedBytes,
        n_out: usize,
        n_in: usize,
    ) -> Option<MappedWeight> {
        let product = MappedProduct::of(ty)?;
        let info = ty.info()?;
        let bs = info.block_size as usize;
        let expected = n_in
            .is_multiple_of(bs)
            .then(|| n_out * (n_in / bs) * info.type_size as usize);
        (expected == Some(bytes.len())).then_some(MappedWeight {
            ty,
            bytes,
            product,
            n_out,
            n_in,
        })
    }

    pub fn ggml_type(&self) -> frugal_formats::gguf::GgmlType {
        self.ty
    }

    /// The weight decoded to f32, row-major `[n_out, n_in]` (ggml's decoding).
    pub fn decode(&self) -> Result<Vec<f32>> {
        if crate::iq::decodes(self.ty) {
            let mut v = vec![0f32; self.n_out * self.n_in];
            crate::iq::decode_row(self.ty, &self.bytes, &mut v)
                .expect("whole blocks, checked by MappedWeight::new");
            return Ok(v);
        }
        let cpu = candle_core::Device::Cpu;
        let dtype = crate::gguf_load::candle_dtype(self.ty).expect("checked by MappedWeight::new");
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            &self.bytes,
            vec![self.n_out, self.n_in],
            &cpu,
        )?;
        Ok(q.dequantize(&cpu)?.flatten_all()?.to_vec1()?)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// How a layer's input is rounded before the dot products, to reproduce ggml's arithmetic: ggml
/// converts activations to its `vec_dot_type` (8-bit blocks for quantized weights, f16 for f16
/// weights) and multiplies those. Rounding the f32 input that way and then using an f32 product
/// with the decoded weights gives the same values up to summation order — except for the `_1`
/// types (Q4_1, Q5_1), whose `Q8_1` activations also carry an f16-rounded block sum for the
/// weights' offset term; that rounding is not reproduced (an error far below the 8-bit rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActRounding {
    /// No rounding (f32 weights, or exact evaluation).
    #[default]
    None,
    /// To f16 (ggml's F16 weights).
    F16,
    /// To bf16 (ggml's BF16 weights).
    Bf16,
    /// `Q8_0` blocks of 32: d = f16(max|x| / 127), q = round(x / d) (legacy block types).
    Q8_0,
    /// `Q8_K` blocks of 256: d = max_signed / −127 in f32, q = nearest(x / d) (k-quants).
    Q8K,
}

impl ActRounding {
    /// ggml's `vec_dot_type` for a weight type.
    pub fn for_weight(t: frugal_formats::gguf::GgmlType) -> ActRounding {
        use frugal_formats::gguf::GgmlType as G;
        match t {
            G::F16 => ActRounding::F16,
            G::BF16 => ActRounding::Bf16,
            G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q8_1 | G::IQ4_NL | G::MXFP4 => {
                ActRounding::Q8_0
            }
            G::Q2_K
            | G::Q3_K
            | G::Q4_K
            | G::Q5_K
            | G::Q6_K
            | G::IQ2_XXS
            | G::IQ2_XS
            | G::IQ3_XXS
            | G::IQ1_S
            | G::IQ3_S
            | G::IQ2_S
            | G::IQ4_XS
            | G::IQ1_M
            | G::TQ1_0
            | G::TQ2_0 => ActRounding::Q8K,
            _ => ActRounding::None,
        }
    }

    /// Rounds every row of `x` (last dimension), in parallel over rows.
    pub fn round(self, x: &Tensor) -> Result<Tensor> {
        if self == ActRounding::None {
            return Ok(x.clone());
        }
        use rayon::prelude::*;
        let n = x.dim(D::Minus1)?;
        let mut v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        v.par_chunks_mut(n).for_each(|r| self.round_row(r));
        Ok(Tensor::from_vec(v, x.shape().clone(), x.device())?)
    }

    /// Rounds one row in place (the plain reference; rows are independent).
    pub fn round_row(self, row: &mut [f32]) {
        match self {
            ActRounding::None => {}
            ActRounding::F16 => row
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            ActRounding::Bf16 => row
                .iter_mut()
                .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
            ActRounding::Q8_0 => round_q8_0(row),
            ActRounding::Q8K => round_q8k(row),
        }
    }
}

/// `roundf`: to nearest, halves away from zero, exactly (the fraction `v − trunc(v)` is exact),
/// without the library call the compiler emits for `f32::round` (which kept these loops
/// scalar: 8 % of an evaluation's time).
#[inline(always)]
pub(crate) fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

crate::avx512_dispatch! {
    /// [`ActRounding::Q8_0`] on one row.
    fn round_q8_0(row: &mut [f32]) {
        for b in row.chunks_mut(32) {
            let d = crate::kernels::max_abs(b) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = half::f16::from_f32(d).to_f32();
            b.iter_mut().for_each(|v| *v = round_half_away(*v * id) * d16);
        }
    }
}

crate::avx512_dispatch! {
    /// [`ActRounding::Q8K`] on one row.
    fn round_q8k(row: &mut [f32]) {
        for b in row.chunks_mut(256) {
            let max = crate::kernels::signed_max_abs(b);
            if max == 0.0 {
                b.iter_mut().for_each(|v| *v = 0.0);
                continue;
            }
            let iscale = -127.0 / max;
            let d = 1.0 / iscale;
            b.iter_mut()
                .for_each(|v| *v = (iscale * *v).round_ties_even().min(127.0) * d);
        }
    }
}

/// What to record about a layer's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// Also accumulate the Gram matrix XᵀX (`in × in`, f64).
    pub gram: bool,
}

/// Statistics of the rows `x` (each of length `in`) a layer has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct InputStats {
    pub n_rows: u64,
    /// Σ x² per input column (the imatrix is this divided by `n_rows`).
    pub sum_sq: Vec<f64>,
    /// max |x| per input column.
    pub max_abs: Vec<f32>,
    /// XᵀX, row-major `in × in`, when asked for.
    pub gram: Option<Vec<f64>>,
}

impl InputStats {
    fn new(n_in: usize, opts: RecordOptions) -> Self {
        InputStats {
            n_rows: 0,
            sum_sq: vec![0.0; n_in],
            max_abs: vec![0.0; n_in],
            gram: opts.gram.then(|| vec![0.0; n_in * n_in]),
        }
    }

    /// Adds rows (`x` is `rows × n_in`, row-major). The plain loop is the reference; the Gram
    /// update is split over output rows with rayon.
    pub fn add_rows(&mut self, x: &[f32], n_in: usize) {
        self.add_rows_with_gram(x, n_in, None)
    }

    /// [`InputStats::add_rows`] with the rows' XᵀX already computed (by a GEMM, in f32), which is
    /// added in f64 instead of the reference loop.
    pub fn add_rows_with_gram(&mut self, x: &[f32], n_in: usize, xtx: Option<&[f32]>) {
        use rayon::prelude::*;
        let rows = x.len() / n_in;
        for r in x.chunks_exact(n_in) {
            for (j, &v) in r.iter().enumerate() {
                self.sum_sq[j] += f64::from(v) * f64::from(v);
                self.max_abs[j] = self.max_abs[j].max(v.abs());
            }
        }
        if let (Some(g), Some(xtx)) = (&mut self.gram, xtx) {
            g.iter_mut().zip(xtx).for_each(|(a, &b)| *a += f64::from(b));
        } else if let Some(g) = &mut self.gram {
            g.par_chunks_mut(n_in).enumerate().for_each(|(i, gi)| {
                for r in x.chunks_exact(n_in) {
                    let xi = f64::from(r[i]);
                    if xi != 0.0 {
                        for (gij, &xj) in gi.iter_mut().zip(r) {
                            *gij += xi * f64::from(xj);
                        }
                    }
                }
            });
        }
        self.n_rows += rows as u64;
    }

    /// Merges statistics gathered elsewhere (another process or shard), in a fixed order.
    pub fn merge(&mut self, other: &InputStats) {
        self.n_rows += other.n_rows;
        self.sum_sq
            .iter_mut()
            .zip(&other.sum_sq)
            .for_each(|(a, b)| *a += b);
        self.max_abs
            .iter_mut()
            .zip(&other.max_abs)
            .for_each(|(a, b)| *a = a.max(*b));
        if let (Some(a), Some(b)) = (&mut self.gram, &other.gram) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
}

/// A linear layer `y = x Wᵀ (+ b)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    weight: Weight,
    matmul: Option<QMatMul>,
    bias: Option<Tensor>,
    n_in: usize,
    n_out: usize,
    recorder: Option<Arc<Mutex<InputStats>>>,
    act: ActRounding,
}

impl Linear {
    /// A dense layer from an f32 weight `[out, in]`.
    pub fn dense(name: impl Into<String>, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (n_out, n_in) = weight.dims2()?;
        Ok(Linear {
            name: name.into(),
            weight: Weight::Dense(weight),
            matmul: None,
            bias,
            n_in,
            n_out,
            recorder: None,
            act: ActRounding::None,
        })
    }

    /// A layer whose stored weight is read in place ([`Weight::Mapped`]).
    pub fn mapped(name: impl Into<String>, weight: MappedWeight, bias: Option<Tensor>) -> Self {
        Linear {
            name: name.into(),
            n_in: weight.n_in,
            n_out: weight.n_out,
            weight: Weight::Mapped(weight),
            matmul: None,
            bias,
            recorder: None,
            act: ActRounding::None,
        }
    }

    /// A layer from a quantized (or F16/BF16) weight `[out, in]`.
    pub fn quantized(
        name: impl Into<String>,
        weight: Arc<QTensor>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let (n_out, n_in) = weight.shape().dims2()?;
        let matmul = candle_matmul(&weight)?;
        Ok(Linear {
            name: name.into(),
            weight: Weight::Quantized(weight),
            matmul,
            bias,
            n_in,
            n_out,
            recorder: None,
            act: ActRounding::None,
        })
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }
    pub fn n_out(&self) -> usize {
        self.n_out
    }
    pub fn weight(&self) -> &Weight {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight as dense f32 `[out, in]`, decoding a quantized one.
    pub fn weight_f32(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Dense(w) => w.clone(),
            Weight::Quantized(q) => q.dequantize(&q.device())?,
            Weight::Mapped(m) => {
                Tensor::from_vec(m.decode()?, (m.n_out, m.n_in), &candle_core::Device::Cpu)?
            }
        })
    }

    /// Replaces the weight (same shape), e.g. by a quantized or pruned one.
    /// Replaces the bias (`[n_out]` f32) of a layer that has one.
    pub fn set_bias(&mut self, bias: Tensor) -> Result<()> {
        if self.bias.is_none() || bias.dims() != [self.n_out] {
            return Err(candle_core::Error::Msg(format!(
                "{}: a bias {:?} for a layer of {} outputs{}",
                self.name,
                bias.dims(),
                self.n_out,
                if self.bias.is_none() {
                    " without one"
                } else {
                    ""
                }
            ))
            .into());
        }
        self.bias = Some(bias);
        Ok(())
    }

    pub fn set_weight(&mut self, weight: Weight) -> Result<()> {
        let dims = match &weight {
            Weight::Dense(w) => w.dims2()?,
            Weight::Quantized(q) => q.shape().dims2()?,
            Weight::Mapped(m) => (m.n_out, m.n_in),
        };
        if dims != (self.n_out, self.n_in) {
            return Err(candle_core::Error::Msg(format!(
                "{}: new weight {:?} does not match [{}, {}]",
                self.name, dims, self.n_out, self.n_in
            ))
            .into());
        }
        self.matmul = match &weight {
            Weight::Quantized(q) => candle_matmul(q)?,
            Weight::Dense(_) | Weight::Mapped(_) => None,
        };
        self.weight = weight;
        Ok(())
    }

    /// Sets how inputs are rounded before the product (see [`ActRounding`]).
    pub fn set_act_rounding(&mut self, act: ActRounding) {
        self.act = act;
    }

    /// Starts recording input statistics (replacing any recorded so far).
    pub fn start_recording(&mut self, opts: RecordOptions) {
        self.recorder = Some(Arc::new(Mutex::new(InputStats::new(self.n_in, opts))));
    }

    /// Whether inputs are being recorded (see [`Linear::start_recording`]).
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Stops recording and returns what was recorded.
    pub fn take_stats(&mut self) -> Option<InputStats> {
        let r = self.recorder.take()?;
        Some(match Arc::try_unwrap(r) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => shared.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    /// `x` is `[..., in]`; returns `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(rec) = &self.recorder {
            let rows = x.flatten_to(D::Minus2)?.to_dtype(DType::F32)?;
            let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
            let xtx: Option<Vec<f32>> = if r.gram.is_some() {
                Some(rows.t()?.matmul(&rows)?.flatten_all()?.to_vec1()?)
            } else {
                None
            };
            let data: Vec<f32> = rows.flatten_all()?.to_vec1()?;
            r.add_rows_with_gram(&data, self.n_in, xtx.as_deref());
        }
        let rounded = self.act.round(x)?;
        self.product(&rounded)
    }

    /// [`Linear::forward`] of several layers that read the same input `x` (a block's q, k and
    /// v, or its gate and up). Where all are stored blocks read in place whose types round the
    /// input alike, one grouped product ([`crate::qmatmul::matmul_group`]: the input rounded
    /// once, one parallel pass over all their rows); where all round the input alike before a
    /// product of their own, it is rounded once; else each layer's own `forward`. Input
    /// statistics are recorded as `forward` records them.
    pub fn forward_group(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let Some(first) = layers.first() else {
            return Ok(Vec::new());
        };
        let plain = layers
            .iter()
            .all(|l| l.recorder.is_none() && l.act == first.act && l.n_in == first.n_in);
        if !plain || x.track_op() {
            return layers.iter().map(|l| l.forward(x)).collect();
        }
        let blocks: Option<Vec<crate::qmatmul::Part<'_>>> = layers
            .iter()
            .map(|l| match &l.weight {
                Weight::Mapped(MappedWeight {
                    product: MappedProduct::Blocks(ty),
                    bytes,
                    n_out,
                    ..
                }) => Some(crate::qmatmul::Part {
                    ty: *ty,
                    w: bytes,
                    n_out: *n_out,
                }),
                _ => None,
            })
            .collect();
        let rounded = first.act.round(x)?;
        match blocks.filter(|p| {
            layers.len() > 1 && crate::qmatmul::groups(&p.iter().map(|p| p.ty).collect::<Vec<_>>())
        }) {
            Some(parts) => {
                let mut ys = first
                    .own_outputs(&rounded, |xs| {
                        Ok(crate::qmatmul::matmul_group(
                            crate::qmatmul::Kernel::detected(),
                            &parts,
                            first.n_in,
                            xs,
                        ))
                    })?
                    .into_iter();
                layers
                    .iter()
                    .map(|l| {
                        let (dims, y) = ys.next().expect("one output a part");
                        l.with_bias(Tensor::from_vec(y, l.out_dims(&dims), x.device())?)
                    })
                    .collect()
            }
            None => layers.iter().map(|l| l.product(&rounded)).collect(),
        }
    }

    /// How this layer rounds its input.
    pub fn act_rounding(&self) -> ActRounding {
        self.act
    }

    fn product(&self, x: &Tensor) -> Result<Tensor> {
        let y = match (&self.weight, &self.matmul) {
            // In a differentiable pass: decoded for the product, with the input's gradient.
            (Weight::Mapped(m), _) if x.track_op() => x
                .to_dtype(DType::F32)?
                .contiguous()?
                .apply_op1(InPlaceProduct(m.clone()))?,
            // A candle copy in a differentiable pass: its products have no gradient, so the
            // weight is decoded for this one.
            (Weight::Quantized(q), _) if x.track_op() => {
                let w = q.dequantize(x.device())?;
                x.to_dtype(DType::F32)?.broadcast_matmul(&w.t()?)?
            }
            // Stored weights read in place: Frugal's kernels for every type.
            (Weight::Mapped(m), _) => self.own_product(x, |xs| match m.product {
                MappedProduct::Blocks(ty) => Ok(crate::qmatmul::matmul(
                    ty, &m.bytes, self.n_out, self.n_in, xs,
                )),
                MappedProduct::Floats(dtype) => {
                    let mut y = vec![0f32; xs.len() / self.n_in * self.n_out];
                    with_float_rows(dtype, &m.bytes, |w| {
                        crate::gemm::matmul_t(xs, self.n_in, w, &mut y)
                    })?;
                    Ok(y)
                }
            })?,
            // 16-bit weights: Frugal's products, from the stored values.
            (Weight::Quantized(q), None) => self.own_product(x, |xs| {
                let mut y = vec![0f32; xs.len() / self.n_in * self.n_out];
                let data = q.data()?;
                with_float_rows(q.dtype(), &data, |w| {
                    crate::gemm::matmul_t(xs, self.n_in, w, &mut y)
                })?;
                Ok(y)
            })?,
            // Block-quantized weights: Frugal's 8-bit kernels where they are the faster for this
            // type and this many input rows ([`crate::qmatmul::BlockType::ours_for`]), else
            // candle's. A QTensor's rows are whole blocks.
            (Weight::Quantized(q), Some(mm)) => match crate::qmatmul::BlockType::of(q.dtype())
                .filter(|t| t.ours_for(x.elem_count() / self.n_in.max(1)))
            {
                Some(ty) => self.own_product(x, |xs| {
                    Ok(crate::qmatmul::matmul(
                        ty,
                        &q.data()?,
                        self.n_out,
                        self.n_in,
                        xs,
                    ))
                })?,
                _ => mm.forward(x)?,
            },
            (_, Some(mm)) => mm.forward(x)?,
            // One GEMM over all rows: `[..., in]` flattened to `[rows, in]`.
            (Weight::Dense(w), None) if x.rank() > 2 => {
                let mut dims = x.dims().to_vec();
                let flat = x.flatten_to(D::Minus2)?.matmul(&w.t()?)?;
                *dims.last_mut().expect("rank > 2") = self.n_out;
                flat.reshape(dims)?
            }
            (Weight::Dense(w), None) => x.broadcast_matmul(&w.t()?)?,
        };
        self.with_bias(y)
    }

    /// A product by one of Frugal's kernels: `x`'s width checked, its rows flattened to f32
    /// for `f` (which returns `[rows, n_out]`), the result shaped as `x` with `n_out` columns.
    fn own_product(
        &self,
        x: &Tensor,
        f: impl FnOnce(&[f32]) -> Result<Vec<f32>>,
    ) -> Result<Tensor> {
        let (dims, y) = self
            .own_outputs(x, |xs| Ok(vec![f(xs)?]))?
            .pop()
            .expect("one output");
        Ok(Tensor::from_vec(y, self.out_dims(&dims), x.device())?)
    }

    /// `f` on `x`'s values (`[..., n_in]`, checked), with `x`'s dimensions beside each output.
    fn own_outputs(
        &self,
        x: &Tensor,
        f: impl FnOnce(&[f32]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let cols = x.dim(D::Minus1)?;
        if cols != self.n_in {
            return Err(candle_core::Error::Msg(format!(
                "{}: input of {cols} columns for a weight of {}",
                self.name, self.n_in
            ))
            .into());
        }
        let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(f(&xs)?
            .into_iter()
            .map(|y| (x.dims().to_vec(), y))
            .collect())
    }

    /// An input's dimensions with the last one this layer's outputs.
    fn out_dims(&self, input: &[usize]) -> Vec<usize> {
        let mut dims = input.to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.n_out;
        }
        dims
    }

    fn with_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// candle's product for a stored weight: none for F16 and BF16 ones (multiplied by
/// [`crate::gemm`]; candle's would first copy the whole weight into a tensor).
fn candle_matmul(q: &Arc<QTensor>) -> Result<Option<QMatMul>> {
    use candle_core::quantized::GgmlDType as D;
    Ok(match q.dtype() {
        D::F16 | D::BF16 => None,
        _ => Some(QMatMul::from_arc(q.clone())?),
    })
}

/// Calls `f` with the rows stored in `bytes` (little-endian F32, F16 or BF16).
fn with_float_rows(
    dtype: candle_core::quantized::GgmlDType,
    bytes: &[u8],
    f: impl FnOnce(crate::gemm::Rows<'_>),
) -> Result<()> {
    use candle_core::quantized::GgmlDType as D;
    use half::{bf16, f16};
    match dtype {
        // SAFETY: f16 and bf16 are two bytes, every bit pattern a value.
        D::F16 => f(crate::gemm::Rows::F16(&unsafe {
            halves(bytes, f16::from_bits)
        })),
        D::BF16 => f(crate::gemm::Rows::Bf16(&unsafe {
            halves(bytes, bf16::from_bits)
        })),
        D::F32 => {
            let aligned = bytes.as_ptr().align_offset(4) == 0 && cfg!(target_endian = "little");
            let copy: Vec<f32>;
            let rows: &[f32] = if aligned {
                // SAFETY: aligned, little-endian, every bit pattern an f32.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) }
            } else {
                copy = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                &copy
            };
            f(crate::gemm::Rows::F32(rows))
        }
        other => {
            return Err(
                candle_core::Error::Msg(format!("{other:?} is not a float weight type")).into(),
            )
        }
    }
    Ok(())
}

/// The little-endian 16-bit values in `bytes`: borrowed where aligned (candle keeps them in
/// vectors of 16-bit values), else copied.
///
/// # Safety
/// `T` is two bytes and every bit pattern is a `T`.
unsafe fn halves<T: Copy>(bytes: &[u8], from_bits: fn(u16) -> T) -> std::borrow::Cow<'_, [T]> {
    let n = bytes.len() / 2;
    let p = bytes.as_ptr();
    if cfg!(target_endian = "little") && p.align_offset(std::mem::align_of::<T>()) == 0 {
        std::borrow::Cow::Borrowed(std::slice::from_raw_parts(p as *const T, n))
    } else {
        std::borrow::Cow::Owned(
            bytes
                .chunks_exact(2)
                .map(|b| from_bits(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
        )
    }
}

/// Seconds one product of a `[n_out, n_in]` weight stored as `ty` with one input row takes
/// through the kernels a model loaded with stored weights runs for that type (quantized ones
/// for quantized types, [`crate::gemm`] from the 16-bit values for F16 and BF16):
/// the median over 5 timed rounds of `min_calls` products each (at least one), after a
/// warm-up product with every copy.
///
/// A served decoder streams every weight from memory once per token, so the products cycle
/// through copies of the weight that together exceed `working_set` bytes (set it above the
/// last-level cache): a weight that stays cached would time as if memory were free, favouring
/// wide types. The weights are deterministic (fixed pseudo-random values); only the type and
/// shape matter. `None` for a type neither candle nor Frugal's kernels multiply at this shape
/// (the IQ4 types only through Frugal's: `None` under `FRUGAL_CANDLE_QMATMUL=1`).
pub fn matvec_seconds(
    ty: frugal_formats::gguf::GgmlType,
    n_out: usize,
    n_in: usize,
    min_calls: usize,
    working_set: usize,
) -> Result<Option<f64>> {
    use frugal_formats::gguf::GgmlType as G;
    let dtype = crate::gguf_load::candle_dtype(ty);
    // The IQ4 types, which candle cannot hold: Frugal's kernels only.
    let own = crate::qmatmul::BlockType::of_ggml(ty)
        .filter(|b| b.candle().is_none() && !crate::qmatmul::candle_forced());
    let block = match (dtype, own) {
        (Some(d), _) => d.block_size(),
        (None, Some(b)) => b.block_values(),
        (None, None) => return Ok(None),
    };
    if !n_in.is_multiple_of(block) {
        return Ok(None);
    }
    let dev = candle_core::Device::Cpu;
    let mut rng = frugal_formats::rng::SplitMix64(0x6b65_726e_656c);
    let x: Vec<f32> = (0..n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let x = Tensor::from_vec(x, (1, n_in), &dev)?;
    let plain = ty == G::F32;
    let w: Vec<f32> = (0..n_out * n_in)
        .map(|_| rng.next_f64() as f32 - 0.5)
        .collect();
    let bytes: Vec<u8> = match (dtype, own) {
        (Some(d), _) => {
            let w = Tensor::from_slice(&w, (n_out, n_in), &dev)?;
            QTensor::quantize(&w, d)?.data()?.into_owned()
        }
        (None, Some(b)) => crate::qmatmul::sample_blocks(b, &w, n_in),
        (None, None) => unreachable!("returned above"),
    };
    // Bytes one copy keeps in memory as the model holds it.
    let held = if plain { 4 * n_out * n_in } else { bytes.len() };
    let copies = working_set.div_ceil(held.max(1)).clamp(1, 512);
    let w = Tensor::from_vec(w, (n_out, n_in), &dev)?;
    let mut layers = Vec::with_capacity(copies);
    for _ in 0..copies {
        // Each copy in memory of its own, held as a served model holds it: read in place
        // (candle's copy when `FRUGAL_CANDLE_QMATMUL=1` asks for its kernels).
        let mapped = (!crate::qmatmul::candle_forced())
            .then(|| -> Result<Option<MappedWeight>> {
                let b = frugal_formats::gguf::MappedBytes::from_bytes(&bytes)
                    .map_err(|e| candle_core::Error::Msg(format!("mapping a copy: {e}")))?;
                Ok(MappedWeight::new(ty, b, n_out, n_in))
            })
            .transpose()?
            .flatten();
        layers.push(match mapped {
            Some(m) => Linear::mapped("timed", m, None),
            None if plain => Linear::dense("timed", w.copy()?, None)?,
            None => {
                let Some(d) = dtype else { return Ok(None) };
                Linear::quantized(
                    "timed",
                    Arc::new(candle_core::quantized::ggml_file::qtensor_from_ggml(
                        d,
                        &bytes,
                        w.dims().to_vec(),
                        &dev,
                    )?),
                    None,
                )?
            }
        });
    }
    let calls = min_calls.max(1);
    for l in &layers {
        std::hint::black_box(l.forward(&x)?);
    }
    // The rotation goes on across rounds, so every product reads the copy last read `copies`
    // products before it (all the copies' bytes ago) whatever the round's length: a round
    // need not pass over every copy (that made small shapes' rounds 512 products long).
    let mut next = 0usize;
    let mut rounds = Vec::with_capacity(5);
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        for _ in 0..calls {
            std::hint::black_box(layers[next % copies].forward(&x)?);
            next += 1;
        }
        rounds.push(t0.elapsed().as_secs_f64() / calls as f64);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(Some(rounds[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn records_sum_of_squares_max_and_gram() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &dev).unwrap();
        let mut l = Linear::dense("t", w, None).unwrap();
        l.start_recording(RecordOptions { gram: true });
        let x = Tensor::new(&[[1f32, -2.0, 3.0], [4.0, 5.0, -6.0]], &dev).unwrap();
        let y = l.forward(&x).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, -2.0], vec![4.0, 5.0]]
        );
        let s = l.take_stats().unwrap();
        assert_eq!(s.n_rows, 2);
        assert_eq!(s.sum_sq, vec![17.0, 29.0, 45.0]);
        assert_eq!(s.max_abs, vec![4.0, 5.0, 6.0]);
        // Reference: XᵀX computed by hand.
        assert_eq!(
            s.gram.unwrap(),
            vec![17.0, 18.0, -21.0, 18.0, 29.0, -36.0, -21.0, -36.0, 45.0]
        );
        assert!(l.take_stats().is_none(), "recording stopped");
    }

    #[test]
    fn gemm_gram_in_forward_matches_the_reference_loop() {
        let dev = Device::Cpu;
        let (rows, n_in) = (37, 24);
        let x: Vec<f32> = (0..rows * n_in)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.1)
            .collect();
        let mut l = Linear::dense(
            "t",
            Tensor::zeros((5, n_in), DType::F32, &dev).unwrap(),
            None,
        )
        .unwrap();
        l.start_recording(RecordOptions { gram: true });
        l.forward(&Tensor::from_vec(x.clone(), (rows, n_in), &dev).unwrap())
            .unwrap();
        let fast = l.take_stats().unwrap().gram.unwrap();
        let mut reference = InputStats::new(n_in, RecordOptions { gram: true });
        reference.add_rows(&x, n_in);
        for (a, b) in fast.iter().zip(reference.gram.unwrap()) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn merge_equals_recording_everything_at_once() {
        let opts = RecordOptions { gram: true };
        let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut all = InputStats::new(4, opts);
        all.add_rows(&x, 4);
        let mut a = InputStats::new(4, opts);
        a.add_rows(&x[..8], 4);
        let mut b = InputStats::new(4, opts);
        b.add_rows(&x[8..], 4);
        a.merge(&b);
        assert_eq!(a.n_rows, all.n_rows);
        for (p, q) in a.gram.unwrap().iter().zip(all.gram.unwrap()) {
            assert!((p - q).abs() < 1e-12);
        }
    }

    /// A weight read in place ([`Weight::Mapped`]) gives the products of Frugal's kernels on
    /// the same bytes (bit for bit: the same code), decodes to candle's (ggml's) values exactly,
    /// and carries the bias, for every block type and F32/F16/BF16; a type no kernel reads in
    /// place, or bytes of another shape, is not taken.
    #[test]
    fn mapped_weights_multiply_with_frugals_kernels_in_place() {
        use crate::qmatmul::BlockType;
        use candle_core::quantized::GgmlDType as D;
        use frugal_formats::gguf::{GgmlType as G, MappedBytes};
        let dev = Device::Cpu;
        let mut rng = frugal_formats::rng::SplitMix64(25);
        let (n_out, n_in) = (19, 512);
        let w: Vec<f32> = (0..n_out * n_in)
            .map(|_| rng.next_f64() as f32 - 0.5)
            .collect();
        let w = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        let bias = Tensor::from_vec(
            (0..n_out).map(|i| i as f32).collect::<Vec<_>>(),
            n_out,
            &dev,
        )
        .unwrap();
        let types = [
            (G::Q4_0, D::Q4_0),
            (G::Q4_1, D::Q4_1),
            (G::Q5_0, D::Q5_0),
            (G::Q5_1, D::Q5_1),
            (G::Q8_0, D::Q8_0),
            (G::Q2_K, D::Q2K),
            (G::Q3_K, D::Q3K),
            (G::Q4_K, D::Q4K),
            (G::Q5_K, D::Q5K),
            (G::Q6_K, D::Q6K),
            (G::F16, D::F16),
            (G::BF16, D::BF16),
            (G::F32, D::F32),
        ];
        for m in [1usize, 9] {
            let xs: Vec<f32> = (0..m * n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let x = Tensor::from_vec(xs.clone(), (m, n_in), &dev).unwrap();
            for (g, d) in types {
                let q = QTensor::quantize(&w, d).unwrap();
                let bytes = MappedBytes::from_bytes(&q.data().unwrap()).unwrap();
                let mw = MappedWeight::new(g, bytes.clone(), n_out, n_in).unwrap();
                let lin = Linear::mapped("t", mw, Some(bias.clone()));
                assert_eq!((lin.n_out(), lin.n_in()), (n_out, n_in));
                let got: Vec<f32> = lin
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let plain: Vec<f32> = match BlockType::of(d) {
                    Some(ty) => crate::qmatmul::matmul(ty, &bytes, n_out, n_in, &xs),
                    None => {
                        let mut y = vec![0f32; m * n_out];
                        with_float_rows(d, &bytes, |r| crate::gemm::matmul_t(&xs, n_in, r, &mut y))
                            .unwrap();
                        y
                    }
                };
                for (r, (a, b)) in got.chunks(n_out).zip(plain.chunks(n_out)).enumerate() {
                    for (o, (p, q)) in a.iter().zip(b).enumerate() {
                        assert_eq!(*p, q + o as f32, "{g:?} m={m} row {r} col {o}");
                    }
                }
                assert_eq!(
                    lin.weight_f32()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                    q.dequantize(&dev)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                    "{g:?} decodes as ggml"
                );
                // One row short: not this shape.
                let short =
                    MappedBytes::from_bytes(&bytes[..bytes.len() - bytes.len() / n_out]).unwrap();
                assert!(MappedWeight::new(g, short, n_out, n_in).is_none(), "{g:?}");
            }
        }
        // The lattice types have no kernel: decoded where they are loaded.
        assert!(MappedWeight::new(
            G::IQ3_S,
            MappedBytes::from_bytes(&[0u8; 110]).unwrap(),
            1,
            256
        )
        .is_none());
        assert!(MappedWeight::new(
            G::IQ4_NL,
            MappedBytes::from_bytes(&[0u8; 18]).unwrap(),
            1,
            32
        )
        .is_some());
    }

    /// Layers that read one input give, taken together, each layer's own output bit for bit:
    /// stored blocks whose rounding one pass serves (grouped), a mix that no one rounding serves
    /// (each its own), decoded layers that round their input alike (rounded once), and biases.
    #[test]
    fn layers_taken_together_give_each_layer_s_own_output() {
        use candle_core::quantized::GgmlDType as D;
        use frugal_formats::gguf::{GgmlType as G, MappedBytes};
        let dev = Device::Cpu;
        let mut rng = frugal_formats::rng::SplitMix64(31);
        let n_in = 512;
        let mut layer = |g: G, d: D, n_out: usize, dense: bool| -> Linear {
            let w: Vec<f32> = (0..n_out * n_in)
                .map(|_| rng.next_f64() as f32 - 0.5)
                .collect();
            let w = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
            let bias = Tensor::arange(0f32, n_out as f32, &dev).unwrap();
            let q = QTensor::quantize(&w, d).unwrap();
            if dense {
                let mut l = Linear::dense("d", q.dequantize(&dev).unwrap(), Some(bias)).unwrap();
                l.set_act_rounding(ActRounding::for_weight(g));
                return l;
            }
            let bytes = MappedBytes::from_bytes(&q.data().unwrap()).unwrap();
            Linear::mapped(
                "m",
                MappedWeight::new(g, bytes, n_out, n_in).unwrap(),
                Some(bias),
            )
        };
        let groups = [
            vec![
                layer(G::Q4_1, D::Q4_1, 40, false),
                layer(G::Q4_0, D::Q4_0, 8, false),
                layer(G::Q8_0, D::Q8_0, 8, false),
            ],
            vec![
                layer(G::Q4_K, D::Q4K, 24, false),
                layer(G::Q4_0, D::Q4_0, 24, false),
            ],
            vec![
                layer(G::Q4_K, D::Q4K, 16, true),
                layer(G::Q6_K, D::Q6K, 16, true),
            ],
        ];
        for m in [1usize, 33] {
            let xs: Vec<f32> = (0..m * n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let x = Tensor::from_vec(xs, (m, n_in), &dev).unwrap();
            for layers in &groups {
                let refs: Vec<&Linear> = layers.iter().collect();
                let together = Linear::forward_group(&refs, &x).unwrap();
                assert_eq!(together.len(), layers.len());
                for (l, y) in layers.iter().zip(together) {
                    let own = l.forward(&x).unwrap();
                    assert_eq!(y.dims(), own.dims());
                    let (a, b): (Vec<f32>, Vec<f32>) = (
                        y.flatten_all().unwrap().to_vec1().unwrap(),
                        own.flatten_all().unwrap().to_vec1().unwrap(),
                    );
                    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
                }
            }
        }
    }

    /// In a differentiable pass a weight read in place gives the decoded weight's product and
    /// passes the gradient to its input as the decoded weight does (to summation order).
    #[test]
    fn mapped_weights_pass_gradients_to_their_input() {
        use candle_core::quantized::GgmlDType as D;
        use frugal_formats::gguf::{GgmlType as G, MappedBytes};
        let dev = Device::Cpu;
        let mut rng = frugal_formats::rng::SplitMix64(41);
        let (n_out, n_in, t) = (24, 256, 5);
        let w: Vec<f32> = (0..n_out * n_in)
            .map(|_| rng.next_f64() as f32 - 0.5)
            .collect();
        let w = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        for (g, d) in [(G::Q4_K, D::Q4K), (G::F16, D::F16), (G::Q8_0, D::Q8_0)] {
            let q = QTensor::quantize(&w, d).unwrap();
            let bytes = MappedBytes::from_bytes(&q.data().unwrap()).unwrap();
            let mapped =
                Linear::mapped("m", MappedWeight::new(g, bytes, n_out, n_in).unwrap(), None);
            let dense = Linear::dense("d", q.dequantize(&dev).unwrap(), None).unwrap();
            let xs: Vec<f32> = (0..t * n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let run = |l: &Linear| {
                let x = candle_core::Var::from_vec(xs.clone(), (1, t, n_in), &dev).unwrap();
                let y = l.forward(x.as_tensor()).unwrap();
                let loss = y.sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                let gx: Vec<f32> = grads
                    .get(x.as_tensor())
                    .expect("a gradient")
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), gx)
            };
            // candle's copy too (its own products have no gradient).
            let copy =
                Linear::quantized("c", Arc::new(QTensor::quantize(&w, d).unwrap()), None).unwrap();
            let (yd, gd) = run(&dense);
            for l in [&mapped, &copy] {
                let (y, gx) = run(l);
                for (a, b) in y.iter().zip(&yd).chain(gx.iter().zip(&gd)) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{g:?} {}: {a} vs {b}",
                        l.name
                    );
                }
            }
        }
    }

    /// F16 and BF16 weights kept 16-bit multiply as their decoded f32 copies do (to summation
    /// order), hold no f32 copy, and refuse an input of the wrong width.
    #[test]
    fn sixteen_bit_weights_multiply_from_their_stored_values() {
        use candle_core::quantized::GgmlDType;
        let dev = candle_core::Device::Cpu;
        let mut rng = frugal_formats::rng::SplitMix64(11);
        let (n_out, n_in) = (37, 200);
        let w: Vec<f32> = (0..n_out * n_in)
            .map(|_| rng.next_f64() as f32 - 0.5)
            .collect();
        let w = Tensor::from_vec(w, (n_out, n_in), &dev).unwrap();
        for m in [1usize, 7] {
            let x: Vec<f32> = (0..m * n_in).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let x = Tensor::from_vec(x, (m, n_in), &dev).unwrap();
            for dt in [GgmlDType::F16, GgmlDType::BF16] {
                let q = Arc::new(QTensor::quantize(&w, dt).unwrap());
                let lin = Linear::quantized("t", q.clone(), None).unwrap();
                assert!(lin.matmul.is_none(), "{dt:?}: no candle copy");
                let dense = Linear::dense("d", q.dequantize(&dev).unwrap(), None).unwrap();
                let out = |l: &Linear| -> Vec<f32> {
                    let y = l.forward(&x).unwrap();
                    y.flatten_all().unwrap().to_vec1().unwrap()
                };
                let (a, b) = (out(&lin), out(&dense));
                assert_eq!(a.len(), m * n_out);
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() < 1e-4, "{dt:?}: {p} vs {q}");
                }
                assert!(lin.forward(&x.narrow(1, 0, n_in - 8).unwrap()).is_err());
            }
        }
    }

    /// 16-bit values read from unaligned bytes (copied) equal the aligned ones (borrowed).
    #[test]
    fn half_values_read_alike_aligned_or_not() {
        use std::borrow::Cow;
        let vals: Vec<half::f16> = (0..9)
            .map(|i| half::f16::from_f32(i as f32 - 3.5))
            .collect();
        let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut buf = vec![0u8; le.len() + 1];
        // An odd address: one byte in from an even one.
        let start = usize::from(buf.as_ptr().align_offset(2) == 0);
        buf[start..start + le.len()].copy_from_slice(&le);
        let odd = &buf[start..start + le.len()];
        // SAFETY: f16 is two bytes, every bit pattern a value.
        let (copied, borrowed) = unsafe {
            (
                halves(odd, half::f16::from_bits),
                halves(&le, half::f16::from_bits),
            )
        };
        assert!(matches!(copied, Cow::Owned(_)));
        assert!(
            matches!(borrowed, Cow::Borrowed(_)),
            "a vector's bytes are aligned"
        );
        assert_eq!(&copied[..], &vals[..]);
        assert_eq!(&borrowed[..], &vals[..]);
    }

    /// The branch-free rounding is `f32::round` on halves, near-halves, large and signed values.
    #[test]
    fn rounding_half_away_is_roundf() {
        let mut rng = frugal_formats::rng::SplitMix64(3);
        let special = [
            0.5f32,
            -0.5,
            1.5,
            -2.5,
            0.49999997,
            -0.49999997,
            126.5,
            8388607.5,
            1e9,
            -0.0,
        ];
        let random = (0..100_000).map(|_| (rng.next_f64() as f32 - 0.5) * 300.0);
        for v in special.into_iter().chain(random) {
            assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
    }

    #[test]
    fn activation_rounding_matches_ggml_block_rules() {
        // Q8_0: max |x| = 2.54 → d = 0.02, so every value becomes a multiple of f16(0.02).
        let mut row: Vec<f32> = (0..32)
            .map(|i| if i == 5 { -2.54 } else { i as f32 * 0.0137 })
            .collect();
        ActRounding::Q8_0.round_row(&mut row);
        let d16 = half::f16::from_f32(0.02).to_f32();
        assert!((row[5] + 127.0 * d16).abs() < 1e-6);
        assert!(row
            .iter()
            .all(|v| ((v / d16) - (v / d16).round()).abs() < 1e-3));
        // Q8_K: the signed maximum maps to −127 · d exactly.
        let mut row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.31).sin()).collect();
        let max = row
            .iter()
            .copied()
            .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        ActRounding::Q8K.round_row(&mut row);
        let orig: Vec<f32> = (0..256).map(|i| (i as f32 * 0.31).sin()).collect();
        let d = max / -127.0;
        for (r, o) in row.iter().zip(&orig) {
            assert!((r - o).abs() <= d.abs() * 0.5 + 1e-6);
        }
        let mut z = vec![0f32; 32];
        ActRounding::Q8_0.round_row(&mut z);
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn quantized_weight_matches_dense_within_q8_error() {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..64 * 32)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w = Tensor::from_vec(w, (32, 64), &dev).unwrap();
        let x = Tensor::from_vec(
            (0..3 * 64)
                .map(|i| (i as f32 * 0.1).cos())
                .collect::<Vec<_>>(),
            (3, 64),
            &dev,
        )
        .unwrap();
        let dense = Linear::dense("d", w.clone(), None)
            .unwrap()
            .forward(&x)
            .unwrap();
        let q = QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0).unwrap();
        let quant = Linear::quantized("q", Arc::new(q), None)
            .unwrap()
            .forward(&x)
            .unwrap();
        let err = (dense - quant)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 0.05, "max error {err}");
    }

    #[test]
    fn kernel_timing_covers_the_types_a_shape_allows() {
        use frugal_formats::gguf::GgmlType as G;
        for ty in [G::F32, G::F16, G::Q8_0, G::Q4_0] {
            let t = matvec_seconds(ty, 64, 96, 4, 1 << 16).unwrap().unwrap();
            assert!(t > 0.0 && t < 1.0, "{ty:?}: {t}");
        }
        // k-quants and IQ4_XS need rows in whole blocks of 256; the IQ4 types go through
        // Frugal's kernels (candle has none for them).
        assert!(matvec_seconds(G::Q4_K, 64, 96, 4, 0).unwrap().is_none());
        assert!(matvec_seconds(G::Q4_K, 8, 256, 4, 0).unwrap().is_some());
        assert!(matvec_seconds(G::IQ4_XS, 64, 96, 4, 0).unwrap().is_none());
        assert!(matvec_seconds(G::IQ4_XS, 8, 256, 4, 0).unwrap().is_some());
        assert!(matvec_seconds(G::IQ4_NL, 64, 96, 4, 0).unwrap().is_some());
        // Types with no kernel at all.
        assert!(matvec_seconds(G::IQ2_XS, 8, 256, 4, 0).unwrap().is_none());
    }
}
