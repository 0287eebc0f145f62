//! Quantization of GGUF models. One table, [`QUANT_TYPES`], drives parsing, help and reports.
//!
//! - Block formats ([`codec`]): ggml's legacy 32-wide types ([`legacy`]) and k-quants
//!   ([`kquants`]), bit-identical to llama.cpp's reference quantizers without an importance matrix.
//! - Which format each tensor gets ([`mix`]): llama.cpp's named mixes and rules, `--pure`,
//!   `--tensor-type REGEX=TYPE` overrides, and a size-budgeted assignment ([`alloc`]) by measured
//!   error, used for `--target-bpw` and for rows a 256-wide type cannot tile.
//! - Importance: an importance matrix ([`Imatrix`], per input column mean x²) weights every
//!   rounding decision; GPTQ ([`gptq`]) goes further and compensates each rounding error in the
//!   columns not yet quantized.

pub mod alloc;
pub mod awq;
pub mod calibration;
pub mod checkpoint;
pub mod codec;
pub mod gptq;
pub mod imatrix_file;
pub mod int;
pub mod iq1;
pub mod iq2;
pub mod iq3;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod mix;
pub mod spill;
pub mod ternary;

use crate::{Error, Result};
use codec::{codec, Codec};
use frugal_formats::gguf::{GgmlType, GgufFile, GgufStreamWriter, TensorInfo, TensorSpec};
use frugal_models::gguf_load::load_f32;
use mix::{Category, ModelFacts, TensorFacts};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// One quantization target: a single type, or one of llama.cpp's named mixes.
#[derive(Debug, Clone, Copy)]
pub struct QuantType {
    pub name: &'static str,
    /// The type most tensors get.
    pub base: GgmlType,
    /// llama.cpp's `general.file_type` (`llama_ftype`) for a file of this type.
    pub file_type: u32,
    pub summary: &'static str,
}

macro_rules! qt {
    ($name:literal, $base:ident, $ft:ident, $s:literal) => {
        QuantType {
            name: $name,
            base: GgmlType::$base,
            file_type: mix::ftype::$ft,
            summary: $s,
        }
    };
}

/// Every target `frugal quantize --type` accepts (llama-quantize's names and `llama_ftype`s).
pub const QUANT_TYPES: &[QuantType] = &[
    qt!("F32", F32, ALL_F32, "32.00 bpw, no loss"),
    qt!("F16", F16, MOSTLY_F16, "16.00 bpw, IEEE half"),
    qt!(
        "Q8_0",
        Q8_0,
        Q8_0,
        " 8.50 bpw, symmetric 8-bit blocks of 32"
    ),
    qt!("Q6_K", Q6_K, Q6_K, " 6.56 bpw, 6-bit super-blocks of 256"),
    qt!(
        "Q5_1",
        Q5_1,
        Q5_1,
        " 6.00 bpw, 5-bit blocks of 32 with offset"
    ),
    qt!(
        "Q5_K_M",
        Q5_K,
        Q5_K_M,
        " 5.5 bpw 5-bit k-quant mix, more bits for attn_v and some ffn_down"
    ),
    qt!("Q5_K", Q5_K, Q5_K_M, " alias for Q5_K_M"),
    qt!("Q5_K_S", Q5_K, Q5_K_S, " 5.5 bpw 5-bit k-quant mix"),
    qt!(
        "Q5_0",
        Q5_0,
        Q5_0,
        " 5.50 bpw, symmetric 5-bit blocks of 32"
    ),
    qt!(
        "Q4_1",
        Q4_1,
        Q4_1,
        " 5.00 bpw, 4-bit blocks of 32 with offset"
    ),
    qt!(
        "Q4_K_M",
        Q4_K,
        Q4_K_M,
        " 4.5 bpw 4-bit k-quant mix, 6-bit attn_v and half of ffn_down"
    ),
    qt!("Q4_K", Q4_K, Q4_K_M, " alias for Q4_K_M"),
    qt!("Q4_K_S", Q4_K, Q4_K_S, " 4.5 bpw 4-bit k-quant mix"),
    qt!(
        "Q4_0",
        Q4_0,
        Q4_0,
        " 4.50 bpw, symmetric 4-bit blocks of 32"
    ),
    qt!(
        "IQ4_NL",
        IQ4_NL,
        IQ4_NL,
        " 4.50 bpw, 4-bit blocks of 32 on a non-linear 16-value grid"
    ),
    qt!(
        "IQ4_XS",
        IQ4_XS,
        IQ4_XS,
        " 4.25 bpw, non-linear 4-bit super-blocks of 256 with 6-bit sub-block scales"
    ),
    qt!(
        "IQ3_M",
        IQ3_S,
        IQ3_M,
        " 3.7 bpw 3-bit lattice mix, 4-bit attn_v, attn_output and first ffn_down"
    ),
    qt!(
        "IQ3_S",
        IQ3_S,
        IQ3_S,
        " 3.44 bpw 3-bit lattice (512 points), 4-bit scales per 32"
    ),
    qt!(
        "IQ3_XS",
        IQ3_S,
        IQ3_XS,
        " 3.3 bpw 3-bit lattice mix, IQ3_XXS attn_q/k and middle ffn_gate/up"
    ),
    qt!(
        "IQ3_XXS",
        IQ3_XXS,
        IQ3_XXS,
        " 3.06 bpw 3-bit lattice (256 points), needs an imatrix for most tensors"
    ),
    qt!(
        "Q3_K_L",
        Q3_K,
        Q3_K_L,
        " 3.4 bpw 3-bit k-quant mix, 5-bit attn_v, attn_output, ffn_down"
    ),
    qt!(
        "Q3_K_M",
        Q3_K,
        Q3_K_M,
        " 3.4 bpw 3-bit k-quant mix, 4–5-bit attn_v, attn_output, ffn_down"
    ),
    qt!("Q3_K", Q3_K, Q3_K_M, " alias for Q3_K_M"),
    qt!("Q3_K_S", Q3_K, Q3_K_S, " 3.4 bpw 3-bit k-quant mix"),
    qt!(
        "Q2_K",
        Q2_K,
        Q2_K,
        " 2.6 bpw 2-bit k-quant mix, 3-bit attn_v, attn_output, ffn_down"
    ),
    qt!(
        "IQ2_M",
        IQ2_S,
        IQ2_M,
        " 2.7 bpw 2-bit lattice mix: IQ2_S (1024 points) with IQ3_S attn_v, attn_output, first ffn_down"
    ),
    qt!(
        "IQ2_S",
        IQ2_XS,
        IQ2_S,
        " 2.5 bpw 2-bit lattice mix: IQ2_XS with IQ3_S attn_v, attn_output and first ffn_down"
    ),
    qt!(
        "IQ2_XS",
        IQ2_XS,
        IQ2_XS,
        " 2.31 bpw 2-bit lattice (512 points), 4-bit scales per 16; needs an imatrix"
    ),
    qt!(
        "IQ2_XXS",
        IQ2_XXS,
        IQ2_XXS,
        " 2.06 bpw 2-bit lattice (256 points), 4-bit scales per 32; needs an imatrix"
    ),
    qt!(
        "TQ2_0",
        TQ2_0,
        TQ2_0,
        " 2.06 bpw ternary {-d, 0, d} in 2 bits (for ternary-trained models)"
    ),
    qt!(
        "TQ1_0",
        TQ1_0,
        TQ1_0,
        " 1.69 bpw ternary {-d, 0, d}, five a byte (for ternary-trained models)"
    ),
    qt!(
        "IQ1_M",
        IQ1_M,
        IQ1_M,
        " 1.75 bpw 1-bit lattice (2048 points, shifted ±1/8), 3-bit scales per 16; needs an imatrix"
    ),
    qt!(
        "IQ1_S",
        IQ1_S,
        IQ1_S,
        " 1.56 bpw 1-bit lattice (2048 points, shifted ±1/8), 3-bit scales per 32; needs an imatrix"
    ),
];

/// Looks a target up by name (case-insensitive).
pub fn quant_type(name: &str) -> Option<&'static QuantType> {
    QUANT_TYPES
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
}

/// The help text listing every target, from the tables (GGUF types and mixes, then the integer
/// schemes for safetensors models).
pub fn types_help() -> String {
    QUANT_TYPES
        .iter()
        .map(|t| format!("  {:<9} {}", t.name, t.summary.trim_start()))
        .chain(
            int::INT_TYPES
                .iter()
                .map(|t| format!("  {:<9} {}", t.name, t.summary)),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `--type`: a GGUF target or an integer scheme for safetensors models.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Gguf(&'static QuantType),
    Int(&'static int::IntType),
}

impl Target {
    /// The type's name, as `--type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Gguf(t) => t.name,
            Target::Int(t) => t.name,
        }
    }
}

/// Looks a `--type` up in both tables.
pub fn target(name: &str) -> Option<Target> {
    quant_type(name)
        .map(Target::Gguf)
        .or_else(|| int::int_type(name).map(Target::Int))
}

/// Every `--type` name.
pub fn target_names() -> Vec<&'static str> {
    QUANT_TYPES
        .iter()
        .map(|t| t.name)
        .chain(int::INT_TYPES.iter().map(|t| t.name))
        .collect()
}

/// A single ggml type by name, for `--tensor-type` (only types Frugal writes).
pub fn ggml_type_named(name: &str) -> Option<GgmlType> {
    codec::CODECS
        .iter()
        .map(|c| c.ggml)
        .find(|t| t.name().eq_ignore_ascii_case(name))
}

/// Per input column mean of x² for each weight (keyed by GGUF tensor name): how much each
/// column's rounding error costs, as llama-imatrix measures it.
#[derive(Debug, Clone, Default)]
pub struct Imatrix {
    pub entries: HashMap<String, Vec<f32>>,
    /// Tokens the statistics were gathered on.
    pub n_tokens: u64,
    /// Where they come from, for the report.
    pub source: String,
    /// Read from llama.cpp's file format: what the file says (recorded in the output as
    /// `llama-quantize` records it).
    pub file: Option<imatrix_file::ImatrixFileInfo>,
    /// Per weight, what rounding its input costs as llama.cpp's kernels round it (measured by
    /// Frugal's calibration; a llama.cpp file has none).
    pub rounding: HashMap<String, InputRounding>,
    /// Per weight, twice the KL divergence a unit of its importance-weighted error costs (and
    /// of its rounded input's term; [`calibration::collect_gains`]), which a size budget
    /// multiplies every candidate's error by, so that errors of different tensors compare;
    /// empty unless measured for a budget (a llama.cpp file has none, nor `--imatrix FILE`).
    pub gains: HashMap<String, calibration::Gain>,
}

/// Per input column, the mean squared error of rounding a layer's input as ggml's
/// `vec_dot_type` rounds it for the weight's type ([`frugal_models::linear::ActRounding`]):
/// 8-bit blocks of 32 (the legacy and IQ4_NL types), of 256 (the k-quants and the other IQ
/// types; empty where 256 does not tile the rows) and f16. The output error a candidate type
/// adds through its input is Σ_j e_j · Σ_rows ŵ_rj², beside the weight's own Σ_j x²_j · Σ_rows
/// (w − ŵ)²_rj; the two together are the layer's error as llama.cpp computes it, which is what
/// makes an F16 weight worth its bytes where the 8-bit input costs more than its weight error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputRounding {
    pub q8_0: Vec<f32>,
    pub q8k: Vec<f32>,
    pub f16: Vec<f32>,
}

impl InputRounding {
    /// The rounding whose errors these are, in the order [`InputRounding::of`] reads them.
    pub const FORMATS: [frugal_models::linear::ActRounding; 3] = [
        frugal_models::linear::ActRounding::Q8_0,
        frugal_models::linear::ActRounding::Q8K,
        frugal_models::linear::ActRounding::F16,
    ];

    /// The mean squared input error per column for a weight of type `ty`: `None` for an f32
    /// weight (its input is not rounded) or a format not measured.
    pub fn of(&self, ty: GgmlType) -> Option<&[f32]> {
        use frugal_models::linear::ActRounding as A;
        let v = match A::for_weight(ty) {
            A::Q8_0 => &self.q8_0,
            A::Q8K => &self.q8k,
            A::F16 => &self.f16,
            A::None | A::Bf16 => return None,
        };
        (!v.is_empty()).then_some(v.as_slice())
    }
}

/// `--tensor-type REGEX=TYPE`.
#[derive(Debug, Clone)]
pub struct Override {
    pub pattern: regex::Regex,
    pub ty: GgmlType,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (re, ty) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}`: expected REGEX=TYPE"))?;
        let ty = ggml_type_named(ty).ok_or_else(|| {
            let names: Vec<String> = codec::CODECS.iter().map(|c| c.ggml.name()).collect();
            format!("`{s}`: unknown type `{ty}` (one of: {})", names.join(", "))
        })?;
        let pattern = regex::Regex::new(re).map_err(|e| format!("`{s}`: bad regex: {e}"))?;
        Ok(Override { pattern, ty })
    }
}

frugal_formats::name_table! {
    "lowercase";
    /// What to do with tensors whose rows a type cannot tile (SmolLM2's width 576 under 256-wide
    /// k-quants).
    #[derive(Default)]
    pub enum Fallback {
        /// llama.cpp's fixed substitutes (Q4_K → Q5_0, …): the same file as `llama-quantize`.
        #[default]
        Llama,
        /// The 32-wide types assigned by measured error within the same bytes as llama's choice.
        Best,
    }
}

/// Everything `quantize_gguf` is asked to do.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub target: &'static QuantType,
    /// One type for every weight (llama-quantize `--pure`), no mix rules.
    pub pure: bool,
    pub fallback: Fallback,
    pub overrides: Vec<Override>,
    pub imatrix: Option<Imatrix>,
    /// Assign types to reach this many bits per weight over the quantized tensors.
    pub target_bpw: Option<f64>,
    /// The block-wise methods: save progress after every block (and resume from it).
    pub checkpoint: Option<checkpoint::Checkpoint>,
    /// Where the block-wise methods hold their Gram sums and factorizations (the memory plan
    /// chooses: [`memory_plan`]).
    pub scratch: frugal_models::scratch::Placement,
}

impl QuantizeOptions {
    /// Whether types are assigned under a size budget (`--target-bpw`, or `--fallback best`
    /// for the rows a 256-wide type cannot tile): then calibration also measures the gains.
    pub fn plans_by_budget(&self) -> bool {
        self.target_bpw.is_some() || self.fallback == Fallback::Best
    }

    pub fn new(target: &'static QuantType) -> Self {
        QuantizeOptions {
            target,
            pure: false,
            fallback: Fallback::Llama,
            overrides: Vec::new(),
            imatrix: None,
            target_bpw: None,
            checkpoint: None,
            scratch: frugal_models::scratch::Placement::Memory,
        }
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TensorReport {
    pub name: String,
    pub from: String,
    pub to: String,
    pub n_elements: u64,
    pub bytes: u64,
    /// Why this type.
    pub reason: Reason,
    /// ‖x − x̂‖ / ‖x‖ against the decoded input (0 for tensors kept as they were).
    pub rel_rmse: f64,
    /// Σ_j imatrix_j · Σ_rows (x − x̂)² / Σ_j imatrix_j · Σ_rows x², when an imatrix is given.
    pub weighted_rel_err: Option<f64>,
}

/// The result of [`quantize_gguf`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct QuantizeReport {
    pub input: String,
    pub output: String,
    pub target: String,
    pub method: String,
    pub fallback: Fallback,
    pub imatrix: Option<String>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub n_parameters: u64,
    pub bits_per_weight: f64,
    /// Wall time of the whole quantization; a block-wise pass resumed from a checkpoint
    /// counts the runs before the resume too.
    pub seconds: f64,
    /// Seconds of `seconds` spent measuring the full-precision model's importance matrix
    /// (llama-imatrix's work), when this run measured one; with a size budget, the tensors'
    /// gains too ([`calibration::collect_gains`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix_seconds: Option<f64>,
    /// Calibration tokens behind the importance matrix, if any.
    pub calibration_tokens: Option<u64>,
    /// Count of tensors per output type.
    pub type_counts: std::collections::BTreeMap<String, usize>,
    pub tensors: Vec<TensorReport>,
    /// AWQ's choice per group of layers sharing an input (empty without AWQ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awq: Vec<awq::AwqChoice>,
}

/// The type chosen for one tensor, and why.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub ty: GgmlType,
    pub reason: Reason,
}

/// Why a tensor got its type (the `reason` of a report's tensor record).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// llama.cpp's mix rules for the target type.
    Mix,
    /// The target type for every weight matrix (`--pure`, or a tensor the rules keep).
    Pure,
    /// A `--tensor-type` pattern matched.
    Override,
    /// The rows cannot tile the type: llama.cpp's substitute (or the best 32-wide type).
    Fallback,
    /// Assigned by measured error to meet `--target-bpw`.
    Budget,
    /// Not quantized: kept as stored.
    Kept,
    /// Kept in its type but rewritten by AWQ's folded scales (a norm).
    AwqScaled,
}

/// Model-wide facts for the mix rules, from the GGUF metadata and tensor list.
pub fn model_facts(f: &GgufFile, has_imatrix: bool) -> ModelFacts {
    let u = |k: &str| f.header.arch_get(k).and_then(|v| v.as_u64());
    let n_head = u("attention.head_count").unwrap_or(1).max(1);
    let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head).max(1);
    let names = || f.header.tensors.iter().map(|t| t.name.as_str());
    ModelFacts {
        n_layer: u("block_count").unwrap_or(0) as usize,
        n_gqa: (n_head / n_head_kv) as usize,
        tied_embeddings: !names().any(|n| n == "output.weight"),
        n_attn_v: names()
            .filter(|n| matches!(Category::of(n), Category::AttnV | Category::AttnQkv))
            .count(),
        has_imatrix,
    }
}

/// Refuses a `--tensor-type` override whose pattern matches no quantizable tensor of `f` (a
/// misspelt pattern would otherwise change nothing, silently).
pub fn check_overrides(f: &GgufFile, opts: &QuantizeOptions) -> Result<()> {
    for o in &opts.overrides {
        let hits = f
            .header
            .tensors
            .iter()
            .any(|t| mix::is_quantizable(&t.name, t.dims.len()) && o.pattern.is_match(&t.name));
        if !hits {
            return Err(Error::BadOptions(format!(
                "--tensor-type `{}`: the pattern matches no quantizable tensor of {}",
                o.pattern,
                f.path().display()
            )));
        }
    }
    Ok(())
}

/// The type of every tensor under `opts`, before any size budget: `None` for tensors kept as
/// they are. Follows llama-quantize: overrides first, then the mix rules (unless pure), then
/// the shape fallback.
pub fn plan_types(f: &GgufFile, opts: &QuantizeOptions) -> Vec<Option<Choice>> {
    let facts = model_facts(f, opts.imatrix.is_some());
    let base = opts.target.base;
    let quantized = codec(base).is_some_and(|c| c.quantized());
    // llama.cpp counts the attention-value tensors in the order it writes them (by layer, then
    // name: `llama_tensor_order`), whatever the input file's order.
    let attn_v_rank: HashMap<&str, usize> = frugal_models::convert::llama_tensor_order(
        f.header.tensors.iter().map(|t| t.name.as_str()),
    )
    .into_iter()
    .map(|i| &f.header.tensors[i])
    .filter(|t| {
        mix::is_quantizable(&t.name, t.dims.len())
            && matches!(Category::of(&t.name), Category::AttnV | Category::AttnQkv)
    })
    .enumerate()
    .map(|(k, t)| (t.name.as_str(), k))
    .collect();
    f.header
        .tensors
        .iter()
        .map(|t| {
            if !mix::is_quantizable(&t.name, t.dims.len()) {
                return None;
            }
            let i_attn_v = attn_v_rank.get(t.name.as_str()).copied().unwrap_or(0);
            if !quantized {
                return Some(Choice {
                    ty: base,
                    reason: Reason::Pure,
                });
            }
            let tf = TensorFacts {
                name: &t.name,
                category: Category::of(&t.name),
                layer: mix::layer_of(&t.name),
                ncols: t.dims[0],
            };
            let mut c = if let Some(o) = opts.overrides.iter().find(|o| o.pattern.is_match(&t.name))
            {
                Choice {
                    ty: o.ty,
                    reason: Reason::Override,
                }
            } else if opts.pure {
                Choice {
                    ty: base,
                    reason: Reason::Pure,
                }
            } else {
                Choice {
                    ty: mix::llama_rule(opts.target.file_type, base, &tf, &facts, i_attn_v),
                    reason: Reason::Mix,
                }
            };
            let fb = mix::llama_fallback(c.ty, tf.ncols);
            if fb != c.ty {
                c = Choice {
                    ty: fb,
                    reason: Reason::Fallback,
                };
            }
            Some(c)
        })
        .collect()
}

/// A tensor decoded to f32 (straight from the map for F32).
pub fn tensor_f32(f: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    if t.ggml_type == GgmlType::F32 {
        return Ok(f
            .tensor_data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    Ok(load_f32(f, &t.name, &candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?)
}

/// A tensor's values as f32: the mapped bytes themselves when stored as F32 (aligned in the
/// mapped file, as GGUF's data alignment guarantees), decoded otherwise.
pub enum F32Data {
    Mapped(frugal_formats::gguf::MappedBytes),
    Owned(Vec<f32>),
}

/// The f32 view of bytes whose length is a multiple of 4 and whose start is aligned.
fn as_f32(b: &[u8]) -> Option<&[f32]> {
    // SAFETY: every bit pattern is a valid f32; `align_to` only yields the aligned middle.
    let (pre, mid, post) = unsafe { b.align_to::<f32>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

impl std::ops::Deref for F32Data {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // Checked aligned when made.
            F32Data::Mapped(b) => as_f32(b).unwrap_or(&[]),
            F32Data::Owned(v) => v,
        }
    }
}

/// A tensor as f32 without copying when it is stored as F32, decoded otherwise.
pub fn tensor_f32_borrowed(f: &GgufFile, t: &TensorInfo) -> Result<F32Data> {
    if t.ggml_type == GgmlType::F32 && cfg!(target_endian = "little") {
        let b = f.tensor_data(t);
        if as_f32(&b).is_some() {
            return Ok(F32Data::Mapped(b));
        }
    }
    Ok(F32Data::Owned(tensor_f32(f, t)?))
}

/// Quantizes a row-major matrix (`x.len() / ncols` rows) to `ty`, rows in parallel, with
/// per-column importance `qw` when given (see [`row_weights`]).
pub fn quantize_matrix(x: &[f32], ncols: usize, ty: GgmlType, qw: Option<&[f32]>) -> Vec<u8> {
    let c: &Codec = codec(ty).expect("a type Frugal writes");
    let row_bytes = ncols / c.block * c.block_bytes;
    let nrows = x.len() / ncols.max(1);
    let mut bytes = vec![0u8; row_bytes * nrows];
    bytes
        .par_chunks_mut(row_bytes)
        .zip(x.par_chunks(ncols))
        .enumerate()
        .for_each(|(i, (out, r))| (c.row)(r, row_weights(qw, ncols, nrows, i), out));
    bytes
}

/// Row `i`'s importance weights of a matrix of `nrows` rows of `ncols`: `qw` is one row of
/// weights for every row, or one row per equal group of rows — a 3-D tensor's experts, each
/// weighted by its own row, as llama-quantize slices an importance entry of `ne0 · ne2` values
/// (the groups must divide the rows: [`imatrix_row`] passes only such entries).
fn row_weights(qw: Option<&[f32]>, ncols: usize, nrows: usize, i: usize) -> Option<&[f32]> {
    let w = qw?;
    let groups = (w.len() / ncols.max(1)).max(1);
    let g = i / (nrows / groups).max(1);
    Some(&w[g * ncols..(g + 1) * ncols])
}

/// [`quantize_matrix`] that also measures the error of each row while it is in cache (one
/// pass instead of quantize-then-decode).
pub(crate) fn quantize_matrix_measured(
    x: &[f32],
    ncols: usize,
    ty: GgmlType,
    qw: Option<&[f32]>,
) -> (Vec<u8>, ErrSums) {
    let c: &Codec = codec(ty).expect("a type Frugal writes");
    let row_bytes = ncols / c.block * c.block_bytes;
    let nrows = x.len() / ncols.max(1);
    let mut bytes = vec![0u8; row_bytes * nrows];
    // Per-row sums added in row order: the same total for any thread count or scheduling
    // (MPI ranks that plan types from these sums must agree bit for bit).
    let rows: Vec<ErrSums> = bytes
        .par_chunks_mut(row_bytes)
        .zip(x.par_chunks(ncols))
        .enumerate()
        .map_init(
            || vec![0f32; ncols],
            |back, (i, (out, r))| {
                let qw = row_weights(qw, ncols, nrows, i);
                (c.row)(r, qw, out);
                c.decode_row(out, back);
                error_sums(r, back, ncols, qw)
            },
        )
        .collect();
    (
        bytes,
        rows.into_iter().fold(ErrSums::default(), ErrSums::add),
    )
}

/// Quantizes `input` as `opts` says and writes `output` atomically. Tensors are processed one
/// after another (streaming from the mapped input), rows in parallel.
pub fn quantize_gguf(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<QuantizeReport> {
    let t0 = std::time::Instant::now();
    let f = GgufFile::open(input)?;
    let choices = final_types(&f, opts)?;
    write_quantized(
        &f,
        output,
        opts,
        &choices,
        &spill::ProducedStore::new_in(&spill_dir(output)),
        "rtn",
        t0,
        &|d, t| progress(d, t),
    )
}

frugal_formats::name_table! {
    "kebab-case";
    /// The quantization method by name: `--method` of `frugal quantize` and a recipe's quantize
    /// `method`, one name table (clap and serde spell it alike).
    #[derive(Default)]
    pub enum MethodName {
        /// Round to nearest, importance-weighted with calibration.
        #[default]
        Rtn,
        /// GPTQ, block by block on the quantized model's own activations.
        Gptq,
        /// AWQ's activation-aware channel scales folded into the norms and value/up rows, then
        /// importance-weighted rounding.
        Awq,
        /// AWQ's scales, then GPTQ.
        AwqGptq,
    }
}

impl MethodName {
    /// The method, GPTQ (where it runs) with `gptq`'s settings.
    pub fn with(self, gptq: gptq::GptqOptions) -> Method {
        let blockwise = |awq, gptq| Method::Blockwise(gptq::BlockwiseOptions { awq, gptq });
        match self {
            MethodName::Rtn => Method::Rtn,
            MethodName::Gptq => blockwise(false, Some(gptq)),
            MethodName::Awq => blockwise(true, None),
            MethodName::AwqGptq => blockwise(true, Some(gptq)),
        }
    }

    /// Every method but round-to-nearest runs the model on calibration text.
    pub fn needs_calibration(self) -> bool {
        self != MethodName::Rtn
    }
}

/// How the weights are rounded.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// Round to nearest (importance-weighted when there is an importance matrix).
    Rtn,
    /// Block by block on the quantized model's own activations: AWQ and/or GPTQ.
    Blockwise(gptq::BlockwiseOptions),
}

/// The peak memory of [`quantize_model`] on `f`, estimated from the shapes before it starts:
/// the calibration pass (`calib`: chunks and their tokens, when given), or the rounding of
/// the largest tensor (decoded to F32, rounded and measured), whichever is larger; the
/// block-wise methods' Gram sums and factorizations where `scratch` says.
pub fn memory_plan(
    f: &GgufFile,
    calib: Option<(usize, usize)>,
    method: Method,
    scratch: &frugal_models::scratch::Placement,
) -> Result<frugal_models::memory::MemoryPlan> {
    use calibration::CalibWork;
    // An F32 tensor is read in place from the map; any other is decoded to F32 first. Then
    // its rounding (at most about a byte per weight here) and the error's buffers.
    let largest = f
        .header
        .tensors
        .iter()
        .map(|t| {
            let decoded = if t.ggml_type == GgmlType::F32 { 0 } else { 4 };
            (decoded + 4) * t.n_elements()
        })
        .max()
        .unwrap_or(0);
    let mut write = frugal_models::memory::MemoryPlan::new();
    write.add("the largest tensor decoded, rounded and measured", largest);
    let Some((chunks, ctx)) = calib else {
        return Ok(write);
    };
    let work = match method {
        Method::Rtn => CalibWork::Imatrix,
        Method::Blockwise(b) => CalibWork::Sequential {
            abs: b.awq,
            factor: b.gptq.is_some(),
            weight_copies: if b.awq { 4 } else { 3 },
        },
    };
    Ok(calibration::memory_plan(f, chunks, ctx, work, scratch)?.max(write))
}

/// Completes an importance matrix read from a file without Frugal's statistics (llama-imatrix's,
/// or `frugal imatrix` without `--gains`) with what a size budget needs: each weight's input
/// rounding and KL gain, measured on `calib`; the file's entries are kept. Returns whether
/// anything was measured (nothing for a file that carries both).
pub fn complete_imatrix(
    f: &GgufFile,
    m: &mut Imatrix,
    calib: &calibration::Calibration,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<bool> {
    let missing = m.rounding.is_empty() || m.gains.is_empty();
    if m.rounding.is_empty() {
        m.rounding =
            calibration::collect_imatrix(f, calib, &|d, t| progress("imatrix", d, t))?.rounding;
    }
    if m.gains.is_empty() {
        m.gains = calibration::collect_gains(f, calib, &|d, t| progress("gains", d, t))?;
    }
    Ok(missing)
}

/// Calibration-aware quantization: with `calib`, an importance matrix is measured on the
/// full-precision model (unless `opts` carries one); with [`Method::Blockwise`], every decoder
/// weight is scaled (AWQ) and/or rounded by GPTQ on the quantized model's own activations and
/// the rest is rounded with the importance matrix. Progress is reported per stage (`imatrix`,
/// the method's name, `tensors`).
pub fn quantize_model(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    calib: Option<&calibration::Calibration>,
    method: Method,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantizeReport> {
    let t0 = std::time::Instant::now();
    let f = GgufFile::open(input)?;
    check_overrides(&f, opts)?;
    // A file's entries against the model before any calibration completes them (the types
    // they must serve are checked once the plan is made, `check_imatrix`).
    if let Some(m) = opts.imatrix.as_ref().filter(|m| m.file.is_some()) {
        check_imatrix_entries(&f, m)?;
    }
    let mut opts = opts.clone();
    let mut imatrix_seconds = None;
    let planning = opts.plans_by_budget();
    if let (Some(c), Some(m), true) = (calib, &mut opts.imatrix, planning) {
        let t = std::time::Instant::now();
        let measured = complete_imatrix(&f, m, c, progress)?;
        imatrix_seconds = measured.then(|| t.elapsed().as_secs_f64());
    }
    if let (Some(c), None) = (calib, &opts.imatrix) {
        // The full-precision model's importance matrix weights plain rounding and the size
        // budget's measurements; the block-wise methods measure their own on the quantized
        // model's activations, so for them the plan only needs to know calibration is there.
        opts.imatrix = Some(if matches!(method, Method::Rtn) || planning {
            let t = std::time::Instant::now();
            let mut m = calibration::collect_imatrix(&f, c, &|d, t| progress("imatrix", d, t))?;
            if planning {
                m.gains = calibration::collect_gains(&f, c, &|d, t| progress("gains", d, t))?;
            }
            imatrix_seconds = Some(t.elapsed().as_secs_f64());
            m
        } else {
            Imatrix {
                entries: HashMap::new(),
                n_tokens: c.n_tokens() as u64,
                source: c.source.clone(),
                file: None,
                rounding: HashMap::new(),
                gains: HashMap::new(),
            }
        });
    }
    let choices = final_types(&f, &opts)?;
    let mut report = match method {
        Method::Rtn => {
            let name = if opts.imatrix.is_some() {
                "rtn+imatrix"
            } else {
                "rtn"
            };
            write_quantized(
                &f,
                output,
                &opts,
                &choices,
                &spill::ProducedStore::new_in(&spill_dir(output)),
                name,
                t0,
                &|d, t| progress("tensors", d, t),
            )
        }
        Method::Blockwise(b) => {
            let name = b.name();
            let calib = calib.ok_or_else(|| {
                Error::BadOptions(format!("{name} needs calibration text (--calib FILE)"))
            })?;
            if codec(opts.target.base).is_none_or(|c| !c.quantized()) {
                return Err(Error::BadOptions(format!(
                    "{name} needs a quantized target, not {}",
                    opts.target.name
                )));
            }
            let r = gptq::blockwise_model(
                &f,
                &choices,
                calib,
                b,
                &spill_dir(output),
                &opts.scratch,
                opts.checkpoint.as_ref(),
                &|d, t| progress(name, d, t),
            )?;
            // The tensors left to rounding (the output layer) are weighted by the quantized
            // model's own activations.
            opts.imatrix = Some(r.imatrix);
            let mut report = write_quantized(
                &f,
                output,
                &opts,
                &choices,
                &r.tensors,
                name,
                t0,
                &|d, t| progress("tensors", d, t),
            )?;
            report.awq = r.awq;
            report.seconds += r.resumed_seconds;
            // The output is in place: the checkpoint has served.
            if let Some(c) = &opts.checkpoint {
                c.remove()?;
            }
            Ok(report)
        }
    }?;
    report.imatrix_seconds = imatrix_seconds;
    Ok(report)
}

/// The folder produced tensors are spilled to until the output is written (and the scratch
/// files go to, when placed in files): the output's own.
pub fn spill_dir(output: &Path) -> std::path::PathBuf {
    match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Writes the quantized model: tensors in `done` as given, the others rounded to their choice.
#[allow(clippy::too_many_arguments)]
fn write_quantized(
    f: &GgufFile,
    output: &Path,
    opts: &QuantizeOptions,
    choices: &[Option<Choice>],
    done: &spill::ProducedStore,
    method: &str,
    t0: std::time::Instant,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<QuantizeReport> {
    let input = f.path();
    let n = f.header.tensors.len();
    let comm = frugal_dist::world();
    // With several ranks the tensors left to round are shared out by size and their bytes
    // gathered on rank 0, which writes the file alone; the others wait until it is in place
    // (the evaluation that follows reads it).
    let mut gathered: HashMap<String, gptq::Produced> = HashMap::new();
    if comm.size() > 1 {
        let jobs: Vec<usize> = (0..n)
            .filter(|&i| choices[i].is_some() && !done.contains(&f.header.tensors[i].name))
            .collect();
        let costs: Vec<f64> = jobs
            .iter()
            .map(|&i| f.header.tensors[i].n_elements() as f64)
            .collect();
        let owner = frugal_dist::assign_by_cost(&costs, comm.size());
        let mut mine = Vec::new();
        for (j, &i) in jobs.iter().enumerate() {
            if owner[j] != comm.rank() {
                continue;
            }
            let t = &f.header.tensors[i];
            let ty = choices[i].expect("a job has a choice").ty;
            let qw = weights_for(opts, t, ty)?;
            let x = tensor_f32_borrowed(f, t)?;
            let ncols = t.dims[0] as usize;
            let (bytes, sums) = quantize_matrix_measured(&x, ncols, ty, qw);
            let p = gptq::Produced {
                ty,
                bytes,
                errors: Some(sums.finish(qw.is_some())),
            };
            mine.push((j, p.to_wire()));
            drop(x);
            f.release(t);
        }
        frugal_dist::fault_point("quantize-gather")?;
        match frugal_dist::exchange_owned(comm, jobs.len(), mine, true)? {
            None => {
                comm.barrier();
                // Rank 0 writes and reports the file; this rank's record says what it ran.
                return Ok(quantize_report(f, output, opts, method, t0, 0, Vec::new()));
            }
            Some(all) => {
                for (&i, item) in jobs.iter().zip(all) {
                    let p = gptq::Produced::from_wire(&item)?;
                    gathered.insert(f.header.tensors[i].name.clone(), p);
                }
            }
        }
    }
    // The header needs every tensor's type first; then tensors stream through, one at a time,
    // in llama.cpp's order.
    let types: Vec<GgmlType> = f
        .header
        .tensors
        .iter()
        .zip(choices)
        .map(
            |(t, c)| match (done.ty(&t.name).or(gathered.get(&t.name).map(|p| p.ty)), c) {
                (Some(ty), _) => ty,
                (None, Some(c)) => c.ty,
                (None, None) => t.ggml_type,
            },
        )
        .collect();
    // A tensor produced already (read back from the spill, or gathered), if any.
    let mut produced = |name: &str| -> Result<Option<gptq::Produced>> {
        Ok(match done.get(name)? {
            Some(p) => Some(p),
            None => gathered.remove(name),
        })
    };
    let mut metadata = f.header.metadata.clone();
    frugal_models::convert::set_file_type(&mut metadata, opts.target.file_type);
    if let Some(m) = &opts.imatrix {
        imatrix_file::set_quantize_keys(&mut metadata, m);
    }
    let order = frugal_models::convert::llama_tensor_order(
        f.header.tensors.iter().map(|t| t.name.as_str()),
    );
    let specs: Vec<TensorSpec> = order
        .iter()
        .map(|&i| TensorSpec {
            name: &f.header.tensors[i].name,
            ggml_type: types[i],
            dims: &f.header.tensors[i].dims,
        })
        .collect();
    let mut w = GgufStreamWriter::create(output, &[input], &metadata, &specs)
        .map_err(frugal_models::Error::from)?;
    let mut reports = Vec::with_capacity(n);
    for (k, &i) in order.iter().enumerate() {
        let t = &f.header.tensors[i];
        let Some(choice) = choices[i] else {
            // Kept as it is, unless the block-wise pass changed it (AWQ's folded norm gains).
            let changed = produced(&t.name)?;
            let kept;
            let bytes: &[u8] = match &changed {
                Some(p) => &p.bytes,
                None => {
                    kept = f.tensor_data(t);
                    &kept
                }
            };
            w.write_tensor(bytes).map_err(frugal_models::Error::from)?;
            reports.push(TensorReport {
                name: t.name.clone(),
                from: t.ggml_type.name(),
                to: types[i].name(),
                n_elements: t.n_elements(),
                bytes: bytes.len() as u64,
                reason: if changed.is_some() {
                    Reason::AwqScaled
                } else {
                    Reason::Kept
                },
                rel_rmse: 0.0,
                weighted_rel_err: None,
            });
            progress(k + 1, n);
            continue;
        };
        let ncols = t.dims[0] as usize;
        let qw = imatrix_row(opts, t);
        // The weight is decoded only when its error is still to be measured.
        let (bytes, (rel_rmse, weighted)) = match produced(&t.name)? {
            Some(gptq::Produced {
                bytes,
                errors: Some(e),
                ..
            }) => (bytes, e),
            Some(p) => {
                let x = tensor_f32_borrowed(f, t)?;
                let e = errors(&x, &p.bytes, types[i], ncols, qw)?;
                (p.bytes, e)
            }
            None => {
                let qw = weights_for(opts, t, types[i])?;
                let x = tensor_f32_borrowed(f, t)?;
                let (b, sums) = quantize_matrix_measured(&x, ncols, types[i], qw);
                (b, sums.finish(qw.is_some()))
            }
        };
        w.write_tensor(&bytes).map_err(frugal_models::Error::from)?;
        reports.push(TensorReport {
            name: t.name.clone(),
            from: t.ggml_type.name(),
            to: types[i].name(),
            n_elements: t.n_elements(),
            bytes: bytes.len() as u64,
            reason: choice.reason,
            rel_rmse,
            weighted_rel_err: weighted,
        });
        f.release(t);
        progress(k + 1, n);
    }
    let written = w.finish().map_err(frugal_models::Error::from)?;
    comm.barrier();
    Ok(quantize_report(
        f, output, opts, method, t0, written, reports,
    ))
}

/// The record of a quantization: the run's settings, the file's bytes and every tensor's line.
fn quantize_report(
    f: &GgufFile,
    output: &Path,
    opts: &QuantizeOptions,
    method: &str,
    t0: std::time::Instant,
    written: u64,
    reports: Vec<TensorReport>,
) -> QuantizeReport {
    let n_parameters: u64 = reports.iter().map(|r| r.n_elements).sum();
    let tensor_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let mut type_counts = std::collections::BTreeMap::new();
    for r in &reports {
        *type_counts.entry(r.to.clone()).or_insert(0) += 1;
    }
    QuantizeReport {
        input: f.path().display().to_string(),
        output: output.display().to_string(),
        target: opts.target.name.to_string(),
        method: method.to_string(),
        fallback: opts.fallback,
        imatrix: opts.imatrix.as_ref().map(|m| m.source.clone()),
        calibration_tokens: opts.imatrix.as_ref().map(|m| m.n_tokens),
        input_bytes: f.file_len(),
        output_bytes: written,
        n_parameters,
        bits_per_weight: tensor_bytes as f64 * 8.0 / n_parameters.max(1) as f64,
        seconds: t0.elapsed().as_secs_f64(),
        imatrix_seconds: None,
        type_counts,
        tensors: reports,
        awq: Vec::new(),
    }
}

/// The importance weights of tensor `t`: its entry when it holds one row of weights (`ne0`
/// values) or, for a 3-D tensor, one per expert (`ne0 · ne2`, llama.cpp's layout; each
/// expert's rows weighted by its own, [`row_weights`]). An entry of another size weights
/// nothing: [`check_imatrix`] refuses it from a file before any work.
fn imatrix_row<'a>(opts: &'a QuantizeOptions, t: &TensorInfo) -> Option<&'a [f32]> {
    let w = opts.imatrix.as_ref()?.entries.get(&t.name)?;
    let ne0 = t.dims[0] as usize;
    let experts = if t.dims.len() == 3 {
        t.dims[2] as usize
    } else {
        1
    };
    (w.len() == ne0 || w.len() == ne0 * experts).then_some(w.as_slice())
}

/// An importance matrix read from a file against `f` (`frugal tune --imatrix`, before any
/// work): every entry naming one of `f`'s tensors has as many values as its rows (the token
/// embedding excepted, as llama-quantize excepts it).
pub fn check_imatrix_entries(f: &GgufFile, m: &Imatrix) -> Result<()> {
    f.header
        .tensors
        .iter()
        .filter_map(|t| Some((t, m.entries.get(&t.name)?)))
        .try_for_each(|(t, e)| check_entry(m, t, e))
}

fn check_entry(m: &Imatrix, t: &TensorInfo, e: &[f32]) -> Result<()> {
    let want = t.dims[0] * t.dims.get(2).copied().unwrap_or(1);
    if e.len() as u64 != want && t.name != "token_embd.weight" {
        return Err(Error::BadOptions(format!(
            "--imatrix {}: {} values for {}, whose rows hold {want}",
            m.source,
            e.len(),
            t.name
        )));
    }
    Ok(())
}

/// Refuses what `llama-quantize` refuses, before any work: an importance matrix read from a
/// file whose entry has another size than its tensor's rows (the token embedding excepted), and
/// a tensor planned in a 1–3-bit lattice type without importance data for it; then what it
/// would abort on: a tensor (even the token embedding) planned in a type whose quantizer needs
/// importance weights ([`mix::needs_weights`]) with none for it.
pub fn check_imatrix(
    f: &GgufFile,
    opts: &QuantizeOptions,
    choices: &[Option<Choice>],
) -> Result<()> {
    for (t, c) in f.header.tensors.iter().zip(choices) {
        let Some(c) = c else { continue };
        let from_file = opts.imatrix.as_ref().filter(|m| m.file.is_some());
        let entry = from_file.and_then(|m| m.entries.get(&t.name));
        if let (Some(m), Some(e)) = (from_file, entry) {
            check_entry(m, t, e)?;
        }
        if mix::requires_imatrix(&t.name, c.ty) {
            match (&opts.imatrix, from_file, entry) {
                (None, _, _) => {
                    return Err(Error::BadOptions(format!(
                        "{} as {} needs an importance matrix (--imatrix FILE or --calib TEXT): \
                         llama.cpp refuses the 1–3-bit lattice types without one",
                        t.name,
                        c.ty.name()
                    )))
                }
                (_, Some(m), None) => {
                    return Err(Error::BadOptions(format!(
                        "--imatrix {}: no entry for {}, which {} needs",
                        m.source,
                        t.name,
                        c.ty.name()
                    )))
                }
                _ => {}
            }
        }
    }
    // After every tensor has passed llama.cpp's own check, as its refusal names the first
    // tensor that needs an importance matrix.
    for (t, c) in f.header.tensors.iter().zip(choices) {
        let Some(c) = c else { continue };
        // An importance matrix with no entries yet is the block-wise methods': they measure
        // their own, for every tensor calibration reaches (`weights_for` refuses the rest when
        // it is reached, should this rule and the calibration ever disagree).
        let has_weights = opts.imatrix.as_ref().is_some_and(|m| {
            if m.entries.is_empty() {
                calibration::measures(f, &t.name)
            } else {
                imatrix_row(opts, t).is_some()
            }
        });
        if mix::needs_weights(c.ty) && !has_weights {
            return Err(no_weights(opts, t, c.ty));
        }
    }
    Ok(())
}

fn no_weights(opts: &QuantizeOptions, t: &TensorInfo, ty: GgmlType) -> Error {
    Error::BadOptions(format!(
        "{} as {} needs importance weights and {}: its quantizer cannot work without them \
         (llama-quantize aborts here); give it another type with --tensor-type",
        t.name,
        ty.name(),
        match &opts.imatrix {
            None => "no importance matrix was given".to_string(),
            Some(m) if m.entries.is_empty() => {
                "calibration never reaches it (a lookup, not a product)".to_string()
            }
            Some(m) => format!("{} has no entry for it of its size", m.source),
        }
    ))
}

/// Tensor `t`'s importance weights for rounding it as `ty`: refused (not a panic in the
/// quantizer) when the type cannot work without them and there are none.
fn weights_for<'a>(
    opts: &'a QuantizeOptions,
    t: &TensorInfo,
    ty: GgmlType,
) -> Result<Option<&'a [f32]>> {
    match imatrix_row(opts, t) {
        None if mix::needs_weights(ty) => Err(no_weights(opts, t, ty)),
        qw => Ok(qw),
    }
}

/// The plan after the size budget (`--target-bpw`) or the `best` fallback, if asked for.
pub fn final_types(f: &GgufFile, opts: &QuantizeOptions) -> Result<Vec<Option<Choice>>> {
    let choices = final_types_unchecked(f, opts)?;
    if let Some((t, c)) = f
        .header
        .tensors
        .iter()
        .zip(&choices)
        .find_map(|(t, c)| c.filter(|c| codec(c.ty).is_none()).map(|c| (t, c)))
    {
        return Err(Error::BadOptions(format!(
            "{} would be {} under {}'s rules, a type Frugal does not write yet",
            t.name,
            c.ty.name(),
            opts.target.name
        )));
    }
    check_imatrix(f, opts, &choices)?;
    Ok(choices)
}

fn final_types_unchecked(f: &GgufFile, opts: &QuantizeOptions) -> Result<Vec<Option<Choice>>> {
    let mut choices = plan_types(f, opts);
    let quantized = codec(opts.target.base).is_some_and(|c| c.quantized());
    if !quantized {
        return Ok(choices);
    }
    if let Some(bpw) = opts.target_bpw {
        let plan = BudgetPlan::measure(f, opts, &|_, _| {})?;
        let (least, most) = plan.budget_range();
        if bpw < least {
            return Err(Error::BadOptions(format!(
                "--target-bpw {bpw} cannot be reached: the smallest types give {least:.3} bits \
                 per weight over the file's tensors (at most {most:.3})"
            )));
        }
        return Ok(plan.choices(bpw));
    } else if opts.fallback == Fallback::Best {
        let members: Vec<usize> = (0..choices.len())
            .filter(|&i| choices[i].is_some_and(|c| c.reason == Reason::Fallback))
            .collect();
        let budget: u64 = members
            .iter()
            .map(|&i| {
                let t = &f.header.tensors[i];
                choices[i]
                    .unwrap()
                    .ty
                    .bytes_for(t.n_elements())
                    .unwrap_or(0)
            })
            .sum();
        alloc::assign(
            f,
            opts,
            &members,
            budget,
            alloc::Candidates::Narrow,
            &mut choices,
        )?;
    }
    Ok(choices)
}

/// The fixed part of a budget search (`--target-bpw`, `frugal tune`): the plan, and for every
/// quantized tensor not overridden its measured (cost, error) options — measured once, after
/// which any budget is assigned without measuring again. The cost is a tensor's bytes, the
/// budget bits per weight of the whole file's tensors (as `frugal inspect` and llama.cpp count
/// them: the tensors outside the budget — norms kept as stored, overrides, rows no quantized
/// type tiles — are paid first); after [`BudgetPlan::priced`] the cost is the price given per
/// tensor and type (such as a kernel's nanoseconds), the budget that price summed.
pub struct BudgetPlan {
    choices: Vec<Option<Choice>>,
    options: Vec<alloc::Options>,
    /// Elements of every tensor of the file (the bits per weight are over all of them).
    pub n_elements: u64,
    /// Cost of the tensors outside the budget: their bytes, or 0 when priced.
    fixed_cost: u64,
    /// Cost units per budget unit: bytes per bit per weight (elements / 8), or 1 when priced.
    cost_per_unit: f64,
}

impl BudgetPlan {
    /// Plans `f` for `opts` (its target decides which tensors are quantized) and measures every
    /// candidate type of each budget tensor (weighted by `opts.imatrix` when there is one).
    /// `progress(done, total)` per tensor.
    pub fn measure(
        f: &GgufFile,
        opts: &QuantizeOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<BudgetPlan> {
        BudgetPlan::measure_among(f, opts, alloc::Candidates::All, progress)
    }

    /// [`BudgetPlan::measure`] with the candidate types `which`.
    pub fn measure_among(
        f: &GgufFile,
        opts: &QuantizeOptions,
        which: alloc::Candidates,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<BudgetPlan> {
        let choices = plan_types(f, opts);
        if codec(opts.target.base).is_none_or(|c| !c.quantized()) {
            return Err(Error::BadOptions(format!(
                "a size budget needs a quantized target, not {}",
                opts.target.name
            )));
        }
        let members: Vec<usize> = (0..choices.len())
            .filter(|&i| choices[i].is_some_and(|c| c.reason != Reason::Override))
            .collect();
        let measured_rounding = opts
            .imatrix
            .as_ref()
            .is_some_and(|m| !m.rounding.is_empty());
        let which = match which {
            alloc::Candidates::All if measured_rounding => alloc::Candidates::WithFloat,
            w => w,
        };
        let mut options = Vec::with_capacity(members.len());
        for (k, &i) in members.iter().enumerate() {
            let o = alloc::measure(f, opts, i, which)?;
            // A tensor no quantized type tiles keeps its planned type, outside the budget.
            if o.points
                .iter()
                .any(|p| codec(p.0).is_some_and(|c| c.quantized()))
            {
                options.push(o);
            }
            progress(k + 1, members.len());
        }
        let n_elements = f.header.tensors.iter().map(|t| t.n_elements()).sum::<u64>();
        let mut in_budget = vec![false; f.header.tensors.len()];
        options.iter().for_each(|o| in_budget[o.index] = true);
        let fixed_cost = f
            .header
            .tensors
            .iter()
            .zip(&choices)
            .zip(&in_budget)
            .filter(|(_, &b)| !b)
            .map(|((t, c), _)| {
                let ty = c.map_or(t.ggml_type, |c| c.ty);
                ty.bytes_for(t.n_elements()).unwrap_or(0)
            })
            .sum();
        Ok(BudgetPlan {
            choices,
            options,
            n_elements,
            fixed_cost,
            cost_per_unit: n_elements as f64 / 8.0,
        })
    }

    /// The budget's tensors, each with its candidate types (tensor index in the file, types).
    pub fn candidates(&self) -> Vec<(usize, Vec<GgmlType>)> {
        self.options
            .iter()
            .map(|o| (o.index, o.points.iter().map(|p| p.0).collect()))
            .collect()
    }

    /// The same plan with every option's cost replaced by `price(tensor index, type)` (an
    /// option without a price is dropped; a tensor left with none is an error); budgets are
    /// then in price units.
    pub fn priced(mut self, price: &dyn Fn(usize, GgmlType) -> Option<u64>) -> Result<BudgetPlan> {
        for o in &mut self.options {
            let index = o.index;
            let points: Vec<_> = o
                .points
                .iter()
                .filter_map(|&(ty, _, err)| price(index, ty).map(|c| (ty, c, err)))
                .collect();
            if points.is_empty() {
                return Err(Error::BadOptions(format!(
                    "tensor {index}: no candidate type has a price"
                )));
            }
            o.points = points;
            o.points.sort_by_key(|p| p.1);
        }
        self.cost_per_unit = 1.0;
        self.fixed_cost = 0;
        Ok(self)
    }

    /// What `budget` leaves for the budget's tensors, in cost units.
    fn cost(&self, budget: f64) -> u64 {
        ((budget * self.cost_per_unit) as u64).saturating_sub(self.fixed_cost)
    }

    /// The least and the most budget the file can take (bits per weight, or price).
    pub fn budget_range(&self) -> (f64, f64) {
        let sum = |pick: fn(&alloc::Options) -> u64| -> f64 {
            (self.options.iter().map(pick).sum::<u64>() + self.fixed_cost) as f64
                / self.cost_per_unit
        };
        (
            sum(|o| o.points.iter().map(|p| p.1).min().unwrap_or(0)),
            sum(|o| o.points.iter().map(|p| p.1).max().unwrap_or(0)),
        )
    }

    /// The budget the assignment for `budget` actually uses (at most `budget`, less where more
    /// cost would buy no less error).
    pub fn used_budget(&self, budget: f64) -> f64 {
        let cost: u64 = self
            .options
            .iter()
            .zip(alloc::choose(&self.options, self.cost(budget)))
            .map(|(o, ty)| o.points.iter().find(|p| p.0 == ty).map_or(0, |p| p.1))
            .sum();
        (cost + self.fixed_cost) as f64 / self.cost_per_unit
    }

    /// The plan with the budget's tensors assigned within `budget`.
    pub fn choices(&self, budget: f64) -> Vec<Option<Choice>> {
        let mut choices = self.choices.clone();
        for (o, ty) in self
            .options
            .iter()
            .zip(alloc::choose(&self.options, self.cost(budget)))
        {
            choices[o.index] = Some(Choice {
                ty,
                reason: Reason::Budget,
            });
        }
        choices
    }
}

/// Writes `f` quantized to `choices` (from [`BudgetPlan::choices`] or [`final_types`]) by
/// rounding, importance-weighted when `opts` carries an importance matrix.
pub fn write_planned(
    f: &GgufFile,
    output: &Path,
    opts: &QuantizeOptions,
    choices: &[Option<Choice>],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<QuantizeReport> {
    let name = if opts.imatrix.is_some() {
        "rtn+imatrix"
    } else {
        "rtn"
    };
    write_quantized(
        f,
        output,
        opts,
        choices,
        &spill::ProducedStore::new_in(&spill_dir(output)),
        name,
        std::time::Instant::now(),
        progress,
    )
}

/// Relative RMS error, and the importance-weighted relative error when `qw` is given; rows in
/// parallel, decoding through the codec table (checked against candle's decoder in the tests).
fn errors(
    x: &[f32],
    q: &[u8],
    ty: GgmlType,
    ncols: usize,
    qw: Option<&[f32]>,
) -> Result<(f64, Option<f64>)> {
    Ok(error_sums_par(x, q, ty, ncols, qw)?.finish(qw.is_some()))
}

/// Σ(x − x̂)², Σx² and their importance-weighted forms, rows in parallel.
pub(crate) fn error_sums_par(
    x: &[f32],
    q: &[u8],
    ty: GgmlType,
    ncols: usize,
    qw: Option<&[f32]>,
) -> Result<ErrSums> {
    let c = codec(ty).ok_or_else(|| Error::Unsupported(ty.name()))?;
    let row_bytes = ncols / c.block * c.block_bytes;
    let nrows = x.len() / ncols.max(1);
    // Added in row order, as in `quantize_matrix_measured`.
    let rows: Vec<ErrSums> = x
        .par_chunks(ncols)
        .zip(q.par_chunks(row_bytes))
        .enumerate()
        .map_init(
            || vec![0f32; ncols],
            |back, (i, (xr, qr))| {
                c.decode_row(qr, back);
                error_sums(xr, back, ncols, row_weights(qw, ncols, nrows, i))
            },
        )
        .collect();
    Ok(rows.into_iter().fold(ErrSums::default(), ErrSums::add))
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ErrSums {
    pub num: f64,
    pub den: f64,
    pub wnum: f64,
    pub wden: f64,
}

impl ErrSums {
    fn add(a: ErrSums, b: ErrSums) -> ErrSums {
        ErrSums {
            num: a.num + b.num,
            den: a.den + b.den,
            wnum: a.wnum + b.wnum,
            wden: a.wden + b.wden,
        }
    }
    fn finish(self, weighted: bool) -> (f64, Option<f64>) {
        let rel = if self.den > 0.0 {
            (self.num / self.den).sqrt()
        } else {
            0.0
        };
        let w = if self.wden > 0.0 {
            self.wnum / self.wden
        } else {
            0.0
        };
        (rel, weighted.then_some(w))
    }
}

frugal_models::avx2_dispatch! {
    /// Σ(x − x̂)², Σx² and, with importance `qw` (per column; `x` is whole rows of `ncols`),
    /// their weighted forms. Each run of up to 256 values of a row is summed in f32 over 8 lanes
    /// (so the loop vectorises), the runs in f64.
    fn error_sums(x: &[f32], back: &[f32], ncols: usize, qw: Option<&[f32]>) -> ErrSums {
        const RUN: usize = 256;
        let mut s = ErrSums::default();
        let f = |a: [f32; 8]| a.iter().map(|&v| f64::from(v)).sum::<f64>();
        for (xr, br) in x.chunks(ncols.max(1)).zip(back.chunks(ncols.max(1))) {
            for (r, (xs, bs)) in xr.chunks(RUN).zip(br.chunks(RUN)).enumerate() {
                let (mut e, mut v) = ([0f32; 8], [0f32; 8]);
                for (i, (&a, &b)) in xs.iter().zip(bs).enumerate() {
                    let d = a - b;
                    e[i % 8] += d * d;
                    v[i % 8] += a * a;
                }
                s.num += f(e);
                s.den += f(v);
                if let Some(w) = qw {
                    let (mut we, mut wv) = ([0f32; 8], [0f32; 8]);
                    for (i, ((&a, &b), &w)) in xs.iter().zip(bs).zip(&w[r * RUN..]).enumerate() {
                        let d = a - b;
                        we[i % 8] += w * d * d;
                        wv[i % 8] += w * a * a;
                    }
                    s.wnum += f(we);
                    s.wden += f(wv);
                }
            }
        }
        s
    }
}

/// Decodes `n` values of type `ty` with candle (an implementation independent of ours), or
/// for the IQ4 types, which candle does not read, with `frugal_models::iq` (ggml's decoding).
pub fn decode(q: &[u8], ty: GgmlType, n: usize) -> Result<Vec<f32>> {
    if frugal_models::iq::decodes(ty) {
        let mut v = vec![0f32; n];
        frugal_models::iq::decode_row(ty, q, &mut v).ok_or(Error::Unsupported(ty.name()))?;
        return Ok(v);
    }
    let shape = vec![n];
    let dtype =
        frugal_models::gguf_load::candle_dtype(ty).ok_or_else(|| Error::Unsupported(ty.name()))?;
    let dev = candle_core::Device::Cpu;
    let back: Vec<f32> =
        candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, q, shape, &dev)?
            .dequantize(&dev)?
            .to_vec1()?;
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_formats::gguf::{write_gguf_file, TensorToWrite, Value};
    use frugal_formats::rng::SplitMix64;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| r.next_f64() as f32 - 0.5).collect()
    }

    /// A one-block model of the given F32 tensors, and an importance matrix file of the given
    /// entries (read back, as `--imatrix FILE` reads it).
    fn model_and_imatrix(
        dir: &Path,
        tensors: &[(&str, &[u64])],
        entries: &[(&str, Vec<f32>)],
    ) -> (std::path::PathBuf, Imatrix) {
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .enumerate()
            .map(|(i, (_, dims))| {
                let n = dims.iter().product::<u64>() as usize;
                values(n, i as u64)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let specs: Vec<TensorToWrite> = tensors
            .iter()
            .zip(&data)
            .map(|((name, dims), data)| TensorToWrite {
                name,
                ggml_type: GgmlType::F32,
                dims,
                data,
            })
            .collect();
        let model = dir.join("model.gguf");
        let metadata = [
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(1)),
        ];
        write_gguf_file(&model, &[], &metadata, &specs).unwrap();
        let m = Imatrix {
            entries: entries
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            n_tokens: 100,
            source: "imatrix.gguf".into(),
            file: None,
            rounding: HashMap::new(),
            gains: HashMap::new(),
        };
        let path = dir.join("imatrix.gguf");
        imatrix_file::write_imatrix(&path, &[], &m, &["t".into()], 1, 100).unwrap();
        (model, imatrix_file::read_imatrix(&path).unwrap())
    }

    fn pure_with(m: Imatrix, overrides: &[&str]) -> QuantizeOptions {
        let mut opts = QuantizeOptions::new(quant_type("Q8_0").unwrap());
        opts.pure = true;
        opts.imatrix = Some(m);
        opts.overrides = overrides.iter().map(|o| o.parse().unwrap()).collect();
        opts
    }

    /// A type whose quantizer cannot work without importance weights is refused, not left to
    /// panic, wherever the file's entry cannot weight the tensor: no entry (`output.weight`,
    /// which llama.cpp's lattice rule exempts), or one of another size (the token embedding,
    /// which the size check exempts). Nothing is written.
    #[test]
    fn weights_an_entry_cannot_give_are_refused_before_work() {
        let dir = tempfile::tempdir().unwrap();
        let (model, m) = model_and_imatrix(
            dir.path(),
            &[
                ("token_embd.weight", &[256, 4]),
                ("blk.0.ffn_down.weight", &[256, 4]),
                ("output.weight", &[256, 4]),
            ],
            &[
                ("token_embd.weight", vec![1.0; 128]),
                ("blk.0.ffn_down.weight", vec![1.0; 256]),
            ],
        );
        let out = dir.path().join("out.gguf");
        for (over, names) in [
            ("output\\.weight=IQ2_XXS", "output.weight as IQ2_XXS"),
            ("token_embd\\.weight=IQ1_S", "token_embd.weight as IQ1_S"),
        ] {
            let opts = pure_with(m.clone(), &[over]);
            let e = quantize_gguf(&model, &out, &opts, &|_, _| {})
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(names) && e.contains("needs importance weights"),
                "{e}"
            );
            assert!(!out.exists());
        }
        // The entry that fits weights the same type.
        let opts = pure_with(m, &["ffn_down\\.weight=IQ2_XXS"]);
        quantize_gguf(&model, &out, &opts, &|_, _| {}).unwrap();
    }

    /// Under the block-wise methods (no entries until their own calibration), a type that needs
    /// weights is refused before any work for a token embedding calibration never reaches, and
    /// allowed where the embedding is also the output layer (tied), whose input it measures.
    #[test]
    fn block_wise_weights_are_checked_by_what_calibration_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let empty = |opts: &mut QuantizeOptions| opts.imatrix.as_mut().unwrap().entries.clear();
        for (untied, refused) in [(true, true), (false, false)] {
            let mut tensors: Vec<(&str, &[u64])> = vec![
                ("token_embd.weight", &[256, 4]),
                ("blk.0.ffn_down.weight", &[256, 4]),
            ];
            if untied {
                tensors.push(("output.weight", &[256, 4]));
            }
            let sub = dir.path().join(format!("{untied}"));
            std::fs::create_dir(&sub).unwrap();
            let (model, m) = model_and_imatrix(&sub, &tensors, &[("x", vec![1.0])]);
            let mut opts = pure_with(m, &["token_embd\\.weight=IQ2_XXS"]);
            empty(&mut opts);
            let f = GgufFile::open(&model).unwrap();
            let r = final_types(&f, &opts);
            assert_eq!(r.is_err(), refused, "untied {untied}: {r:?}");
            if let Err(e) = r {
                assert!(
                    e.to_string().contains("calibration never reaches it"),
                    "{e}"
                );
            }
        }
    }

    /// A 3-D tensor's entry of `ne0 · ne2` values weights each expert's rows by its own row, as
    /// llama-quantize slices it: the bytes are each expert's quantized alone with its weights.
    #[test]
    fn experts_are_weighted_by_their_own_rows() {
        let dir = tempfile::tempdir().unwrap();
        let name = "blk.0.ffn_down_exps.weight";
        let mut w = values(3 * 256, 99);
        w.iter_mut().for_each(|v| *v = (*v + 0.5) * 10.0);
        let (model, m) =
            model_and_imatrix(dir.path(), &[(name, &[256, 2, 3])], &[(name, w.clone())]);
        let out = dir.path().join("out.gguf");
        for ty in ["IQ2_XXS", "Q4_K"] {
            let opts = pure_with(m.clone(), &[&format!("exps={ty}")]);
            quantize_gguf(&model, &out, &opts, &|_, _| {}).unwrap();
            let q = GgufFile::open(&out).unwrap();
            let got = q.tensor_data(q.tensor(name).unwrap()).to_vec();
            let f = GgufFile::open(&model).unwrap();
            let x = tensor_f32(&f, f.tensor(name).unwrap()).unwrap();
            let t = GgmlType::from_name(ty).unwrap();
            let per_expert: Vec<u8> = (0..3)
                .flat_map(|e| {
                    let qw = m.entries[name][256 * e..256 * (e + 1)].to_vec();
                    quantize_matrix(&x[512 * e..512 * (e + 1)], 256, t, Some(&qw))
                })
                .collect();
            assert_eq!(got, per_expert, "{ty}");
            // Weighting every expert by the first's row gives other bytes: the slices matter.
            let first = quantize_matrix(&x, 256, t, Some(&m.entries[name][..256]));
            assert_ne!(got, first, "{ty}");
        }
    }
}
