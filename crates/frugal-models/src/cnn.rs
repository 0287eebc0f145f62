//! Convolutional image classifiers described by a small config: `n` blocks of 3×3 convolution
//! (padding 1) → ReLU → 2×2 max-pool, then a hidden linear layer with ReLU and an output layer —
//! the classic network of LeCun et al. (1998), as used for MNIST-style data. Convolutions run as
//! im2col followed by a [`Linear`], so they go through the same seam as every linear layer:
//! calibration statistics of conv inputs are statistics of their 3×3 patches, and a conv weight
//! `[out, in·9]` is replaced like any other (it matches PyTorch's `[out, in, 3, 3]` flattened).

use crate::error::{Error, Result};
use crate::linear::Linear;
use candle_core::{DType, Device, Tensor, Var};
use frugal_formats::safetensors::{Dtype, SafetensorsFile};
use std::collections::BTreeMap;
use std::path::Path;

/// The safetensors metadata key holding a CNN's [`CnnConfig`] (JSON).
pub const CONFIG_KEY: &str = "frugal.cnn_config";

/// The architecture.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct CnnConfig {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    /// Output channels of each conv block.
    pub conv_channels: Vec<usize>,
    pub hidden: usize,
    pub n_classes: usize,
}

impl CnnConfig {
    /// The classic two-conv network: conv(1→32)-pool-conv(32→64)-pool-fc(…→128)-fc(128→classes).
    pub fn classic(height: usize, width: usize, n_classes: usize) -> Self {
        CnnConfig {
            in_channels: 1,
            height,
            width,
            conv_channels: vec![32, 64],
            hidden: 128,
            n_classes,
        }
    }

    /// Checks that every size is positive and the parameter count fits in memory arithmetic.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            self.in_channels,
            self.height,
            self.width,
            self.hidden,
            self.n_classes,
        ];
        if sizes.contains(&0) || self.conv_channels.contains(&0) {
            return Err(format!("every size must be positive: {self:?}"));
        }
        let (h, w) = self.out_hw();
        if h == 0 || w == 0 {
            return Err(format!(
                "{} conv blocks shrink {}×{} to nothing",
                self.conv_channels.len(),
                self.height,
                self.width
            ));
        }
        let mut c = self.in_channels;
        for &o in &self.conv_channels {
            c.checked_mul(9)
                .and_then(|x| x.checked_mul(o))
                .ok_or("conv weights too large")?;
            c = o;
        }
        h.checked_mul(w)
            .and_then(|x| x.checked_mul(c))
            .and_then(|x| x.checked_mul(self.hidden))
            .ok_or("fc1 too large")?;
        Ok(())
    }

    /// Spatial size after the conv blocks.
    pub fn out_hw(&self) -> (usize, usize) {
        self.conv_channels
            .iter()
            .fold((self.height, self.width), |(h, w), _| (h / 2, w / 2))
    }

    pub fn flat_features(&self) -> usize {
        let (h, w) = self.out_hw();
        h * w
            * self
                .conv_channels
                .last()
                .copied()
                .unwrap_or(self.in_channels)
    }

    /// Parameter names and shapes, in a fixed order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        let mut c = self.in_channels;
        for (i, &o) in self.conv_channels.iter().enumerate() {
            v.push((format!("conv{i}.weight"), vec![o, c * 9]));
            v.push((format!("conv{i}.bias"), vec![o]));
            c = o;
        }
        v.push(("fc1.weight".into(), vec![self.hidden, self.flat_features()]));
        v.push(("fc1.bias".into(), vec![self.hidden]));
        v.push(("fc2.weight".into(), vec![self.n_classes, self.hidden]));
        v.push(("fc2.bias".into(), vec![self.n_classes]));
        v
    }
}

/// A classifier.
#[derive(Debug, Clone)]
pub struct Cnn {
    pub config: CnnConfig,
    pub convs: Vec<Linear>,
    pub fc1: Linear,
    pub fc2: Linear,
    /// The integers and per-row scales of the weights stored as int8 (by weight name), as
    /// loaded: what [`crate::cnn_infer`] serves with integer products.
    pub int8: Vec<(String, Vec<i8>, Vec<f32>)>,
}

/// The 3×3 patches of `x` `[B, C, H, W]` (zero padding 1) as rows `[B·H·W, C·9]`, each row
/// ordered channel-major then ky, kx (PyTorch's weight layout).
pub fn im2col3x3(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut shifts = Vec::with_capacity(9);
    for ky in 0..3 {
        for kx in 0..3 {
            shifts.push(p.narrow(2, ky, h)?.narrow(3, kx, w)?);
        }
    }
    // [B, C, 9, H, W] → [B, H, W, C, 9] → rows.
    let s = Tensor::stack(&shifts, 2)?;
    Ok(s.permute((0, 3, 4, 1, 2))?.reshape((b * h * w, c * 9))?)
}

impl Cnn {
    /// A model from named parameter tensors (checked against the config's shapes).
    pub fn from_tensors(
        config: CnnConfig,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut convs = Vec::new();
        for i in 0..config.conv_channels.len() {
            let shapes = config.parameter_shapes();
            let wshape = &shapes[2 * i].1;
            let w = get(&format!("conv{i}.weight"), wshape)?;
            let b = get(&format!("conv{i}.bias"), &[wshape[0]])?;
            convs.push(Linear::dense(format!("conv{i}"), w, Some(b))?);
        }
        let fc1 = Linear::dense(
            "fc1",
            get("fc1.weight", &[config.hidden, config.flat_features()])?,
            Some(get("fc1.bias", &[config.hidden])?),
        )?;
        let fc2 = Linear::dense(
            "fc2",
            get("fc2.weight", &[config.n_classes, config.hidden])?,
            Some(get("fc2.bias", &[config.n_classes])?),
        )?;
        Ok(Cnn {
            config,
            convs,
            fc1,
            fc2,
            int8: Vec::new(),
        })
    }

    /// A freshly initialised model (PyTorch's default: uniform ±1/√fan_in), as trainable `Var`s
    /// in parameter order, from a seed.
    pub fn init(config: CnnConfig, seed: u64, device: &Device) -> Result<(Self, Vec<Var>)> {
        let mut rng = frugal_formats::rng::SplitMix64(seed);
        let mut next = move || rng.next_f64();
        let shapes = config.parameter_shapes();
        let mut vars = Vec::new();
        for (name, shape) in &shapes {
            // The fan-in is the weight's row length; a bias uses its weight's.
            let fan_in = if name.ends_with(".weight") {
                shape[1]
            } else {
                shapes
                    .iter()
                    .find(|(n, _)| *n == name.replace(".bias", ".weight"))
                    .map_or(1, |s| s.1[1])
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| ((next() * 2.0 - 1.0) * bound) as f32)
                .collect();
            vars.push(Var::from_tensor(&Tensor::from_vec(
                v,
                shape.as_slice(),
                device,
            )?)?);
        }
        Self::from_vars(config, vars)
    }

    /// A model whose parameters are `vars`, in [`CnnConfig::parameter_shapes`] order.
    fn from_vars(config: CnnConfig, vars: Vec<Var>) -> Result<(Self, Vec<Var>)> {
        let mut it = vars.iter();
        let model = Cnn::from_tensors(config, |_, _| {
            Ok(it
                .next()
                .expect("one var per parameter")
                .as_tensor()
                .clone())
        })?;
        Ok((model, vars))
    }

    /// Logits `[B, classes]` for images `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.convs {
            let (b, _, h, w) = x.dims4()?;
            let y = conv.forward(&im2col3x3(&x)?)?; // [B·H·W, out]
            let y = y
                .reshape((b, h, w, conv.n_out()))?
                .permute((0, 3, 1, 2))?
                .relu()?;
            x = y.max_pool2d(2)?;
        }
        let x = x.flatten_from(1)?;
        let h = self.fc1.forward(&x)?.relu()?;
        self.fc2.forward(&h)
    }

    /// The stored int8 integers and scales of weight `name`, when it was loaded as int8.
    pub fn stored_int8(&self, name: &str) -> Option<(&[i8], &[f32])> {
        self.int8
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, q, s)| (q.as_slice(), s.as_slice()))
    }

    /// Every layer with a weight (the seam compression methods use).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self.convs.iter_mut().collect();
        v.push(&mut self.fc1);
        v.push(&mut self.fc2);
        v
    }

    /// Every parameter by name (`conv0.weight`, `conv0.bias`, …, `fc2.bias`), in the order of
    /// [`CnnConfig::parameter_shapes`].
    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        let layers: Vec<(&str, &Linear)> = self
            .convs
            .iter()
            .map(|c| (c.name.as_str(), c))
            .chain([("fc1", &self.fc1), ("fc2", &self.fc2)])
            .collect();
        let mut out = Vec::new();
        for (name, l) in layers {
            out.push((format!("{name}.weight"), l.weight_f32()?));
            if let Some(b) = l.bias() {
                out.push((format!("{name}.bias"), b.clone()));
            }
        }
        Ok(out)
    }

    /// Every parameter's values, flat, in [`CnnConfig::parameter_shapes`] order (int8/int4
    /// weights decoded): what [`crate::cnn_kernels`] takes.
    pub fn flat_parameters(&self) -> Result<Vec<Vec<f32>>> {
        self.parameters()?
            .iter()
            .map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    /// A trainable copy: the same values as fresh `Var`s, in parameter order.
    pub fn trainable(&self) -> Result<(Self, Vec<Var>)> {
        let vars: Vec<Var> = self
            .parameters()?
            .iter()
            .map(|(_, t)| Var::from_tensor(&t.copy()?))
            .collect::<candle_core::Result<_>>()?;
        Self::from_vars(self.config.clone(), vars)
    }

    /// Saves as safetensors with the config in the metadata ([`CONFIG_KEY`]).
    pub fn save(&self, path: &Path, inputs: &[&Path]) -> Result<u64> {
        let mut meta = BTreeMap::new();
        meta.insert(
            CONFIG_KEY.to_string(),
            serde_json::to_string(&self.config).expect("config serializes"),
        );
        crate::convert::write_f32_safetensors(path, inputs, &meta, &self.parameters()?)
    }

    /// [`Cnn::save`] with every weight (not bias) stored in `layout` where that is smaller than
    /// dense ([`crate::int_weights`]: a pruned model in a fraction of the bytes, decoded exactly
    /// by [`Cnn::load`]). Fails, writing nothing, if a weight does not fit an N:M layout.
    pub fn save_sparse(
        &self,
        path: &Path,
        inputs: &[&Path],
        layout: frugal_formats::sparse::Layout,
    ) -> Result<u64> {
        let mut meta = BTreeMap::new();
        meta.insert(
            CONFIG_KEY.to_string(),
            serde_json::to_string(&self.config).expect("config serializes"),
        );
        crate::convert::write_f32_safetensors_sparse(
            path,
            inputs,
            &meta,
            &self.parameters()?,
            &|name, _| name.ends_with(".weight").then_some(layout),
        )
    }

    /// Loads a model saved by [`Cnn::save`] or [`Cnn::save_sparse`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let f = SafetensorsFile::open(path)?;
        let cfg = f
            .header
            .metadata
            .get(CONFIG_KEY)
            .ok_or_else(|| Error::BadMetadata {
                path: path.to_path_buf(),
                key: CONFIG_KEY.into(),
                reason: "missing: not a Frugal CNN".into(),
            })?;
        let config: CnnConfig = serde_json::from_str(cfg).map_err(|e| Error::BadMetadata {
            path: path.to_path_buf(),
            key: CONFIG_KEY.into(),
            reason: e.to_string(),
        })?;
        config.validate().map_err(|reason| Error::BadMetadata {
            path: path.to_path_buf(),
            key: CONFIG_KEY.into(),
            reason,
        })?;
        let mut int8 = Vec::new();
        for (name, _) in config.parameter_shapes() {
            if let Some((q, s)) = crate::int_weights::load_int8(&f, &name)? {
                int8.push((name, q, s));
            }
        }
        let mut model = Cnn::from_tensors(config, |name, shape| {
            if name.ends_with(".weight") {
                // F32, or Frugal's int8/int4 (decoded).
                let w = crate::int_weights::load_weight(&f, name, device)?;
                if w.dims() != shape {
                    return Err(Error::BadShape {
                        path: path.to_path_buf(),
                        name: name.into(),
                        found: w.dims().to_vec(),
                        expected: shape.to_vec(),
                    });
                }
                return Ok(w);
            }
            let t = f.tensor(name).ok_or_else(|| Error::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
            })?;
            let found: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            if found != shape || t.dtype != Dtype::F32 {
                return Err(Error::BadShape {
                    path: path.to_path_buf(),
                    name: name.into(),
                    found,
                    expected: shape.to_vec(),
                });
            }
            Ok(Tensor::from_raw_buffer(
                f.tensor_data(t),
                DType::F32,
                shape,
                device,
            )?)
        })?;
        model.int8 = int8;
        Ok(model)
    }
}

/// Pixels `[n, 1, H, W]` scaled to 0..1 (flat), and labels, for `indices` of a data set.
pub fn batch_pixels(
    set: &frugal_formats::idx::ImageSet,
    indices: &[usize],
) -> (Vec<f32>, Vec<u32>) {
    let n = set.rows * set.cols;
    let scale = 1.0 / f32::from(set.max_value);
    let mut px = Vec::with_capacity(indices.len() * n);
    for &i in indices {
        px.extend(set.image(i).iter().map(|&p| f32::from(p) * scale));
    }
    let labels = indices.iter().map(|&i| u32::from(set.labels[i])).collect();
    (px, labels)
}

/// Images `[n, 1, H, W]` scaled to 0..1, and labels, for `indices` of a data set.
pub fn batch_tensors(
    set: &frugal_formats::idx::ImageSet,
    indices: &[usize],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (px, labels) = batch_pixels(set, indices);
    Ok((
        Tensor::from_vec(px, (indices.len(), 1, set.rows, set.cols), device)?,
        Tensor::from_vec(labels, indices.len(), device)?,
    ))
}

/// The logits for `indices` of a data set as the model is served ([`crate::cnn_infer`]: int8
/// weights through integer products, F32 ones in F32), in batches on the caller's thread.
pub fn served_logits(
    model: &Cnn,
    set: &frugal_formats::idx::ImageSet,
    indices: &[usize],
    batch: usize,
) -> Result<Vec<f32>> {
    let mut served = crate::cnn_infer::CnnInference::new(model)?;
    let mut out = Vec::with_capacity(indices.len() * model.config.n_classes);
    for chunk in indices.chunks(batch.max(1)) {
        let (x, _) = batch_pixels(set, chunk);
        out.extend_from_slice(served.forward(&x, chunk.len()));
    }
    Ok(out)
}

/// Predicted classes for `indices` of a data set ([`served_logits`], then the first maximum).
pub fn predict(
    model: &Cnn,
    set: &frugal_formats::idx::ImageSet,
    indices: &[usize],
    batch: usize,
) -> Result<Vec<u32>> {
    let k = model.config.n_classes;
    Ok(served_logits(model, set, indices, batch)?
        .chunks(k)
        .map(|row| argmax(row) as u32)
        .collect())
}

/// The index of a row's first maximum, as argmax does.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_rejects_empty_and_huge_models() {
        assert!(CnnConfig::classic(28, 28, 10).validate().is_ok());
        assert!(CnnConfig::classic(28, 28, 0).validate().is_err());
        assert!(CnnConfig {
            conv_channels: vec![8, 0],
            ..CnnConfig::classic(28, 28, 10)
        }
        .validate()
        .is_err());
        assert!(
            CnnConfig::classic(2, 2, 10).validate().is_err(),
            "two pools shrink 2×2 to nothing"
        );
        assert!(CnnConfig {
            hidden: usize::MAX / 2,
            ..CnnConfig::classic(28, 28, 10)
        }
        .validate()
        .is_err());
    }
}
