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
    /// A ggml block-quantized tensor, multiplied with candle's quantized kernels.
    Quantized(Arc<QTensor>),
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
        use rayon::prelude::*;
        let rows = x.len() / n_in;
        for r in x.chunks_exact(n_in) {
            for (j, &v) in r.iter().enumerate() {
                self.sum_sq[j] += f64::from(v) * f64::from(v);
                self.max_abs[j] = self.max_abs[j].max(v.abs());
            }
        }
        if let Some(g) = &mut self.gram {
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
        })
    }

    /// A layer from a quantized weight `[out, in]`.
    pub fn quantized(
        name: impl Into<String>,
        weight: Arc<QTensor>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let (n_out, n_in) = weight.shape().dims2()?;
        let matmul = QMatMul::from_arc(weight.clone())?;
        Ok(Linear {
            name: name.into(),
            weight: Weight::Quantized(weight),
            matmul: Some(matmul),
            bias,
            n_in,
            n_out,
            recorder: None,
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

    /// The weight as dense f32 `[out, in]`, decoding a quantized one.
    pub fn weight_f32(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Dense(w) => w.clone(),
            Weight::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// Replaces the weight (same shape), e.g. by a quantized or pruned one.
    pub fn set_weight(&mut self, weight: Weight) -> Result<()> {
        let dims = match &weight {
            Weight::Dense(w) => w.dims2()?,
            Weight::Quantized(q) => q.shape().dims2()?,
        };
        if dims != (self.n_out, self.n_in) {
            return Err(candle_core::Error::Msg(format!(
                "{}: new weight {:?} does not match [{}, {}]",
                self.name, dims, self.n_out, self.n_in
            ))
            .into());
        }
        self.matmul = match &weight {
            Weight::Quantized(q) => Some(QMatMul::from_arc(q.clone())?),
            Weight::Dense(_) => None,
        };
        self.weight = weight;
        Ok(())
    }

    /// Starts recording input statistics (replacing any recorded so far).
    pub fn start_recording(&mut self, opts: RecordOptions) {
        self.recorder = Some(Arc::new(Mutex::new(InputStats::new(self.n_in, opts))));
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
            let data: Vec<f32> = rows.flatten_all()?.to_vec1()?;
            rec.lock()
                .unwrap_or_else(|p| p.into_inner())
                .add_rows(&data, self.n_in);
        }
        let y = match (&self.weight, &self.matmul) {
            (_, Some(mm)) => mm.forward(x)?,
            (Weight::Dense(w), None) => x.broadcast_matmul(&w.t()?)?,
            (Weight::Quantized(_), None) => unreachable!("quantized weights always have a matmul"),
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
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
}
