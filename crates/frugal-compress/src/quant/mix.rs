//! Which block format each tensor gets: llama.cpp's named mixes (`Q4_K_M`, …) with their
//! per-tensor rules (`llama_tensor_get_type` in `src/llama-quant.cpp`, written here for the
//! dense decoder architectures Frugal loads), user overrides, and what to do with rows that a
//! 256-wide k-quant cannot tile.

use frugal_formats::gguf::GgmlType;

/// What a tensor is, for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    Output,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    AttnQkv,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    pub fn of(name: &str) -> Category {
        let has = |s: &str| name.contains(s);
        match name {
            "output.weight" => Category::Output,
            "token_embd.weight" => Category::TokenEmbd,
            _ if has("attn_qkv.weight") => Category::AttnQkv,
            _ if has("attn_v.weight") => Category::AttnV,
            _ if has("attn_k.weight") => Category::AttnK,
            _ if has("attn_q.weight") => Category::AttnQ,
            _ if has("attn_output.weight") => Category::AttnOutput,
            _ if has("ffn_up") => Category::FfnUp,
            _ if has("ffn_gate") => Category::FfnGate,
            _ if has("ffn_down") => Category::FfnDown,
            _ => Category::Other,
        }
    }
}

/// The model-wide facts the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts {
    pub n_layer: usize,
    /// Heads per key/value head.
    pub n_gqa: usize,
    /// True when the output layer reuses the token embedding.
    pub tied_embeddings: bool,
    /// Number of attention-value tensors.
    pub n_attn_v: usize,
    pub has_imatrix: bool,
}

/// One tensor, for the rules.
#[derive(Debug, Clone, Copy)]
pub struct TensorFacts<'a> {
    pub name: &'a str,
    pub category: Category,
    /// Layer index (`blk.N.`), if any.
    pub layer: Option<usize>,
    /// Row width (ggml's ne0).
    pub ncols: u64,
}

/// Whether llama.cpp quantizes a tensor at all (2-D or more, a weight, not a norm).
pub fn is_quantizable(name: &str, n_dims: usize) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// Layer index of `blk.N.…`.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
}

/// llama.cpp's `llama_ftype` numbers (`general.file_type`): the one table `QUANT_TYPES` and
/// the mix rules share.
pub mod ftype {
    pub const ALL_F32: u32 = 0;
    pub const MOSTLY_F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q8_0: u32 = 7;
    pub const Q5_0: u32 = 8;
    pub const Q5_1: u32 = 9;
    pub const Q2_K: u32 = 10;
    pub const Q3_K_S: u32 = 11;
    pub const Q3_K_M: u32 = 12;
    pub const Q3_K_L: u32 = 13;
    pub const Q4_K_S: u32 = 14;
    pub const Q4_K_M: u32 = 15;
    pub const Q5_K_S: u32 = 16;
    pub const Q5_K_M: u32 = 17;
    pub const Q6_K: u32 = 18;
    pub const IQ2_XXS: u32 = 19;
    pub const IQ2_XS: u32 = 20;
    pub const IQ3_XS: u32 = 22;
    pub const IQ3_XXS: u32 = 23;
    pub const IQ1_S: u32 = 24;
    pub const IQ4_NL: u32 = 25;
    pub const IQ3_S: u32 = 26;
    pub const IQ3_M: u32 = 27;
    pub const IQ2_S: u32 = 28;
    pub const IQ2_M: u32 = 29;
    pub const IQ4_XS: u32 = 30;
    pub const IQ1_M: u32 = 31;
    pub const TQ1_0: u32 = 36;
    pub const TQ2_0: u32 = 37;
}

/// llama.cpp's type for one tensor under the mix `ftype` (a `llama_ftype` number) whose default
/// type is `default`, before the shape fallback: `llama_tensor_get_type_impl` in
/// `src/llama-quant.cpp` for dense models (one expert, not Falcon, not the 70B special case).
/// `i_attn_v` is the tensor's rank among the attention-value tensors in write order; the
/// feed-forward tensors' rank is their layer.
pub fn llama_rule(
    ftype: u32,
    default: GgmlType,
    t: &TensorFacts,
    m: &ModelFacts,
    i_attn_v: usize,
) -> GgmlType {
    use ftype::*;
    use Category::*;
    use GgmlType as G;
    let (i, n) = (t.layer.unwrap_or(0), m.n_layer);
    let gqa4 = m.n_gqa >= 4;
    let iq2_s_m = matches!(ftype, IQ2_S | IQ2_M);
    let iq_low = matches!(ftype, IQ2_XXS | IQ2_XS | IQ1_S | IQ2_S | IQ2_M | IQ1_M);
    match t.category {
        Output | TokenEmbd if t.category == Output || m.tied_embeddings => {
            let qk = default.info().map_or(1, |i| i.block_size);
            if !t.ncols.is_multiple_of(qk) {
                G::Q8_0
            } else if matches!(
                ftype,
                IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ2_S | IQ2_M | IQ1_M
            ) {
                G::Q5_K
            } else if default != G::Q8_0 {
                G::Q6_K
            } else {
                default
            }
        }
        TokenEmbd => match ftype {
            IQ2_XXS | IQ2_XS | IQ1_S | IQ1_M => G::Q2_K,
            IQ2_S | IQ2_M | IQ3_XXS => G::IQ3_S,
            TQ1_0 | TQ2_0 => G::Q4_K,
            _ => default,
        },
        _ if iq_low => match t.category {
            AttnV | AttnQkv if gqa4 => G::Q4_K,
            AttnV | AttnQkv if iq2_s_m => G::IQ3_S,
            AttnV | AttnQkv => G::Q2_K,
            FfnDown if i < n / 8 && iq2_s_m => G::IQ3_S,
            FfnDown if i < n / 8 => G::Q2_K,
            AttnOutput if matches!(ftype, IQ1_S | IQ1_M) => G::IQ2_XXS,
            AttnOutput if iq2_s_m => G::IQ3_S,
            _ => default,
        },
        AttnV | AttnQkv => match ftype {
            Q2_K if gqa4 => G::Q4_K,
            Q2_K => G::Q3_K,
            IQ3_XXS if gqa4 => G::Q4_K,
            IQ3_XXS if !m.has_imatrix => G::IQ3_S,
            IQ3_XXS => G::IQ3_XXS,
            IQ3_XS | IQ3_S if gqa4 => G::Q4_K,
            IQ3_M => G::Q4_K,
            Q3_K_M if i_attn_v < 2 => G::Q5_K,
            Q3_K_M => G::Q4_K,
            Q3_K_L => G::Q5_K,
            IQ4_NL | IQ4_XS if gqa4 => G::Q5_K,
            Q4_K_M | Q5_K_M if use_more_bits(i_attn_v, m.n_attn_v) => G::Q6_K,
            Q4_K_S if i_attn_v < 4 => G::Q5_K,
            _ => default,
        },
        AttnK | AttnQ => match ftype {
            IQ3_XS => G::IQ3_XXS,
            IQ3_XXS => G::IQ2_S,
            _ => default,
        },
        FfnDown => match ftype {
            Q2_K => G::Q3_K,
            IQ3_XXS if !m.has_imatrix && i < n / 8 => G::Q4_K,
            IQ3_XXS if !m.has_imatrix => G::Q3_K,
            Q3_K_M if i < n / 16 => G::Q5_K,
            Q3_K_M => G::Q4_K,
            IQ3_M if i < n / 8 => G::Q4_K,
            Q3_K_L => G::Q5_K,
            Q4_K_M if use_more_bits(i, n) => G::Q6_K,
            Q4_K_M => default,
            IQ4_NL | IQ4_XS if i < n / 8 && !m.has_imatrix => G::Q5_K,
            Q5_K_M if use_more_bits(i, n) => G::Q6_K,
            Q4_K_S if i < n / 8 => G::Q5_K,
            Q4_0 if m.has_imatrix && i < n / 8 => G::Q4_1,
            Q5_0 if m.has_imatrix && i < n / 8 => G::Q5_1,
            _ => default,
        },
        AttnOutput => match ftype {
            Q2_K => G::Q3_K,
            IQ3_XXS => G::IQ3_S,
            Q3_K_M | IQ3_M => G::Q4_K,
            Q3_K_L => G::Q5_K,
            _ => default,
        },
        FfnGate | FfnUp if ftype == IQ3_XS && i >= n / 8 && i < 7 * n / 8 => G::IQ3_XXS,
        _ => default,
    }
}

/// Whether llama.cpp refuses to write `ty` for tensor `name` without an importance matrix
/// (`tensor_requires_imatrix`: the 1–3-bit lattice types, except for the token embedding and
/// the output).
pub fn requires_imatrix(name: &str, ty: GgmlType) -> bool {
    use GgmlType as G;
    !matches!(
        name,
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) && matches!(
        ty,
        G::IQ3_XXS | G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ1_M | G::IQ1_S
    )
}

/// Whether the type's quantizer cannot work without importance weights at all (llama.cpp's
/// `quantize_row_iq2_xxs_impl`, `_iq2_xs_impl` and `_iq1_s_impl` assert them, for every
/// tensor, the token embedding and the output included, which [`requires_imatrix`] exempts).
pub fn needs_weights(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ1_S)
}

/// llama.cpp's fallback for rows a type cannot tile: a 32-wide type of about the same size.
pub fn llama_fallback(t: GgmlType, ncols: u64) -> GgmlType {
    use GgmlType as G;
    let fits = |t: GgmlType| t.info().is_some_and(|i| ncols.is_multiple_of(i.block_size));
    if fits(t) {
        return t;
    }
    let f = match t {
        G::IQ1_S
        | G::IQ1_M
        | G::IQ2_XXS
        | G::IQ2_XS
        | G::IQ2_S
        | G::IQ3_XXS
        | G::IQ3_S
        | G::IQ4_XS => G::IQ4_NL,
        G::Q2_K | G::Q3_K | G::TQ1_0 | G::TQ2_0 => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        other => other,
    };
    if fits(f) {
        f
    } else {
        G::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_for_30_layers() {
        // n/8 = 3: layers 0–2, 27–29 and every third from 5.
        let got: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(got, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn categories_and_layers() {
        assert_eq!(Category::of("blk.3.attn_v.weight"), Category::AttnV);
        assert_eq!(Category::of("blk.3.ffn_down.weight"), Category::FfnDown);
        assert_eq!(Category::of("token_embd.weight"), Category::TokenEmbd);
        assert_eq!(layer_of("blk.12.ffn_up.weight"), Some(12));
        assert_eq!(layer_of("output.weight"), None);
        assert!(!is_quantizable("blk.0.attn_norm.weight", 2));
        assert!(!is_quantizable("blk.0.attn_q.weight", 1));
        assert_eq!(llama_fallback(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(llama_fallback(GgmlType::Q4_K, 1536), GgmlType::Q4_K);
        assert_eq!(llama_fallback(GgmlType::Q4_0, 100), GgmlType::F16);
    }
}
