//! Frugal's models: forward passes written for this project on candle tensors (every position's
//! output, hooks at every linear layer), and the tokenizers that feed them.
//!
//! - [`llama`]: Llama-family decoder from GGUF.
//! - [`bert`]: BERT sentence encoder from safetensors (mean pooling).
//! - [`cnn`]: convolutional image classifiers from a small config.
//! - [`tokenizer`]: byte-level BPE built from GGUF `tokenizer.ggml.*` metadata.
//! - [`linear`]: the linear-layer seam every compression method uses.
//! - [`int_weights`]: Frugal's int8/int4 weights in safetensors, decoded at load.
//! - [`storage`]: bits per weight of every logical tensor of a model file.
//! - [`memory`]: memory plans (a run's peak estimated before it starts) and budgets.
//! - [`scratch`]: large working buffers in memory or in mapped scratch files.
//! - [`gemm`]: products with F32/F16/BF16 weight rows (AVX-512, AVX2, scalar reference).
//! - [`iq`]: decoding of llama.cpp's IQ4_NL/IQ4_XS blocks (candle does not read them).

pub mod bert;
pub mod bert_kernels;
pub mod cnn;
pub mod cnn_infer;
pub mod cnn_kernels;
pub mod convert;
pub mod error;
pub mod gemm;
pub mod gguf_load;
pub mod int8_kernels;
pub mod int_weights;
pub mod iq;
pub mod kernels;
pub mod linear;
pub mod llama;
pub mod memory;
pub mod qmatmul;
pub mod relu_int8;
pub mod scratch;
pub mod storage;
pub mod tokenizer;

pub use error::{Error, Result};
